"""What the benchmark measures against: the figures it reads, its targets and its pacing."""

from __future__ import annotations

METRICS_PER_READING = 5


STORED = 'iot_sink_readings_total{sink="storage"}'


RECEIVED = 'iot_mqtt_messages_total{kind="telemetry"}'


TARGET_RATIO = 0.5


TARGET_RATE = 10_000


TARGET_RSS_MB = 300


TARGET_RULES_COST = 0.30


CHUNK = 64  # messages encoded and written per socket write


POLL_METRICS = 0.1


PROBE_INTERVAL = 0.1  # seconds between probes of one probe device


PROBE_POLL = 0.05  # seconds between GETs of one probe device


PROBE_GIVE_UP = 120.0


ALERT_INTERVAL = 0.2  # seconds from one alert probe device's clearing reading to its next alert


ALERT_GIVE_UP = 30.0  # seconds after the phase for the last raised notices to arrive


IDLE_GIVE_UP = 30.0  # seconds without progress (after publishing ended) before a phase gives up


ALERT_THRESHOLD = 500.0  # the alert probes' rule: temperature > this; the load never comes near
