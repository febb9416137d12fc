"""The simulated devices of one run and the broker they publish to."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Fleet:
    run: str
    devices: list[str]
    probes: list[str]
    host: str
    port: int
    alert_probes: list[str] = field(default_factory=list)

    @property
    def topic_prefix(self) -> str:
        return f"devices/b{self.run}-"
