"""The adapters the platform stands on, built from settings: the one place that chooses between
backends (SQLite or PostgreSQL, SQLite or InfluxDB, Kafka or in process).

``build_platform`` takes an ``Adapters`` so tests can give it fakes; the fields are typed by the
application's ports wherever the application has one. The engine and the secret box stay
concrete: the SQL read models and key stores built over them are the composition's business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.ports import PlatformEventStore
from iot_platform.application.telemetry.ports import TimeSeriesStore
from iot_platform.config import Settings
from iot_platform.infrastructure.eventstore.serialization import EventSerializer, build_event_serializer
from iot_platform.infrastructure.eventstore.sqlalchemy_store import SqlAlchemyEventStore
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.infrastructure.persistence.database import create_engine
from iot_platform.infrastructure.secrets import SecretBox
from iot_platform.infrastructure.streaming.inprocess import InProcessTelemetryStream
from iot_platform.infrastructure.streaming.kafka_telemetry import KafkaDeadLetters, KafkaTelemetryStream
from iot_platform.infrastructure.timeseries.sqlite import SqliteTimeSeriesStore


def _now() -> datetime:
    return datetime.now(UTC)


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass
class Adapters:
    engine: AsyncEngine
    """The database of the read models, projection checkpoints, keys, users and certificates."""
    serializer: EventSerializer
    event_store: PlatformEventStore
    timeseries: TimeSeriesStore
    secrets: SecretBox
    """Derives every key the platform keeps (broker login, service keys, token signing)."""
    metrics: PlatformMetrics
    stream: InProcessTelemetryStream | KafkaTelemetryStream
    dead_letters: KafkaDeadLetters | None = None
    """With streaming.backend kafka: where refused readings and messages go."""
    clock: Callable[[], datetime] = _now
    """The wall clock of tokens, keys, certificates and claims."""
    announce: Callable[[str], None] = field(default=_print)
    """Where the first start's admin API key is shown (stdout: ``make run`` prints it)."""


def adapters_from(settings: Settings) -> Adapters:
    """The real adapters the settings name."""
    engine = create_engine(settings.eventstore.url, settings.eventstore.pool_size)
    serializer = build_event_serializer()
    security, streaming = settings.security, settings.streaming
    metrics = PlatformMetrics()
    stream: InProcessTelemetryStream | KafkaTelemetryStream
    dead_letters = None
    if streaming.backend == "kafka":
        stream = KafkaTelemetryStream(streaming.brokers, streaming.topics.sensor_data)
        dead_letters = KafkaDeadLetters(streaming.brokers, streaming.topics.dead_letter)
    else:
        stream = InProcessTelemetryStream(metrics)
    return Adapters(
        engine=engine,
        serializer=serializer,
        event_store=SqlAlchemyEventStore(engine, serializer),
        timeseries=timeseries_store(settings),
        secrets=SecretBox.from_config(security.encryption_key.get_secret_value(), security.encryption_key_file),
        metrics=metrics,
        stream=stream,
        dead_letters=dead_letters,
    )


def timeseries_store(settings: Settings) -> TimeSeriesStore:
    ts = settings.timeseries
    if ts.backend == "influxdb":
        # Imported here: the InfluxDB client costs a second of every start on the embedded store.
        from iot_platform.infrastructure.timeseries.influx import InfluxTimeSeriesStore

        return InfluxTimeSeriesStore(
            url=ts.url,
            token=ts.token.get_secret_value(),
            org=ts.org,
            bucket=ts.bucket,
            retention_days=ts.retention_days,
            rollup_retention_days=ts.rollup_retention_days,
        )
    database = Path(make_url(ts.url).database or "timeseries.db")
    database.parent.mkdir(parents=True, exist_ok=True)
    return SqliteTimeSeriesStore(
        database,
        retention_days=ts.retention_days,
        rollup_retention_days=ts.rollup_retention_days,
    )
