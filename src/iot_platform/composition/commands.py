"""Commands to devices: the handler, their delivery over MQTT (and the commands topic on Kafka),
the status readers and the expiry sweeper."""

from __future__ import annotations

from dataclasses import dataclass

from iot_platform.application.commands.changes import CommandChanges
from iot_platform.application.commands.delivery import CommandDelivery
from iot_platform.application.commands.expiry import ExpirySweeper
from iot_platform.application.commands.handlers import CommandHandler, CommandLimits
from iot_platform.application.commands.ports import CommandPublisher
from iot_platform.application.commands.queries import CommandStatusReader
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.composition.adapters import Adapters
from iot_platform.config import Settings
from iot_platform.domain.commands import DeviceCommand
from iot_platform.domain.devices import Device
from iot_platform.infrastructure.clock import SystemClock
from iot_platform.infrastructure.mqtt.command_channel import MqttCommandChannel
from iot_platform.infrastructure.mqtt.publisher import MqttPublisher
from iot_platform.infrastructure.mqtt.tls import ServiceIdentity, tls_parameters
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.readmodels.device_commands import SqlCommandQueries
from iot_platform.infrastructure.streaming.kafka_commands import EveryChannel, KafkaCommandChannel


@dataclass
class Commands:
    handler: CommandHandler
    delivery: CommandDelivery
    status: CommandStatusReader
    queries: SqlCommandQueries
    sweeper: ExpirySweeper
    publisher: MqttPublisher | None
    kafka: KafkaCommandChannel | None = None
    """With streaming.backend kafka: every pushed command also goes to the commands topic."""


def commands_from(
    settings: Settings, adapters: Adapters, runner: ProjectionRunner, identity: ServiceIdentity | None,
) -> Commands:
    s, mqtt, store = settings.commands, settings.mqtt, adapters.event_store
    clock = SystemClock()
    changes = CommandChanges()
    queries = SqlCommandQueries(adapters.engine)
    handler = CommandHandler(
        EventSourcedRepository(store, DeviceCommand, settings.eventstore.snapshot_every),
        EventSourcedRepository(store, Device, settings.eventstore.snapshot_every),
        queries,
        clock,
        CommandLimits(s.default_ttl_seconds, s.max_ttl_seconds),
        read_model=runner,
        changes=changes,
        read_your_writes_timeout=settings.api.read_your_writes_timeout_seconds,
    )
    publisher = None
    if mqtt.enabled:
        publisher = MqttPublisher(
            mqtt.host,
            mqtt.port,
            client_id=f"{mqtt.client_id}-commands",
            mqtt5=mqtt.mqtt5,
            username=mqtt.username or None,
            password=mqtt.password.get_secret_value() or None,
            keep_alive=mqtt.keep_alive,
            timeout=s.publish_timeout_seconds,
            tls=tls_parameters(mqtt, identity),
            reconnect_initial=mqtt.reconnect_initial_seconds,
            reconnect_max=mqtt.reconnect_max_seconds,
        )
    channel: CommandPublisher | None = None
    if publisher is not None:
        channel = MqttCommandChannel(publisher, mqtt.qos_level)
    kafka_channel = None
    if settings.streaming.backend == "kafka":
        kafka_channel = KafkaCommandChannel(settings.streaming.brokers, settings.streaming.topics.commands)
        channel = kafka_channel if channel is None else EveryChannel([kafka_channel, channel])
    return Commands(
        handler=handler,
        delivery=CommandDelivery(handler, queries, clock, channel, changes, s.wait_poll_interval_seconds),
        status=CommandStatusReader(queries, changes, s.wait_poll_interval_seconds),
        queries=queries,
        sweeper=ExpirySweeper(handler, s.expiry_sweep_interval_seconds),
        publisher=publisher,
        kafka=kafka_channel,
    )
