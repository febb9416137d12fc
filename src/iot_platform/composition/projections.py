"""The event log's readers: the projection runner that keeps the read models, and, with Kafka,
the outbox relay to the domain-events topic and the feed that can replace the store as the
projections' source."""

from __future__ import annotations

from dataclasses import dataclass

from iot_platform.application.outbox import OutboxRelay
from iot_platform.composition.adapters import Adapters
from iot_platform.config import Settings
from iot_platform.infrastructure.projections.kafka_feed import KafkaProjectionFeed
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.readmodels.alerts import AlertRulesProjection, AlertsProjection
from iot_platform.infrastructure.readmodels.device_commands import DeviceCommandsProjection
from iot_platform.infrastructure.readmodels.device_registry import DeviceRegistryProjection
from iot_platform.infrastructure.streaming.kafka_events import KafkaDomainEventPublisher


@dataclass
class EventFlow:
    projections: ProjectionRunner
    relay: OutboxRelay | None = None
    """With streaming.backend kafka: the outbox to the domain-events topic."""
    event_publisher: KafkaDomainEventPublisher | None = None
    event_feed: KafkaProjectionFeed | None = None
    """With streaming.projections_source kafka: what feeds the projections."""


def projections_from(settings: Settings, adapters: Adapters) -> ProjectionRunner:
    es, store = settings.eventstore, adapters.event_store
    runner = ProjectionRunner(
        adapters.engine,
        store,
        [DeviceRegistryProjection(), AlertRulesProjection(), AlertsProjection(), DeviceCommandsProjection()],
        batch_size=es.projection_batch_size,
        poll_interval=es.projection_poll_interval_seconds,
        retry_interval=es.projection_retry_seconds,
    )
    store.on_append(runner.wake)
    observed = adapters.metrics.observed
    observed.gauges("iot_projection_stalled", "1 while a projection is stopped before an event it cannot apply",
                    "projection", lambda: {n: float(n in runner.stalls) for n in runner.names})
    observed.counter("iot_projection_failures", "Failed attempts to apply an event, by projection",
                     "projection", lambda: {n: float(runner.failures[n]) for n in runner.names})
    return runner


def event_flow_from(settings: Settings, adapters: Adapters, runner: ProjectionRunner) -> EventFlow:
    streaming, store = settings.streaming, adapters.event_store
    flow = EventFlow(runner)
    if streaming.backend == "kafka":
        publisher = KafkaDomainEventPublisher(streaming.brokers, streaming.topics.domain_events, adapters.serializer)
        relay = OutboxRelay(store, publisher, batch_size=settings.eventstore.projection_batch_size)
        store.on_append(relay.wake)
        adapters.metrics.observed.counter("iot_outbox_relayed", "Domain events published to Kafka and marked",
                                          "topic", lambda: {streaming.topics.domain_events: relay.relayed})
        flow.relay, flow.event_publisher = relay, publisher
    if streaming.projections_source == "kafka":
        flow.event_feed = KafkaProjectionFeed(streaming.brokers, streaming.topics.domain_events,
                                              f"{streaming.consumer_group}-projections", runner, adapters.serializer)
    return flow
