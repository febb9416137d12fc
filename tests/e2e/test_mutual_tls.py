"""Mutual TLS for devices, end to end against the harness Mosquitto's TLS listener.

The listener requires a client certificate from the device CA, takes its CN as the MQTT
username, confines each device to its own topics (ACL) and enforces the CRL. The platform
imports that CA (``iot-platform ca import``), writes its CRL where Mosquitto reads it, and
subscribes over TLS with its own service certificate. Then, with ``mosquitto_pub``:
a provisioned device's reading is stored; another device's topic is refused; a revoked
certificate, or none, fails the TLS handshake. The embedded broker is held to the same rules,
and a Mosquitto of the test's own is set up from the platform's CA alone (``ca service-cert``).
"""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from tests.conftest import require_service
from tests.e2e.platform_process import BIN, RunningPlatform, free_port, platform_env, running_platform
from tests.e2e.test_pki import make_csr
from tests.e2e.test_telemetry import eventually, readings, register

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


KEY_PASSWORD = "service-key-passphrase-e2e"


def tls_env(tmp_path: Path, pki: Path, mqtts_url: str) -> dict[str, str]:
    """The platform's service key is an encrypted copy of the harness's (``openssl pkey``), as
    an operator keeps it at rest; ``mqtt.tls_key_password`` opens it."""
    encrypted = tmp_path / "platform-encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(pki / "platform.key"), "-aes256", "-passout",
                    f"pass:{KEY_PASSWORD}", "-out", str(encrypted)], check=True, timeout=30)
    return {
        "IOT_SECURITY__CERTIFICATE_AUTHORITY": "imported",
        "IOT_SECURITY__CA_CERT_PATH": str(tmp_path / "pki" / "ca.crt"),
        "IOT_SECURITY__CA_KEY_PATH": str(tmp_path / "pki" / "ca.key"),
        "IOT_SECURITY__CRL_PATH": str(pki / "crl.pem"),  # the file the broker enforces
        "IOT_MQTT__EMBEDDED_BROKER": "false",
        "IOT_MQTT__BROKER_URL": mqtts_url,
        "IOT_MQTT__CLIENT_ID": f"tls-{uuid4().hex[:8]}",
        "IOT_MQTT__TLS_CA_FILE": str(pki / "chain.pem"),
        "IOT_MQTT__TLS_CERT_FILE": str(pki / "platform.crt"),
        "IOT_MQTT__TLS_KEY_FILE": str(encrypted),
        "IOT_MQTT__TLS_KEY_PASSWORD": KEY_PASSWORD,
        "IOT_MQTT__IDENTITY_PROPERTY": "iot-identity",  # stamped by the harness's broker plugin
    }


@pytest.fixture
def tls_platform(tmp_path: Path, platform_database_url: str) -> Iterator[tuple[RunningPlatform, Path, int]]:
    mqtts_url = require_service("IOT_TEST_MQTTS_URL", "Mosquitto (TLS listener)")
    pki = Path(require_service("IOT_TEST_PKI_DIR", "the harness device CA"))
    env = tls_env(tmp_path, pki, mqtts_url)
    imported = subprocess.run(
        [str(BIN / "iot-platform"), "ca", "import", "--cert", str(pki / "ca.crt"), "--key", str(pki / "ca.key"),
         "--chain", str(pki / "root.crt")],
        cwd=tmp_path, env=platform_env(platform_database_url, **env), capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    with running_platform(tmp_path, platform_database_url, **env) as platform:
        yield platform, pki, int(mqtts_url.rsplit(":", 1)[1])


def publish(pki: Path, port: int, topic: str, device: Path | None, version: str = "5",
            value: float = 21.5) -> subprocess.CompletedProcess[str]:
    """mosquitto_pub over TLS as ``device`` (MQTT 5 by default, so a refused publish is
    reported; the embedded broker speaks 3.1.1)."""
    credentials = ["--cert", f"{device}.crt", "--key", f"{device}.key"] if device else []
    return subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", version, "-q", "1", "--cafile", str(pki / "chain.pem"),
         *credentials, "-t", topic, "-m", json.dumps({"temperature": value})],
        capture_output=True, text=True, timeout=30)


def provision(api: httpx.Client, directory: Path, device_id: str) -> Path:
    answer = api.put(f"/devices/{device_id}/provision", json={"csr": make_csr(directory, device_id, device_id)})
    assert answer.status_code == 200, answer.text
    (directory / f"{device_id}.crt").write_text(answer.json()["certificate"]["pem"])
    return directory / device_id


