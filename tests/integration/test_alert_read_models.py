"""Rules and alerts through the real event store and projections, on every backend; and the
webhook channel against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.alerts.commands import (
    AcknowledgeAlert,
    ChangeRule,
    CreateRule,
    DeleteRule,
)
from iot_platform.application.alerts.engine import RuleEngine
from iot_platform.application.alerts.handlers import AlertHandler, RuleHandler
from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.application.alerts.views import AlertSearch
from iot_platform.application.devices.commands import RegisterDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.application.telemetry.model import NS_PER_SECOND, Reading
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.alerts import (
    Alert,
    AlertRule,
    AlertStatus,
    Channel,
    Condition,
    DeviceSelector,
    Operator,
    RuleDefinition,
    Severity,
)
from iot_platform.domain.devices import Device
from iot_platform.infrastructure.eventstore.serialization import build_event_serializer
from iot_platform.infrastructure.eventstore.sqlalchemy_store import SqlAlchemyEventStore
from iot_platform.infrastructure.notifications.webhook import WebhookChannel
from iot_platform.infrastructure.persistence.schema import rm_alert_rules, rm_alerts
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.readmodels.alerts import (
    AlertRulesProjection,
    AlertsProjection,
    SqlAlertReadModel,
)
from iot_platform.infrastructure.readmodels.device_directory import CachedDeviceDirectory
from iot_platform.infrastructure.readmodels.device_registry import DeviceRegistryProjection
from iot_platform.infrastructure.readmodels.device_state import SqlDeviceState

pytestmark = pytest.mark.asyncio

T0 = 1_800_000_000.0
HOT = RuleDefinition(
    "hot lobby", DeviceSelector("sensor-*", tags={"site": "lobby"}),
    Condition("temperature", Operator.GT, 30.0), severity=Severity.CRITICAL,
)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> float:
        return self.t


class World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.store = SqlAlchemyEventStore(engine, build_event_serializer())
        self.runner = ProjectionRunner(
            engine, self.store,
            [DeviceRegistryProjection(), AlertRulesProjection(), AlertsProjection()], batch_size=3,
        )
        self.devices = DeviceCommandHandler(EventSourcedRepository(self.store, Device, 0))
        self.rules = RuleHandler(EventSourcedRepository(self.store, AlertRule, 2))
        self.alerts = AlertHandler(EventSourcedRepository(self.store, Alert, 0))
        self.read_model = SqlAlertReadModel(engine)
        self.clock = Clock()
        self.engine_ = self.new_engine()

    def new_engine(self) -> RuleEngine:
        engine = RuleEngine(self.alerts, self.read_model, CachedDeviceDirectory(self.engine, 0), self.clock)
        self.rules.listeners.append(engine.rule_changed)
        self.alerts.listeners.append(engine.alert_changed)
        return engine

    async def send(self, device_id: str, at: float, **metrics: float) -> None:
        await self.engine_.handle([Reading(device_id, int(at * NS_PER_SECOND), metrics, device_type="th")])
        await self.runner.catch_up()


@pytest_asyncio.fixture
async def world(engine: AsyncEngine) -> World:
    world = World(engine)
    for device_id, site in (("sensor-1", "lobby"), ("sensor-2", "lobby"), ("sensor-3", "roof")):
        await world.devices.register(RegisterDevice(device_id, "th", tags={"site": site}))
    await world.runner.catch_up()
    return world


async def test_rules_are_stored_changed_and_deleted_in_the_read_model(world: World) -> None:
    await world.rules.create(CreateRule("r1", HOT))
    await world.runner.catch_up()
    await world.rules.change(ChangeRule("r1", {"threshold": 40.0, "notification_channels": ["sse", "webhook"],
                                               "webhook_url": "http://127.0.0.1:9/hook"}))
    await world.runner.catch_up()
    view = await world.read_model.rule("r1")
    assert view is not None and view.version == 2
    assert view.definition == replace(
        HOT, condition=replace(HOT.condition, threshold=40.0),
        channels=(Channel.SSE, Channel.WEBHOOK), webhook_url="http://127.0.0.1:9/hook",
    )
    await world.rules.change(ChangeRule("r1", {"enabled": False}))
    await world.runner.catch_up()
    assert [r.rule_id for r in await world.read_model.rules()] == ["r1"]
    assert await world.read_model.rules(include_disabled=False) == []
    await world.rules.delete(DeleteRule("r1"))
    await world.runner.catch_up()
    assert await world.read_model.rule("r1") is None


async def test_alerts_are_raised_acknowledged_resolved_and_searchable(world: World) -> None:
    await world.rules.create(CreateRule("r1", HOT))
    await world.runner.catch_up()
    await world.engine_.load()
    await world.send("sensor-1", T0, temperature=35)
    await world.send("sensor-2", T0 + 5, temperature=31)
    await world.send("sensor-3", T0, temperature=99)  # tag site=roof: not watched
    opened = await world.read_model.open_alerts()
    assert sorted(a.device_id for a in opened) == ["sensor-1", "sensor-2"]
    first = next(a for a in opened if a.device_id == "sensor-1")
    await world.alerts.acknowledge(AcknowledgeAlert(first.alert_id, "on it", EventContext("alice")))
    await world.runner.catch_up()
    await world.send("sensor-2", T0 + 6, temperature=20)

    acknowledged = await world.read_model.alert(first.alert_id)
    assert acknowledged is not None
    assert (acknowledged.status, acknowledged.acknowledged_by, acknowledged.note) == (
        AlertStatus.ACKNOWLEDGED, "alice", "on it")
    search = world.read_model.alerts
    assert [a.device_id for a in await search(AlertSearch(status=AlertStatus.RESOLVED))] == ["sensor-2"]
    assert [a.device_id for a in await search(AlertSearch(open_only=True))] == ["sensor-1"]
    assert len(await search(AlertSearch(severity=Severity.CRITICAL, rule_id="r1"))) == 2
    assert await search(AlertSearch(severity=Severity.INFO)) == []
    later = datetime.fromtimestamp(T0 + 1, UTC)
    assert [a.device_id for a in await search(AlertSearch(raised_from=later))] == ["sensor-2"]
    assert [a.device_id for a in await search(AlertSearch(raised_to=later))] == ["sensor-1"]
    assert [a.device_id for a in await search(AlertSearch(device_id="sensor-2", limit=5))] == ["sensor-2"]


async def test_a_restart_loads_open_alerts_from_the_read_model(world: World) -> None:
    await world.rules.create(CreateRule("r1", HOT))
    await world.runner.catch_up()
    await world.engine_.load()
    await world.send("sensor-1", T0, temperature=35)
    world.engine_ = world.new_engine()
    await world.engine_.load()
    await world.send("sensor-1", T0 + 1, temperature=36)
    assert len(await world.read_model.alerts(AlertSearch())) == 1
    await world.send("sensor-1", T0 + 2, temperature=20)
    assert await world.read_model.open_alerts() == []


async def test_rebuilding_the_alert_read_models_gives_the_same_rows(world: World) -> None:
    await world.rules.create(CreateRule("r1", HOT))
    await world.runner.catch_up()
    await world.rules.create(CreateRule("r2", replace(HOT, name="any", selector=DeviceSelector())))
    await world.runner.catch_up()
    await world.rules.change(ChangeRule("r2", {"severity": "info"}))
    await world.runner.catch_up()
    await world.engine_.load()
    await world.send("sensor-1", T0, temperature=35)
    await world.send("sensor-1", T0 + 1, temperature=20)
    await world.send("sensor-3", T0 + 2, temperature=35)

    async def rows() -> list[Any]:
        async with world.engine.connect() as conn:
            rules = (await conn.execute(select(rm_alert_rules).order_by(rm_alert_rules.c.rule_id))).all()
            alerts = (await conn.execute(select(rm_alerts).order_by(rm_alerts.c.alert_id))).all()
        return [tuple(r) for r in rules] + [tuple(r) for r in alerts]

    before = await rows()
    assert len(before) == 2 + 3
    await world.runner.rebuild(["alert_rules", "alerts"])
    assert await rows() == before


async def test_no_data_rules_start_from_the_presence_read_model(world: World) -> None:
    await SqlDeviceState(world.engine, clock=lambda: datetime.fromtimestamp(T0, UTC)).handle(
        [Reading("sensor-1", int(T0 * NS_PER_SECOND), {"temperature": 20.0})]
    )
    await world.rules.create(CreateRule("silent", RuleDefinition(
        "silent", DeviceSelector("sensor-*"), Condition("temperature", Operator.NO_DATA, 300.0))))
    await world.runner.catch_up()
    await world.engine_.load()
    world.clock.t = T0 + 299
    await world.engine_.sweep()
    world.clock.t = T0 + 300
    await world.engine_.sweep()
    await world.runner.catch_up()
    assert [a.device_id for a in await world.read_model.open_alerts()] == ["sensor-1"]


# -- webhooks --------------------------------------------------------------------------------

class Hook:
    """A loopback HTTP server that fails the first ``failures`` POSTs with 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                hook.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.attempts <= hook.failures:
                    self.send_response(503)
                else:
                    hook.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None: ...

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/alerts?token=s3cret"


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook(failures=2)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def notice(alert_id: str = "a1") -> AlertNotice:
    return AlertNotice("raised", alert_id, "r1", "hot", "sensor-1", "temperature", "critical",
                       "raised", 35.0, "hot", datetime.now(UTC), "rule-engine")


async def test_webhooks_are_retried_with_backoff_until_the_endpoint_answers(hook: Hook) -> None:
    channel = WebhookChannel(attempts=4, backoff_initial=0.01, backoff_max=0.05)
    await channel.start()
    rule = replace(HOT, channels=(Channel.WEBHOOK,), webhook_url=hook.url)
    channel.send(notice(), rule)
    channel.send(notice("ignored"), HOT)  # the rule has no webhook channel
    await channel.stop(timeout=30)
    assert hook.attempts == 3
    assert [b["alert_id"] for b in hook.bodies] == ["a1"]
    assert (channel.delivered, channel.failed) == (1, 0)


async def test_a_dead_webhook_is_given_up_without_blocking_the_sender(hook: Hook) -> None:
    hook.failures = 100
    channel = WebhookChannel(attempts=2, backoff_initial=0.01, backoff_max=0.01, queue_size=2)
    rule = replace(HOT, channels=(Channel.WEBHOOK,), webhook_url=hook.url)
    for i in range(5):
        channel.send(notice(f"a{i}"), rule)  # queued or dropped at once: send is not awaited
    await channel.start()
    await channel.stop(timeout=30)
    assert (channel.failed, channel.dropped, hook.attempts) == (2, 3, 4)
