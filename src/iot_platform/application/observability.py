"""What the device-facing servers and the HTTP layer count, as ports.

The servers count messages by kind, reconnects and failures; the composition root hands them
the Prometheus registry's counters, and tests hand them anything with ``inc``/``labels``. Only
the shape of a counter is named here, so neither side imports the metrics library's types.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from iot_platform.application.telemetry.ports import IngestionMetrics

_Child = TypeVar("_Child", covariant=True)


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class Labelled(Protocol[_Child]):
    """A metric family: one child per combination of label values."""

    def labels(self, *labelvalues: str) -> _Child: ...


class MqttMetrics(Protocol):
    """What the MQTT subscriber counts."""

    @property
    def mqtt_reconnects(self) -> Counter: ...

    @property
    def mqtt_messages(self) -> Labelled[Counter]: ...

    @property
    def mqtt_message_failures(self) -> Labelled[Counter]: ...


class GatewayMetrics(Protocol):
    """What the LoRaWAN gateways' UDP endpoint counts."""

    @property
    def lorawan_packets(self) -> Labelled[Counter]: ...

    @property
    def gwmp_rejected(self) -> Labelled[Counter]: ...


class HttpMetrics(IngestionMetrics, Protocol):
    """Requests and their latency per route, and request bodies refused before a router."""

    @property
    def http_requests(self) -> Labelled[Counter]: ...

    @property
    def http_latency(self) -> Labelled[Histogram]: ...
