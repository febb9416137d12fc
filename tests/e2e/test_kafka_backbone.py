"""The platform on the Kafka backbone, read by clients nobody here wrote (kcat).

With ``streaming.backend: kafka`` the outbox relay publishes every domain event to the
domain-events topic; with ``projections_source: kafka`` the read models are fed from it, so the
REST API still reads its own writes.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from tests.conftest import require_service
from tests.e2e.platform_process import running_platform
from tests.e2e.test_telemetry import eventually

pytestmark = pytest.mark.e2e


def kcat_read(brokers: str, topic: str, count: int) -> list[tuple[str, dict[str, str], dict[str, object]]]:
    """(key, headers, value) of the topic's first ``count`` records, read by kcat."""
    out = subprocess.run(
        ["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-c", str(count), "-e", "-q",
         "-f", "%k\\t%h\\t%s\\n"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    records = []
    for line in out.splitlines():
        key, headers, value = line.split("\t", 2)
        pairs = [h.split("=", 1) for h in headers.split(",") if "=" in h]  # no headers: empty
        records.append((key, dict(pairs), json.loads(value)))
    return records


@pytest.mark.parametrize("source", ["store", "kafka"])
def test_a_kcat_consumer_of_the_domain_events_topic_sees_device_registered(
    tmp_path: Path, platform_database_url: str, source: str
) -> None:
    brokers = require_service("IOT_TEST_KAFKA_BROKERS", "Kafka")
    topic = f"iot-domain-events-{uuid4().hex[:8]}"
    with running_platform(tmp_path, platform_database_url, IOT_STREAMING__BACKEND="kafka",
                          IOT_STREAMING__BROKERS=brokers, IOT_STREAMING__TOPICS__DOMAIN_EVENTS=topic,
                          IOT_STREAMING__PROJECTIONS_SOURCE=source,
                          IOT_STREAMING__CONSUMER_GROUP=f"e2e-{uuid4().hex[:8]}") as running, \
            httpx.Client(base_url=f"{running.base_url}/api", headers=running.headers, timeout=30) as api:
        created = api.post("/devices", json={"device_id": "sensor-1", "device_type": "th"})
        assert created.status_code == 201, created.text
        # read-your-writes holds whichever way the read model is fed
        assert api.get("/devices/sensor-1").json()["status"] == "registered"
        eventually(lambda: httpx.get(f"{running.base_url}/metrics", headers=running.headers, follow_redirects=True).text,
                   lambda text: f'iot_outbox_relayed_total{{topic="{topic}"}} 1.0' in text)
        [(key, headers, value)] = kcat_read(brokers, topic, 1)
    assert key == "sensor-1"
    assert headers["event_type"] == "DeviceRegistered" and headers["position"] == "1"
    assert value["event_type"] == "DeviceRegistered" and value["aggregate_id"] == "sensor-1"
    assert value["data"]["device_type"] == "th"  # type: ignore[index]


class Fleet:
    """Devices publishing numbered readings with mosquitto_pub, counted back over REST."""

    def __init__(self, api: httpx.Client, mqtt_port: int, run: str, devices: int) -> None:
        self.api = api
        self.mqtt_port = mqtt_port
        self.ids = [f"k{run}-{i}" for i in range(devices)]
        self.sent = 0
        # Recent readings: ones older than timeseries.retention_days are deleted by the store's
        # next maintenance run, which a test this long always meets (a fixed date in the past
        # made these tests fail once that date fell out of the window).
        self.start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        for device in self.ids:
            response = api.post("/devices", json={"device_id": device, "device_type": "th"})
            assert response.status_code == 201, response.text

    def publish(self, per_device: int) -> None:
        """``per_device`` readings from each device, one mosquitto_pub per device (-l: a line each)."""
        start = self.sent
        for device in self.ids:
            lines = "".join(
                json.dumps({"message_id": f"{device}-{n}", "timestamp": int(self.start.timestamp() * 1000) + n,
                            "metrics": {"temperature": 20 + n % 10}}) + "\n"
                for n in range(start, start + per_device)
            )
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.mqtt_port), "-q", "1",
                            "-t", f"devices/{device}/telemetry", "-l"], input=lines, text=True,
                           check=True, timeout=120)
        self.sent += per_device

    def stored(self) -> dict[str, int]:
        counts = {}
        for device in self.ids:
            response = self.api.get(f"/devices/{device}/data", params={
                "from": self.start.isoformat(), "to": (self.start + timedelta(hours=2)).isoformat(),
                "limit": 10000})
            counts[device] = len(response.json()["readings"]) if response.status_code == 200 else -1
        return counts


