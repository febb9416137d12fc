"""Prometheus metrics of one platform process, in their own registry (served at /metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iot_platform.application.telemetry.model import Rejection


class PlatformMetrics:
    """Also the ``IngestionMetrics`` port of the ingestion use case."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.readings_accepted = Counter(
            "iot_readings_accepted", "Readings accepted", ["protocol"], registry=r
        )
        self.readings_rejected = Counter(
            "iot_readings_rejected", "Readings rejected", ["protocol", "reason"], registry=r
        )
        self.readings_throttled = Counter(
            "iot_readings_throttled", "Readings refused because their device was over its budget",
            ["protocol"], registry=r,
        )
        self.readings_duplicate = Counter(
            "iot_readings_duplicate", "Readings dropped as duplicates", ["protocol"], registry=r
        )
        self.sink_batch_seconds = Histogram(
            "iot_sink_batch_seconds", "Time to write one batch to a telemetry sink", ["sink"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.sink_readings = Counter(
            "iot_sink_readings", "Readings written by a telemetry sink", ["sink"], registry=r
        )
        self.sink_poison = Counter(
            "iot_sink_poison", "Readings a sink failed on alone, set aside (dead-lettered on Kafka)",
            ["sink"], registry=r,
        )
        self.sink_errors = Counter(
            "iot_sink_errors", "Failed batch writes of a telemetry sink", ["sink"], registry=r
        )
        self.sink_retries = Counter(
            "iot_sink_retries", "Retried batch writes of a telemetry sink", ["sink"], registry=r
        )
        self.stream_queue_depth = Gauge(
            "iot_stream_queue_depth", "Readings waiting for a telemetry sink", ["sink"], registry=r
        )
        self.readings_dead_lettered = Counter(
            "iot_readings_dead_lettered",
            "Readings the time-series store refused for good (logged, not stored)",
            ["device_type"],
            registry=r,
        )
        self.mqtt_messages = Counter(
            "iot_mqtt_messages", "MQTT messages received by the platform", ["kind"], registry=r
        )
        self.mqtt_reconnects = Counter(
            "iot_mqtt_reconnects", "Reconnections to the MQTT broker", registry=r
        )
        self.mqtt_message_failures = Counter(
            "iot_mqtt_message_failures",
            "MQTT messages dropped because handling them raised an error of their own",
            ["stage", "error"], registry=r,
        )
        self.mqtt_consumer_restarts = Counter(
            "iot_mqtt_consumer_restarts",
            "Restarts of the MQTT consumer task after it ended unexpectedly", ["reason"], registry=r,
        )
        self.http_requests = Counter(
            "iot_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "iot_http_request_seconds", "HTTP request latency", ["method", "route"], registry=r
        )
        self.lorawan_frames = Counter(
            "iot_lorawan_frames", "LoRaWAN frames handled by the network server, by outcome",
            ["outcome"], registry=r,
        )
        self.lorawan_packets = Counter(
            "iot_lorawan_gateway_packets", "GWMP packets from gateways, by kind", ["kind"], registry=r
        )
        self.coap_unparsable = Counter(
            "iot_coap_unparsable", "UDP datagrams on the CoAP port that are no CoAP message (dropped)",
            registry=r,
        )
        self.gwmp_rejected = Counter(
            "iot_gwmp_rejected", "GWMP datagrams refused or failed, by reason", ["reason"], registry=r
        )
        self.observed = Observed()
        r.register(self.observed)

    # -- IngestionMetrics ------------------------------------------------------------------
    def accepted(self, protocol: str, count: int) -> None:
        self.readings_accepted.labels(protocol).inc(count)

    def rejected(self, protocol: str, reason: Rejection, count: int = 1) -> None:
        self.readings_rejected.labels(protocol, reason.value).inc(count)
        if reason is Rejection.THROTTLED:
            self.readings_throttled.labels(protocol).inc(count)

    def duplicates(self, protocol: str, count: int) -> None:
        self.readings_duplicate.labels(protocol).inc(count)


class Observed(Collector):
    """Figures that components already count, read when /metrics is scraped.

    The rule engine and the live feed live in the application layer and keep plain counters;
    reading them at scrape time keeps Prometheus out of their hot paths.
    """

    def __init__(self) -> None:
        self._gauges: list[tuple[str, str, Callable[[], float]]] = []
        self._counters: list[tuple[str, str, str, Callable[[], Mapping[str, float]]]] = []
        self._labelled: list[tuple[str, str, str, Callable[[], Mapping[str, float]]]] = []

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._gauges.append((name, documentation, read))

    def gauges(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, float]]
    ) -> None:
        """A gauge per value of ``label``, as ``read`` answers them."""
        self._labelled.append((name, documentation, label, read))

    def counter(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, float]]
    ) -> None:
        """``read`` answers the counter's value per value of ``label``."""
        self._counters.append((name, documentation, label, read))

    def collect(self) -> Iterator[Metric]:
        for name, documentation, read in self._gauges:
            yield GaugeMetricFamily(name, documentation, value=read())
        for name, documentation, label, read_each in self._labelled:
            gauges = GaugeMetricFamily(name, documentation, labels=[label])
            for value, level in read_each().items():
                gauges.add_metric([value], level)
            yield gauges
        for name, documentation, label, read_all in self._counters:
            family = CounterMetricFamily(name, documentation, labels=[label])
            for value, count in read_all().items():
                family.add_metric([value], count)
            yield family
