"""X.509 provisioning end to end, with openssl as the device and as the verifier.

Given a running platform (which made its device CA on first start), a CSR made by ``openssl
req`` is turned into a certificate that ``openssl verify`` accepts against the served chain;
a renewal keeps the old certificate until it is revoked; a revoked certificate fails
``openssl verify -crl_check`` against the served CRL; decommissioning revokes them all.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.platform_process import RunningPlatform
from tests.api.test_device_api import assert_unprocessable
from tests.e2e.test_telemetry import register

pytestmark = pytest.mark.e2e


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def make_csr(directory: Path, name: str, common_name: str) -> str:
    made = openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                   "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}", cwd=directory)
    assert made.returncode == 0, made.stderr
    return (directory / f"{name}.csr").read_text()


def public(platform: RunningPlatform, path: str) -> httpx.Response:
    """The CA's chain and CRL need no credentials."""
    return httpx.get(f"{platform.base_url}/api/pki/{path}")


def test_a_csr_becomes_a_certificate_that_openssl_verifies_against_the_served_chain(
    platform: RunningPlatform, api: httpx.Client, tmp_path: Path
) -> None:
    register(api, "sensor-1")
    answer = api.put("/devices/sensor-1/provision", json={"csr": make_csr(tmp_path, "first", "sensor-1")})
    assert answer.status_code == 200, answer.text
    provisioned = answer.json()
    assert (provisioned["status"], provisioned["credential_type"]) == ("provisioned", "x509")
    assert provisioned["mqtt"]["topics"]["telemetry"] == "devices/sensor-1/telemetry"
    assert provisioned["generated_key"] is None and provisioned["reporting_interval_seconds"] == 60
    (tmp_path / "first.crt").write_text(provisioned["certificate"]["pem"])
    chain = public(platform, "ca")
    assert chain.status_code == 200 and chain.text == provisioned["ca_chain"]
    (tmp_path / "chain.pem").write_text(chain.text)
    verified = openssl("verify", "-CAfile", "chain.pem", "first.crt", cwd=tmp_path)
    assert verified.returncode == 0 and "first.crt: OK" in verified.stdout, verified.stderr
    shown = openssl("x509", "-in", "first.crt", "-noout", "-subject", "-ext", "subjectAltName,extendedKeyUsage",
                    cwd=tmp_path).stdout
    assert "CN = sensor-1" in shown and "URI:urn:iot-platform:device:sensor-1" in shown and "TLS Web Client Authentication" in shown
    history = api.get("/devices/sensor-1/history").json()["events"]
    issued = [e for e in history if e["event_type"] == "CertificateIssued"]
    assert [e["event_type"] for e in history][-2:] == ["DeviceProvisioned", "CertificateIssued"]
    assert issued[0]["data"]["serial"] == provisioned["certificate"]["serial"]
    assert issued[0]["data"]["fingerprint"] == provisioned["certificate"]["fingerprint"]
    assert "BEGIN" not in str(history)  # no certificate or key material in events


def test_bad_csrs_are_422_naming_the_csr(platform: RunningPlatform, api: httpx.Client, tmp_path: Path) -> None:
    register(api, "sensor-1")
    assert_unprocessable(api.put("/devices/sensor-1/provision", json={"csr": make_csr(tmp_path, "other", "sensor-2")}), "csr")
    assert_unprocessable(api.put("/devices/sensor-1/provision", json={"csr": "-----BEGIN CERTIFICATE REQUEST-----\nnope"}), "csr")
    assert api.get("/devices/sensor-1").json()["status"] == "registered"
    assert api.put("/devices/ghost/provision", json={}).status_code == 404