def kafka_env(run: str, brokers: str) -> dict[str, str]:
    """The Kafka backend on topics and a consumer group of this run's own."""
    return {
        "IOT_STREAMING__BACKEND": "kafka",
        "IOT_STREAMING__BROKERS": brokers,
        "IOT_STREAMING__TOPICS__SENSOR_DATA": f"readings-{run}",
        "IOT_STREAMING__TOPICS__DOMAIN_EVENTS": f"events-{run}",
        "IOT_STREAMING__TOPICS__DEAD_LETTER": f"dead-{run}",
        "IOT_STREAMING__CONSUMER_GROUP": f"e2e-{run}",
    }


def scaled_out_env(run: str, brokers: str) -> dict[str, str]:
    return {
        **kafka_env(run, brokers),
        "IOT_TIMESERIES__BACKEND": "influxdb",
        "IOT_TIMESERIES__URL": require_service("IOT_TEST_INFLUX_URL", "InfluxDB"),
        "IOT_TIMESERIES__BUCKET": require_service("IOT_TEST_INFLUX_BUCKET", "InfluxDB"),
        "IOT_TIMESERIES__TOKEN": require_service("IOT_TEST_INFLUX_TOKEN", "InfluxDB"),
    }


def holds_partitions(log: Path) -> bool:
    return any("holds partitions [" in line and "holds partitions []" not in line
               for line in log.read_text().splitlines())


def test_two_storage_workers_split_the_partitions_and_a_killed_one_loses_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    import asyncio

    from tests.conftest import reset_postgres
    from tests.e2e.platform_process import start_worker

    brokers = require_service("IOT_TEST_KAFKA_BROKERS", "Kafka")
    asyncio.run(reset_postgres(postgres_url))
    run = uuid4().hex[:8]
    env = scaled_out_env(run, brokers)
    workers = [start_worker(tmp_path, postgres_url, ["storage"], f"worker-{i}.log",
                            **env, IOT_API__LOG_LEVEL="info") for i in range(2)]
    try:
        with running_platform(tmp_path, postgres_url, serve_args=("--workers", "state,rules,projections,relay"),
                              **env) as running, \
                httpx.Client(base_url=f"{running.base_url}/api", headers=running.headers, timeout=30) as api:
            fleet = Fleet(api, running.mqtt_port, run, devices=8)
            fleet.publish(50)
            eventually(lambda: [holds_partitions(tmp_path / f"worker-{i}.log") for i in range(2)],
                       lambda held: all(held), deadline=60)  # the group split the 4 partitions
            eventually(fleet.stored, lambda counts: sum(counts.values()) > 0, deadline=60)
            workers[0].kill()  # mid-stream: what it had not committed goes to the other
            workers[0].wait()
            eventually(lambda: [line for line in (tmp_path / "worker-1.log").read_text().splitlines()
                                if "holds partitions [" in line][-1],
                       lambda last: "holds partitions [0, 1, 2, 3]" in last, deadline=60)
            fleet.publish(50)
            counts = eventually(fleet.stored, lambda counts: all(c >= fleet.sent for c in counts.values()),
                                deadline=120)
            assert counts == dict.fromkeys(fleet.ids, fleet.sent)  # every reading, once
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=30)


@pytest.mark.serial
def test_a_broker_restarted_mid_stream_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    import asyncio

    from tests.conftest import reset_postgres

    brokers = require_service("IOT_TEST_KAFKA_BROKERS", "Kafka")
    asyncio.run(reset_postgres(postgres_url))
    run = uuid4().hex[:8]
    with running_platform(tmp_path, postgres_url, **scaled_out_env(run, brokers)) as running, \
            httpx.Client(base_url=f"{running.base_url}/api", headers=running.headers, timeout=30) as api:
        fleet = Fleet(api, running.mqtt_port, run, devices=4)
        fleet.publish(40)
        subprocess.run(["bash", "tools/services.sh", "restart", "kafka"], check=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[2])
        fleet.publish(40)
        counts = eventually(fleet.stored, lambda counts: all(c >= fleet.sent for c in counts.values()),
                            deadline=180)
        assert counts == dict.fromkeys(fleet.ids, fleet.sent)


