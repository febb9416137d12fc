"""What is told about an alert when it changes, on every channel (SSE, WebSocket, webhook, MQTT)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AlertNotice:
    kind: str
    """raised | acknowledged | resolved"""
    alert_id: str
    rule_id: str
    rule_name: str
    device_id: str
    metric: str
    severity: str
    status: str
    value: float | None
    message: str
    at: datetime
    by: str
    note: str | None = None
    automatic: bool = False

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data
