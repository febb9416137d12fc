"""Alerting: rule and alert handlers, the rule engine that judges readings, and the channels
that tell people (the live feed, webhooks, MQTT, Kafka)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from iot_platform.application.alerts.engine import RuleEngine
from iot_platform.application.alerts.handlers import AlertHandler, RuleHandler
from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.application.alerts.ports import AlertChannel
from iot_platform.application.realtime import LiveFeed
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.composition.adapters import Adapters
from iot_platform.config import Settings
from iot_platform.domain.alerts import Alert, AlertRule
from iot_platform.infrastructure.clock import EpochClock
from iot_platform.infrastructure.mqtt.publisher import MqttPublisher
from iot_platform.infrastructure.notifications.kafka import KafkaAlertChannel
from iot_platform.infrastructure.notifications.mqtt import MqttAlertChannel
from iot_platform.infrastructure.notifications.queued import QueuedChannel
from iot_platform.infrastructure.notifications.webhook import WebhookChannel
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.readmodels.alerts import SqlAlertReadModel
from iot_platform.infrastructure.readmodels.device_directory import CachedDeviceDirectory

log = logging.getLogger(__name__)


@dataclass
class Alerting:
    rules: RuleHandler
    alerts: AlertHandler
    read_model: SqlAlertReadModel
    engine: RuleEngine
    outbound: list[QueuedChannel[Any]]
    """The channels that leave the process (webhook, MQTT, Kafka), started and stopped here."""
    channels: list[AlertChannel]

    def notify(self, notice: AlertNotice) -> None:
        """Tells every channel; each decides from the rule whether the notice is for it."""
        rule = self.engine.definition(notice.rule_id)
        for channel in self.channels:
            try:
                channel.send(notice, rule)
            except Exception:  # one broken channel must not silence the others
                log.exception("alert channel %s failed", type(channel).__name__)


def alerting_from(
    settings: Settings,
    adapters: Adapters,
    runner: ProjectionRunner,
    directory: CachedDeviceDirectory,
    feed: LiveFeed,
    publisher: MqttPublisher | None,
) -> Alerting:
    analytics, timeout = settings.analytics, settings.api.read_your_writes_timeout_seconds
    store = adapters.event_store
    rules = RuleHandler(
        EventSourcedRepository(store, AlertRule, settings.eventstore.snapshot_every),
        read_model=runner,
        read_your_writes_timeout=timeout,
    )
    alerts = AlertHandler(
        EventSourcedRepository(store, Alert, 0),
        read_model=runner,
        read_your_writes_timeout=timeout,
    )
    read_model = SqlAlertReadModel(adapters.engine)
    rule_engine = RuleEngine(alerts, read_model, directory, EpochClock(), max_states=analytics.max_rule_states)
    webhook = WebhookChannel(
        timeout=analytics.webhook_timeout_seconds,
        attempts=analytics.webhook_attempts,
        backoff_initial=analytics.webhook_backoff_initial_seconds,
        backoff_max=analytics.webhook_backoff_max_seconds,
        queue_size=analytics.webhook_queue_size,
    )
    outbound: list[QueuedChannel[Any]] = [webhook]
    if publisher is not None:
        outbound.append(MqttAlertChannel(
            publisher,
            attempts=analytics.webhook_attempts,
            backoff_initial=analytics.webhook_backoff_initial_seconds,
            backoff_max=analytics.webhook_backoff_max_seconds,
            queue_size=analytics.webhook_queue_size,
        ))
    streaming = settings.streaming
    if streaming.backend == "kafka":
        outbound.append(KafkaAlertChannel(streaming.brokers, streaming.topics.alerts, analytics.webhook_queue_size))
    alerting = Alerting(rules, alerts, read_model, rule_engine, outbound, [feed, *outbound])
    rules.listeners.append(rule_engine.rule_changed)
    alerts.listeners.append(rule_engine.alert_changed)
    alerts.listeners.append(alerting.notify)
    _observe(adapters.metrics, alerting, feed)
    return alerting


def _observe(metrics: PlatformMetrics, alerting: Alerting, feed: LiveFeed) -> None:
    observed, engine = metrics.observed, alerting.engine
    observed.counter("iot_rule_evaluations", "Readings judged against a matching rule", "engine",
                     lambda: {"rules": engine.evaluations})
    observed.gauge("iot_alerts_open", "Open alerts known to this process's rule engine",
                   lambda: engine.open_alerts)
    observed.gauge("iot_rule_states", "(rule, device) evaluation states held in memory",
                   lambda: engine.states)
    observed.gauge("iot_live_subscribers", "SSE and WebSocket clients connected", lambda: feed.subscribers)
    observed.counter("iot_live_clients_dropped", "Live clients dropped for falling behind", "feed",
                     lambda: {"live": feed.dropped})
    for channel in alerting.outbound:
        observed.counter(f"iot_alert_notices_{channel.name}",
                         f"Alert notices sent on the {channel.name} channel, by outcome", "outcome",
                         channel.outcomes)