@pytest.mark.serial
def test_devices_with_certificates_publish_only_to_their_own_topics_until_revoked(
    tls_platform: tuple[RunningPlatform, Path, int], tmp_path: Path
) -> None:
    platform, pki, port = tls_platform
    mine, theirs = f"tls-{uuid4().hex[:6]}", f"tls-{uuid4().hex[:6]}"
    with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        register(api, mine)
        register(api, theirs)
        device = provision(api, tmp_path, mine)
        other = provision(api, tmp_path, theirs)
        sent = publish(pki, port, f"devices/{mine}/telemetry", device)
        assert sent.returncode == 0, sent.stderr
        eventually(lambda: readings(api, mine), lambda r: len(r) == 1)
        refused = publish(pki, port, f"devices/{theirs}/telemetry", device, value=99.0)
        assert "Not authorized" in refused.stdout + refused.stderr
        assert publish(pki, port, f"devices/{theirs}/telemetry", other).returncode == 0  # a marker after it
        got = eventually(lambda: readings(api, theirs), lambda r: len(r) >= 1)
        assert [r["metrics"]["temperature"] for r in got] == [21.5]  # the marker alone
        anonymous = publish(pki, port, f"devices/{mine}/telemetry", None)
        assert anonymous.returncode != 0
        assert KEY_PASSWORD not in (platform.workdir / "platform.log").read_text()
        serial = api.get(f"/devices/{mine}/certificates").json()["items"][0]["serial"]
        assert api.post(f"/devices/{mine}/certificates/{serial}/revoke", json={"reason": "key_compromise"}).status_code == 204
        subprocess.run(["bash", str(REPO / "tools" / "services.sh"), "reload", "mosquitto"], check=True,
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        revoked = eventually(lambda: publish(pki, port, f"devices/{mine}/telemetry", device),
                             lambda done: done.returncode != 0)
        assert "lost" in revoked.stderr or "rror" in revoked.stderr
        assert publish(pki, port, f"devices/{theirs}/telemetry", other).returncode == 0
        eventually(lambda: readings(api, theirs), lambda r: len(r) == 2)
        assert len(readings(api, mine)) == 1


def test_the_platform_refuses_another_device_s_topic_even_where_the_acl_lets_it_through(
    tls_platform: tuple[RunningPlatform, Path, int], tmp_path: Path
) -> None:
    platform, pki, port = tls_platform
    victim = f"tls-{uuid4().hex[:6]}"
    with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        register(api, victim)
        register(api, "acl-too-wide")  # the harness ACL lets this identity use every topic
        wide = provision(api, tmp_path, "acl-too-wide")
        other = provision(api, tmp_path, victim)
        slipped = publish(pki, port, f"devices/{victim}/telemetry", wide, value=99.0)
        assert slipped.returncode == 0 and "Not authorized" not in slipped.stderr  # the broker let it through
        forged = subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", "5", "-q", "1", "--cafile", str(pki / "chain.pem"),
             "--cert", f"{wide}.crt", "--key", f"{wide}.key", "-t", f"devices/{victim}/telemetry", "-m", '{"t": 1}',
             "-D", "publish", "user-property", "iot-identity", victim],
            capture_output=True, text=True, timeout=30)
        assert "Not authorized" in forged.stderr  # only the broker may say who published
        assert publish(pki, port, f"devices/{victim}/telemetry", other).returncode == 0
        got = eventually(lambda: readings(api, victim), lambda r: len(r) >= 1)
        assert [r["metrics"]["temperature"] for r in got] == [21.5]
        refused = eventually(
            lambda: httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers).text,
            lambda text: 'iot_readings_rejected_total{protocol="mqtt",reason="identity_mismatch"} 1.0' in text)
        assert refused


def test_the_embedded_broker_enforces_the_same_rules_with_mutual_tls_required(tmp_path: Path, platform_database_url: str) -> None:
    with running_platform(tmp_path, platform_database_url, IOT_SECURITY__MUTUAL_TLS_REQUIRED="true") as platform, \
            httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        (tmp_path / "chain.pem").write_text(httpx.get(f"{platform.base_url}/api/pki/ca").text)
        register(api, "e-1")
        register(api, "e-2")
        device, other = provision(api, tmp_path, "e-1"), provision(api, tmp_path, "e-2")
        sent = publish(tmp_path, platform.mqtt_port, "devices/e-1/telemetry", device, "311")
        assert sent.returncode == 0, sent.stderr
        eventually(lambda: readings(api, "e-1"), lambda r: len(r) == 1)
        publish(tmp_path, platform.mqtt_port, "devices/e-2/telemetry", device, "311", value=99.0)  # not its topic
        assert publish(tmp_path, platform.mqtt_port, "devices/e-2/telemetry", other, "311").returncode == 0
        got = eventually(lambda: readings(api, "e-2"), lambda r: len(r) >= 1)
        assert [r["metrics"]["temperature"] for r in got] == [21.5]  # the marker alone
        assert publish(tmp_path, platform.mqtt_port, "devices/e-1/telemetry", None, "311").returncode != 0
        serial = api.get("/devices/e-1/certificates").json()["items"][0]["serial"]
        assert api.post(f"/devices/e-1/certificates/{serial}/revoke", json={}).status_code == 204
        assert publish(tmp_path, platform.mqtt_port, "devices/e-1/telemetry", device, "311").returncode != 0
        assert len(readings(api, "e-1")) == 1
    for name in ("broker", "platform"):  # the broker's and the platform's own keys, at rest
        assert (tmp_path / "data" / "pki" / f"{name}.key").read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY")


