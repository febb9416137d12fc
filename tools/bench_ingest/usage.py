"""Memory and CPU from /proc: the platform's RSS sampled through a phase and CPU per process."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process, in kB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return 0.0


def system_cpu() -> tuple[float, float]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.label = "start"
        self.peaks: dict[str, int] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            rss = proc_status(self.pid, "VmRSS")
            if rss:
                self.peaks[self.label] = max(self.peaks.get(self.label, 0), rss)
            time.sleep(0.05)

    def now(self) -> int:
        return proc_status(self.pid, "VmRSS")


@dataclass
class CpuWindow:
    """CPU seconds of the platform and the broker, and the machine's busy share, over a phase."""

    platform_pid: int | None
    broker_pid: int | None
    t0: float = 0.0
    p0: float = 0.0
    b0: float = 0.0
    me0: float = 0.0
    s0: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        self.t0, self.p0, self.b0 = time.monotonic(), proc_cpu(self.platform_pid), proc_cpu(self.broker_pid)
        self.me0 = sum(os.times()[:2])
        self.s0 = system_cpu()

    def stop(self) -> dict[str, float]:
        """Shares of one core, except ``machine`` (share of all cores busy)."""
        wall = time.monotonic() - self.t0
        busy, total = system_cpu()
        return {
            "wall": wall,
            "platform": (proc_cpu(self.platform_pid) - self.p0) / wall if self.platform_pid else 0.0,
            "broker": (proc_cpu(self.broker_pid) - self.b0) / wall if self.broker_pid else 0.0,
            "bench": (sum(os.times()[:2]) - self.me0) / wall,
            "machine": (busy - self.s0[0]) / max(1.0, total - self.s0[1]),
        }


def others(usage: dict[str, float], *known: float) -> float:
    """Cores used by processes outside this benchmark (other people's tests, ...)."""
    cores = os.cpu_count() or 1
    return max(0.0, usage["machine"] * cores - usage["platform"] - usage["broker"] - usage["bench"] - sum(known))