def test_dlq_list_and_replay_a_record_kcat_put_on_the_readings_topic(tmp_path: Path, platform_database_url: str) -> None:
    from tests.e2e.platform_process import BIN, platform_env

    brokers = require_service("IOT_TEST_KAFKA_BROKERS", "Kafka")
    run = uuid4().hex[:8]
    env = {k: v for k, v in scaled_out_env(run, brokers).items() if not k.startswith("IOT_TIMESERIES")}

    def cli(*args: str) -> str:
        done = subprocess.run([str(BIN / "iot-platform"), "dlq", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env=platform_env(platform_database_url, **env), check=True)
        return done.stdout

    with running_platform(tmp_path, platform_database_url, **env):
        subprocess.run(["kcat", "-P", "-b", brokers, "-t", f"readings-{run}", "-k", "sensor-9"],
                       input="this is not a reading", text=True, check=True, timeout=60)
        listed = eventually(lambda: cli("list"), lambda out: "1 dead letters" in out, deadline=60)
        [letter] = [line for line in listed.splitlines() if "\t" in line]
        assert "\tundecodable\t" in letter and f"readings-{run}[" in letter and "key=sensor-9" in letter
        assert cli("replay").strip() == "replayed 1 dead letters"
        # still not a reading: the storage writer's group dead-letters it again, as a new letter
        eventually(lambda: cli("list"), lambda out: "2 dead letters" in out, deadline=60)
        assert cli("replay").strip() == "replayed 1 dead letters"  # the new one; the first only once


def test_a_command_pushed_to_a_device_is_on_the_commands_topic_for_kcat(tmp_path: Path, platform_database_url: str) -> None:
    brokers = require_service("IOT_TEST_KAFKA_BROKERS", "Kafka")
    run = uuid4().hex[:8]
    env = {k: v for k, v in scaled_out_env(run, brokers).items() if not k.startswith("IOT_TIMESERIES")}
    with running_platform(tmp_path, platform_database_url, **env, IOT_STREAMING__TOPICS__COMMANDS=f"commands-{run}") as running, \
            httpx.Client(base_url=f"{running.base_url}/api", headers=running.headers, timeout=30) as api:
        assert api.post("/devices", json={"device_id": "pump-1", "device_type": "pump"}).status_code == 201
        issued = api.post("/devices/pump-1/commands", json={"command": "set_sampling_rate",
                                                            "parameters": {"seconds": 30}, "ttl_seconds": 600})
        assert issued.status_code in (201, 202), issued.text
        command_id = issued.json()["command_id"]
        eventually(lambda: api.get(f"/devices/pump-1/commands/{command_id}").json()["status"],
                   lambda status: status == "sent")
        [(key, _, value)] = kcat_read(brokers, f"commands-{run}", 1)
    assert key == "pump-1"
    assert (value["device_id"], value["command_id"], value["command"], value["parameters"]) == (
        "pump-1", command_id, "set_sampling_rate", {"seconds": 30})


def test_on_kafka_a_device_stream_client_sees_its_readings(tmp_path: Path, platform_database_url: str) -> None:
    import queue as queues

    from tests.e2e.test_alerts import sse
    from tests.e2e.test_telemetry import mosquitto_pub

    brokers = require_service("IOT_TEST_KAFKA_BROKERS", "Kafka")
    run = uuid4().hex[:8]
    env = {k: v for k, v in scaled_out_env(run, brokers).items() if not k.startswith("IOT_TIMESERIES")}
    with running_platform(tmp_path, platform_database_url, **env) as running, \
            httpx.Client(base_url=f"{running.base_url}/api", headers=running.headers, timeout=30) as api:
        assert api.post("/devices", json={"device_id": "sensor-1", "device_type": "th"}).status_code == 201
        stream = sse(running, "/api/devices/sensor-1/stream")
        try:
            # The live feed follows the topic from the newest record on, once its consumer has
            # the partitions: publish until a reading comes through.
            for i in range(60):
                mosquitto_pub(running.mqtt_port, "devices/sensor-1/telemetry",
                              message=json.dumps({"temperature": 20 + i}))
                try:
                    kind, reading = stream.events.get(timeout=1)
                except queues.Empty:
                    continue
                if kind == "reading":
                    break
            else:
                raise AssertionError("no reading reached the device stream")
        finally:
            stream.close()
    assert reading["device_id"] == "sensor-1" and reading["metrics"]["temperature"] >= 20
