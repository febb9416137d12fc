"""Runs ``iot-platform serve`` as a real process on a free loopback port, as a user would.

The harness itself is ``tools.harness``, shared with the benchmarks so that both start, probe
and stop the platform the same way; this module is the tests' name for it."""

from tools.harness import (
    ADMIN_KEY,
    BIN,
    RunningPlatform,
    external_mqtt_env,
    free_port,
    free_udp_port,
    platform_env,
    running_platform,
    start_worker,
    wait_until_ready,
)

__all__ = [
    "ADMIN_KEY",
    "BIN",
    "RunningPlatform",
    "external_mqtt_env",
    "free_port",
    "free_udp_port",
    "platform_env",
    "running_platform",
    "start_worker",
    "wait_until_ready",
]