def test_a_device_without_a_csr_gets_a_key_pair_once(platform: RunningPlatform, api: httpx.Client, tmp_path: Path) -> None:
    register(api, "tiny-1")
    provisioned = api.put("/devices/tiny-1/provision", json={"credential": "x509"}).json()
    generated = provisioned["generated_key"]
    assert generated["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    (tmp_path / "tiny.p12").write_bytes(base64.b64decode(generated["pkcs12_base64"]))
    opened = openssl("pkcs12", "-in", "tiny.p12", "-passin", f"pass:{generated['pkcs12_password']}", "-nokeys",
                     "-clcerts", cwd=tmp_path)
    assert opened.returncode == 0 and "subject=CN" in opened.stdout and "tiny-1" in opened.stdout, opened.stderr
    log = (platform.workdir / "platform.log").read_text()
    assert generated["pkcs12_password"] not in log and "PRIVATE KEY" not in log


def test_renewal_overlap_revocation_crl_and_decommissioning(platform: RunningPlatform, api: httpx.Client, tmp_path: Path) -> None:
    register(api, "sensor-1")
    first = api.put("/devices/sensor-1/provision", json={"csr": make_csr(tmp_path, "a", "sensor-1")}).json()
    second = api.put("/devices/sensor-1/provision", json={"csr": make_csr(tmp_path, "b", "sensor-1")}).json()
    old, new = first["certificate"]["serial"], second["certificate"]["serial"]
    assert old != new
    (tmp_path / "a.crt").write_text(first["certificate"]["pem"])
    (tmp_path / "b.crt").write_text(second["certificate"]["pem"])
    (tmp_path / "chain.pem").write_text(public(platform, "ca").text)
    listed = {c["serial"]: c for c in api.get("/devices/sensor-1/certificates").json()["items"]}
    assert listed[old]["superseded_at"] is not None and listed[old]["revoked_at"] is None  # the overlap
    assert api.post(f"/devices/sensor-1/certificates/{old}/revoke", json={"reason": "key_compromise"}).status_code == 204
    assert api.post("/devices/sensor-1/certificates/abc/revoke", json={}).status_code == 404
    (tmp_path / "crl.pem").write_bytes(public(platform, "crl").content)
    (tmp_path / "crl.der").write_bytes(public(platform, "crl?format=der").content)
    assert old.upper().lstrip("0") in openssl("crl", "-in", "crl.der", "-inform", "DER", "-noout", "-text", cwd=tmp_path).stdout.upper()
    refused = openssl("verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "chain.pem", "a.crt", cwd=tmp_path)
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
    accepted = openssl("verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "chain.pem", "b.crt", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert api.delete("/devices/sensor-1").status_code == 200
    (tmp_path / "crl.pem").write_bytes(public(platform, "crl").content)
    gone = openssl("verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "chain.pem", "b.crt", cwd=tmp_path)
    assert gone.returncode != 0 and "certificate revoked" in gone.stdout + gone.stderr
    events = [e["event_type"] for e in api.get("/devices/sensor-1/history").json()["events"]]
    assert events[-2:] == ["CertificateRevoked", "DeviceDecommissioned"]
    written = (platform.workdir / "data" / "pki" / "crl.pem").read_bytes()  # where brokers read it
    (tmp_path / "written.pem").write_bytes(written)
    assert openssl("verify", "-crl_check", "-CRLfile", "written.pem", "-CAfile", "chain.pem", "b.crt",
                   cwd=tmp_path).returncode != 0


def test_a_factory_claim_is_exchanged_once_per_device_within_its_uses(
    platform: RunningPlatform, api: httpx.Client, tmp_path: Path
) -> None:
    made = api.post("/provisioning/claims", json={"name": "batch 7", "device_type": "thermo", "uses": 2,
                                                  "valid_hours": 1, "tags": {"line": "b"}})
    assert made.status_code == 201, made.text
    token, claim_id = made.json()["token"], made.json()["claim_id"]
    assert token not in str(api.get("/provisioning/claims").json())

    def exchange(device_id: str, credential: str | None = token, csr: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        return httpx.post(f"{platform.base_url}/api/provisioning/claim", headers=headers,
                          json={"device_id": device_id, "csr": csr or make_csr(tmp_path, device_id, device_id)})

    assert exchange("f-1", csr="not a csr").status_code == 422  # and the use is given back
    first = exchange("f-1")
    assert first.status_code == 200, first.text
    (tmp_path / "f-1.crt").write_text(first.json()["certificate"]["pem"])
    (tmp_path / "chain.pem").write_text(public(platform, "ca").text)
    assert openssl("verify", "-CAfile", "chain.pem", "f-1.crt", cwd=tmp_path).returncode == 0
    device = api.get("/devices/f-1").json()
    assert (device["device_type"], device["tags"], device["status"]) == ("thermo", {"line": "b"}, "provisioned")
    assert {e["actor"] for e in api.get("/devices/f-1/history").json()["events"]} == {"claim:batch 7"}
    assert exchange("f-1").status_code == 409  # once per device id
    assert exchange("f-2").status_code == 200
    assert exchange("f-3").status_code == 403  # its two uses are spent
    assert exchange("f-4", credential="iotc_nope_nope").status_code == 401
    assert exchange("f-4", credential=None).status_code == 401
    assert exchange("f-4", credential=platform.headers["Authorization"].split()[1]).status_code == 401
    [listed] = api.get("/provisioning/claims").json()["items"]
    assert (listed["used"], listed["uses"]) == (2, 2)
    other = api.post("/provisioning/claims", json={"name": "b8", "device_type": "t", "uses": 5, "valid_hours": 1}).json()
    assert api.delete(f"/provisioning/claims/{other['claim_id']}").status_code == 204
    assert exchange("f-5", credential=other["token"]).status_code == 403
    assert api.delete(f"/provisioning/claims/{claim_id}").status_code == 204


def curl_claim(platform: RunningPlatform, token: str, device_id: str, csr: str) -> tuple[int, dict[str, Any]]:
    """A factory device's first call, made with curl and nothing but the claim's token."""
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--write-out", "\n%{http_code}", "-X", "POST",
         "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
         "-d", json.dumps({"device_id": device_id, "csr": csr}), f"{platform.base_url}/api/provisioning/claim"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    body, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(body) if body else {}


def test_a_claim_token_never_takes_over_an_existing_device(
    platform: RunningPlatform, api: httpx.Client, tmp_path: Path
) -> None:
    """Given a device an operator enrolled and one of another type only registered, when a
    factory claim's token names either, then 409 with the reason, no certificate is issued, the
    enrolled device's certificate is neither superseded nor revoked (openssl still verifies it
    against the served CRL), and the claim's use is given back. A device the claim itself
    registered but could not enroll (a bad CSR) is enrolled on retry."""
    register(api, "owned-1")
    enrolled = api.put("/devices/owned-1/provision", json={"csr": make_csr(tmp_path, "owned", "owned-1")})
    assert enrolled.status_code == 200, enrolled.text
    (tmp_path / "owned.crt").write_text(enrolled.json()["certificate"]["pem"])
    api.post("/devices", json={"device_id": "pump-1", "device_type": "pump"}).raise_for_status()
    made = api.post("/provisioning/claims", json={"name": "batch 9", "device_type": "thermo", "uses": 3,
                                                  "valid_hours": 1}).json()

    code, refused = curl_claim(platform, made["token"], "owned-1", make_csr(tmp_path, "attacker", "owned-1"))
    assert code == 409 and "already exists" in refused["error"]["message"], refused
    code, refused = curl_claim(platform, made["token"], "pump-1", make_csr(tmp_path, "pump", "pump-1"))
    assert code == 409 and "already exists" in refused["error"]["message"], refused

    [kept] = api.get("/devices/owned-1/certificates").json()["items"]
    assert (kept["serial"], kept["superseded_at"], kept["revoked_at"]) == (
        enrolled.json()["certificate"]["serial"], None, None)
    assert api.get("/devices/pump-1").json()["status"] == "registered"
    assert api.get("/devices/pump-1/certificates").json()["items"] == []
    (tmp_path / "chain.pem").write_text(public(platform, "ca").text)
    (tmp_path / "crl.pem").write_bytes(public(platform, "crl").content)
    still = openssl("verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "chain.pem", "owned.crt", cwd=tmp_path)
    assert still.returncode == 0, still.stdout + still.stderr
    assert api.get("/provisioning/claims").json()["items"][0]["used"] == 0

    code, _ = curl_claim(platform, made["token"], "new-1", "not a csr")
    assert code == 422 and api.get("/devices/new-1").json()["device_type"] == "thermo"
    code, retried = curl_claim(platform, made["token"], "new-1", make_csr(tmp_path, "new", "new-1"))
    assert code == 200, retried
    assert api.get("/provisioning/claims").json()["items"][0]["used"] == 1