def test_an_external_mosquitto_set_up_from_the_platform_s_own_ca(tmp_path: Path, platform_database_url: str) -> None:
    """The README's scaled-out shape with no CA of one's own: ``ca init``, ``ca service-cert``
    for Mosquitto's server side and for the platform's client identity, a Mosquitto configured
    as the README says, and a device the platform provisioned publishing through it."""
    port = free_port()
    base = {"IOT_MQTT__EMBEDDED_BROKER": "false"}
    ca = lambda *args, stdin=None: subprocess.run(  # noqa: E731
        [str(BIN / "iot-platform"), "ca", *args], cwd=tmp_path, env=platform_env(platform_database_url, **base),
        input=stdin, capture_output=True, text=True, timeout=60)
    assert ca("init").returncode == 0
    broker_dir = tmp_path / "broker"
    made = ca("service-cert", "mosquitto", "--host", "127.0.0.1", "--unencrypted-key", "--out", str(broker_dir))
    assert made.returncode == 0, made.stderr
    made = ca("service-cert", "platform", "--cn", "iot-platform", "--key-password-stdin", "--out", str(broker_dir),
              stdin=f"{KEY_PASSWORD}\n")
    assert made.returncode == 0, made.stderr
    assert (broker_dir / "platform.key").read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY")
    (broker_dir / "acl").write_text("user iot-platform\ntopic readwrite #\n\n"
                                    "pattern readwrite devices/%u/#\npattern readwrite sensors/%u/#\n")
    (broker_dir / "mosquitto.conf").write_text("\n".join([
        f"user {getpass.getuser()}", "persistence false", f"log_dest file {broker_dir / 'mosquitto.log'}",
        f"acl_file {broker_dir / 'acl'}", f"listener {port} 127.0.0.1", f"cafile {broker_dir / 'chain.pem'}",
        f"certfile {broker_dir / 'mosquitto.crt'}", f"keyfile {broker_dir / 'mosquitto.key'}",
        "require_certificate true", "use_identity_as_username true",
        f"crlfile {tmp_path / 'data' / 'pki' / 'crl.pem'}", ""]))
    broker = subprocess.Popen(["mosquitto", "-c", str(broker_dir / "mosquitto.conf")])
    try:
        _wait_for_listener(port, broker, broker_dir / "mosquitto.log")
        env = {**base, "IOT_MQTT__BROKER_URL": f"mqtts://127.0.0.1:{port}",
               "IOT_MQTT__CLIENT_ID": f"own-ca-{uuid4().hex[:8]}",
               "IOT_MQTT__TLS_CA_FILE": str(broker_dir / "chain.pem"),
               "IOT_MQTT__TLS_CERT_FILE": str(broker_dir / "platform.crt"),
               "IOT_MQTT__TLS_KEY_FILE": str(broker_dir / "platform.key"),
               "IOT_MQTT__TLS_KEY_PASSWORD": KEY_PASSWORD}
        with running_platform(tmp_path, platform_database_url, **env) as platform, \
                httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
            register(api, "own-1")
            device = provision(api, tmp_path, "own-1")
            (tmp_path / "chain.pem").write_text(api.get("/pki/ca").text)  # what a device is given
            sent = publish(tmp_path, port, "devices/own-1/telemetry", device)
            assert sent.returncode == 0, sent.stderr
            eventually(lambda: readings(api, "own-1"), lambda r: len(r) == 1)
            refused = publish(tmp_path, port, "devices/own-2/telemetry", device)
            assert "Not authorized" in refused.stdout + refused.stderr
    finally:
        broker.terminate()
        broker.wait(timeout=30)


def _wait_for_listener(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {log.read_text() if log.exists() else ''}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("mosquitto did not listen in 30 s")
