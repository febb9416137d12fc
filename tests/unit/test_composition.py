"""The composition root over fakes: ``build_platform`` takes its adapters as a parameter, so
the wiring of use cases is checked without a broker, a time-series server or an event store
on disk, and the runtime's stop order is checked job by job."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from iot_platform.application.devices.commands import RegisterDevice
from iot_platform.application.telemetry.model import (
    AggregateQuery,
    Bucket,
    RawQuery,
    Reading,
    StoredReading,
    TagQuery,
)
from iot_platform.composition import Adapters, Platform, build_platform
from iot_platform.composition.runtime import Job
from iot_platform.config import Settings
from iot_platform.infrastructure.eventstore.memory import InMemoryEventStore
from iot_platform.infrastructure.eventstore.serialization import build_event_serializer
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.infrastructure.persistence.database import create_engine
from iot_platform.infrastructure.secrets import SecretBox
from iot_platform.infrastructure.streaming.inprocess import InProcessTelemetryStream

pytestmark = pytest.mark.asyncio


class NoTimeSeries:
    """A time-series store that keeps nothing and remembers being closed."""

    closed = False

    async def write(self, readings: Sequence[Reading]) -> None:
        return None

    async def query(self, query: RawQuery) -> list[StoredReading]:
        return []

    async def aggregate(self, query: AggregateQuery) -> list[Bucket]:
        return []

    async def search_by_tag(self, query: TagQuery) -> list[StoredReading]:
        return []

    async def maintain(self, now_ns: int) -> None:
        return None

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


def _settings(tmp_path: Path) -> Settings:
    pki = tmp_path / "pki"
    return Settings(
        eventstore={"url": f"sqlite+aiosqlite:///{tmp_path / 'readmodels.db'}"},
        mqtt={"enabled": False, "embedded_broker": False},
        coap={"enabled": False},
        lorawan={"enabled": False},
        api={"read_your_writes_timeout_seconds": 0.01},
        security={"ca_cert_path": str(pki / "ca.crt"), "ca_key_path": str(pki / "ca.key"),
                  "crl_path": str(pki / "crl.pem"), "encryption_key_file": str(tmp_path / "key")},
    )


def _platform(tmp_path: Path, announced: list[str]) -> tuple[Platform, NoTimeSeries]:
    settings = _settings(tmp_path)
    metrics, timeseries = PlatformMetrics(), NoTimeSeries()
    adapters = Adapters(
        engine=create_engine(settings.eventstore.url),
        serializer=build_event_serializer(),
        event_store=InMemoryEventStore(),
        timeseries=timeseries,
        secrets=SecretBox(bytes(32)),
        metrics=metrics,
        stream=InProcessTelemetryStream(metrics),
        announce=announced.append,
    )
    return build_platform(settings, adapters), timeseries


async def test_a_device_registered_through_the_wired_platform_is_read_back_from_its_registry(
    tmp_path: Path,
) -> None:
    platform, _ = _platform(tmp_path, [])
    await platform.start(serve=False)  # migrations only
    try:
        await platform.devices.register(RegisterDevice("pump-1", "pump", name="Pump 1"))
        await platform.projections.catch_up()
        device = await platform.registry.get("pump-1")
        assert device is not None
        assert (device.device_type, device.name) == ("pump", "Pump 1")
    finally:
        await platform.stop()


async def test_the_first_start_announces_one_admin_key_and_makes_the_device_ca(tmp_path: Path) -> None:
    announced: list[str] = []
    platform, _ = _platform(tmp_path, announced)
    await platform.start(roles=())
    try:
        assert len(announced) == 1 and announced[0].startswith("Admin API key: iotk_")
        assert platform.pki.exists()
        principal = await platform.access.authenticate(announced[0].removeprefix("Admin API key: "))
        assert principal is not None and "admin" in principal.roles
    finally:
        await platform.stop()


async def test_an_imported_ca_that_is_missing_stops_the_first_start_naming_the_setting(tmp_path: Path) -> None:
    platform, _ = _platform(tmp_path, [])
    platform.settings = platform.settings.model_copy(update={"security": platform.settings.security.model_copy(
        update={"certificate_authority": "imported"})})
    try:
        with pytest.raises(RuntimeError, match="security.certificate_authority is imported but no CA"):
            await platform.start(roles=())
    finally:
        await platform.stop()


async def test_stop_ends_the_mqtt_consumer_then_command_expiry_then_the_rest_in_start_order(
    tmp_path: Path,
) -> None:
    platform, timeseries = _platform(tmp_path, [])
    await platform.start(serve=False)
    ended: list[Job] = []

    async def job(name: Job) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(name)

    started = [Job.PROJECTIONS, Job.TIMESERIES_MAINTENANCE, Job.COMMAND_EXPIRY, Job.MQTT_INGESTION,
               Job.CERTIFICATE_RENEWALS]
    for name in started:
        platform.runtime.spawn(name, job(name))
    await asyncio.sleep(0)  # every job is running

    await platform.stop()

    assert ended == [Job.MQTT_INGESTION, Job.COMMAND_EXPIRY, Job.PROJECTIONS, Job.TIMESERIES_MAINTENANCE,
                     Job.CERTIFICATE_RENEWALS]
    assert platform.runtime.tasks == {}
    assert timeseries.closed


async def test_a_job_runs_once_per_role(tmp_path: Path) -> None:
    platform, _ = _platform(tmp_path, [])
    platform.runtime.spawn(Job.COMMAND_EXPIRY, asyncio.Event().wait())  # type: ignore[arg-type]
    try:
        with pytest.raises(RuntimeError, match="command-expiry is already running"):
            platform.runtime.spawn(Job.COMMAND_EXPIRY, asyncio.Event().wait())  # type: ignore[arg-type]
    finally:
        await platform.stop()
