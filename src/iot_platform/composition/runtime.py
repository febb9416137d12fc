"""Running the platform: what starts in which order, the periodic jobs and stream consumers,
and a stop that loses nothing (stop taking messages, drain what was taken, close the stores).

Background work is kept by its ``Job``, so stopping one part first is a lookup, never a search
by a task's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from iot_platform.application.devices.authority import ensure_authority
from iot_platform.composition.broker import device_of, issue_service_certificates
from iot_platform.config import WORKER_ROLES
from iot_platform.infrastructure.persistence import migrate
from iot_platform.infrastructure.streaming.kafka_telemetry import KafkaSinkConsumer, KafkaTelemetryStream

if TYPE_CHECKING:
    from iot_platform.composition.platform import Platform

log = logging.getLogger(__name__)


class Job(StrEnum):
    """The platform's background tasks; the value is the asyncio task's name (for debugging)."""

    PROJECTIONS = "projections"
    OUTBOX_RELAY = "outbox-relay"
    RULES_REFRESH = "rules-refresh"
    NO_DATA_SWEEP = "no-data-sweep"
    SINK_STORAGE = "sink-storage"
    SINK_STATE = "sink-state"
    SINK_RULES = "sink-rules"
    SINK_LIVE = "sink-live"
    TIMESERIES_MAINTENANCE = "timeseries-maintenance"
    COMMAND_EXPIRY = "command-expiry"
    CERTIFICATE_RENEWALS = "certificate-renewals"
    MQTT_INGESTION = "mqtt-ingestion"

    @classmethod
    def sink(cls, role: str) -> Job:
        return cls(f"sink-{role}")


class Runtime:
    """The running tasks, by job, in the order they were started."""

    def __init__(self) -> None:
        self.tasks: dict[Job, asyncio.Task[None]] = {}
        self.serving = False
        """Whether ``start`` went past migrations (the stream and the broker were started)."""

    def spawn(self, job: Job, work: Coroutine[Any, Any, None]) -> None:
        if job in self.tasks:
            work.close()
            raise RuntimeError(f"{job} is already running")
        self.tasks[job] = asyncio.create_task(work, name=job.value)

    async def cancel(self, job: Job) -> None:
        task = self.tasks.pop(job, None)
        if task is not None:
            await _cancel(task)

    async def cancel_all(self) -> None:
        """What is still running, in the order it was started."""
        for job in list(self.tasks):
            await self.cancel(job)


async def start(platform: Platform, *, serve: bool = True, roles: Collection[str] = WORKER_ROLES,
                front: bool = True) -> None:
    """Migrates; with ``serve``, also runs the ``roles`` and, with ``front``, what faces
    devices and people: MQTT ingestion, the embedded broker, command delivery, live feeds.

    ``projections`` keeps the read models (from the store, or the domain-events topic);
    ``relay`` publishes the outbox; ``storage``, ``state`` and ``rules`` are the telemetry
    stream's consumers (on Kafka, each its own consumer group; in process, always all).
    """
    settings, runtime = platform.settings, platform.runtime
    if settings.eventstore.migrate_on_start:
        await migrate.upgrade(platform.engine)
    if not serve:
        return
    if front:  # the processes that serve REST; a worker has no API, keys or certificates
        await first_run(platform)
    runtime.serving = True
    if "projections" in roles:
        if platform.event_feed is not None:
            runtime.spawn(Job.PROJECTIONS, platform.event_feed.run())
        else:
            await platform.projections.catch_up()
            runtime.spawn(Job.PROJECTIONS, platform.projections.run())
    if "relay" in roles and platform.relay is not None:
        runtime.spawn(Job.OUTBOX_RELAY, platform.relay.run())
    alerting = platform.alerting
    await alerting.engine.load()
    for channel in alerting.outbound:
        await channel.start()
    analytics = settings.analytics
    if "rules" in roles:
        runtime.spawn(Job.RULES_REFRESH, every(analytics.rules_refresh_seconds, alerting.engine.refresh))
        runtime.spawn(Job.NO_DATA_SWEEP, every(analytics.no_data_check_seconds, alerting.engine.sweep))
    telemetry = platform.telemetry
    await telemetry.stream.start()
    if isinstance(telemetry.stream, KafkaTelemetryStream):
        _consume(platform, roles, front)
    if "storage" in roles:
        runtime.spawn(Job.TIMESERIES_MAINTENANCE, _maintain(platform))
    if not front:
        return
    if telemetry.coap is not None:  # first: a taken port stops start-up before anything else
        telemetry.coap.authenticate = platform.access.authenticate  # ?token=: the keys of HTTP
        await telemetry.coap.start()
    if platform.lorawan.listener is not None:
        await platform.lorawan.listener.start()
    if telemetry.broker is not None:
        telemetry.broker.access.device_for = device_of(platform.access)  # REST-issued device credentials
        await telemetry.broker.start()
    if platform.commands.publisher is not None:
        await platform.commands.publisher.start()
    runtime.spawn(Job.COMMAND_EXPIRY, platform.commands.sweeper.run())
    runtime.spawn(Job.CERTIFICATE_RENEWALS, every(3600, platform.certificates.retire_superseded))
    if telemetry.mqtt is not None:
        runtime.spawn(Job.MQTT_INGESTION, supervised(
            "MQTT consumer", telemetry.mqtt.run, platform.metrics.mqtt_consumer_restarts.labels,
            settings.mqtt.reconnect_initial_seconds, settings.mqtt.reconnect_max_seconds))
    log.info("platform started (event store: %s, time series: %s)",
             platform.engine.url.get_backend_name(), settings.timeseries.backend)


async def first_run(platform: Platform) -> None:
    """What a serving process makes sure of before it takes requests: an admin key (made and
    shown once on the first start), the device CA and its CRL, and, under mutual TLS, the
    broker's and the platform's own certificates."""
    security = platform.settings.security
    await platform.access.ensure_admin(security.admin_api_key.get_secret_value(), platform.announce)
    await ensure_authority(platform.pki, imported=security.certificate_authority == "imported",
                           cert_path=security.ca_cert_path)
    if platform.broker_tls is not None:
        issue_service_certificates(platform.pki, platform.broker_tls, platform.settings.mqtt.host)


async def stop(platform: Platform) -> None:
    """First stop taking messages (MQTT, CoAP, LoRaWAN), then, with no more acknowledgements
    coming in, stop sending (command expiry, the command publisher) before the broker goes;
    drain the telemetry stream, end the remaining jobs in start order, then close the
    outbound channels, producers and stores."""
    runtime, telemetry = platform.runtime, platform.telemetry
    await runtime.cancel(Job.MQTT_INGESTION)
    if telemetry.coap is not None:
        await telemetry.coap.stop()
    if platform.lorawan.listener is not None:
        await platform.lorawan.listener.stop()
    await runtime.cancel(Job.COMMAND_EXPIRY)
    if platform.commands.publisher is not None:
        await platform.commands.publisher.stop()
    if runtime.serving:
        await telemetry.stream.stop()
        if telemetry.broker is not None:
            await telemetry.broker.stop()
    await runtime.cancel_all()
    if runtime.serving:
        for channel in platform.alerting.outbound:
            await channel.stop()
    if platform.event_publisher is not None:
        await platform.event_publisher.close()
    if platform.commands.kafka is not None:
        await platform.commands.kafka.close()
    if telemetry.dead_letters is not None:
        await telemetry.dead_letters.close()
    await telemetry.store.close()
    await platform.engine.dispose()


def _consume(platform: Platform, roles: Collection[str], front: bool) -> None:
    """One Kafka consumer per sink whose role runs here; the live feed follows every
    partition from now on, outside any group, in each process that serves clients."""
    streaming, telemetry = platform.settings.streaming, platform.telemetry
    assert telemetry.dead_letters is not None
    for role, sink, options in telemetry.sinks:
        live = role == "live"
        if not (front if live else role in roles):
            continue
        consumer = KafkaSinkConsumer(
            streaming.brokers, streaming.topics.sensor_data,
            None if live else f"{streaming.consumer_group}-{role}",
            sink, options, telemetry.dead_letters, platform.metrics,
            max_attempts=streaming.max_attempts, letters_undecodable=role == "storage",
        )
        platform.runtime.spawn(Job.sink(role), consumer.run())


async def _maintain(platform: Platform) -> None:
    interval = platform.settings.timeseries.maintain_interval_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await platform.telemetry.store.maintain(time.time_ns())
        except Exception:  # the next round tries again; rollups are recomputed, not summed
            log.exception("time-series maintenance failed")


async def every(seconds: float, work: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception:  # the next round tries again
            log.exception("periodic %s failed", getattr(work, "__name__", work))


async def supervised(
    name: str, work: Callable[[], Awaitable[None]], restarts: Callable[[str], Any],
    initial: float, longest: float,
) -> None:
    """Runs ``work`` for good: if it ends or dies (it should not: it catches what it can),
    it is logged once with the reason, counted under that reason, and restarted after an
    exponential back-off (reset once a run has lasted a minute)."""
    delay = initial
    while True:
        started = time.monotonic()
        try:
            await work()
            reason = "returned"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = type(exc).__name__
            log.error("%s died (%s: %s); restarting in %.1fs", name, reason, str(exc)[:200], delay)
        else:
            log.error("%s ended unexpectedly; restarting in %.1fs", name, delay)
        restarts(reason).inc()
        if time.monotonic() - started > 60:
            delay = initial
        await asyncio.sleep(delay)
        delay = min(delay * 2, longest)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
