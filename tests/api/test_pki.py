"""X.509 provisioning in process (both event stores), with openssl as the device and as the
verifier.

Given a platform (which made its device CA on first start), a CSR made by ``openssl req`` is
turned into a certificate that ``openssl verify`` accepts against the served chain; a renewal
keeps the old certificate until it is revoked; a revoked certificate fails ``openssl verify
-crl_check`` against the served CRL; decommissioning revokes them all; a factory claim is
exchanged once per device within its uses.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.conftest import InProcessPlatform
from tests.api.test_device_api import assert_unprocessable
from tests.e2e.test_pki import make_csr, openssl
from tests.e2e.test_telemetry import register


def public(platform: InProcessPlatform, path: str) -> httpx.Response:
    """The CA's chain and CRL need no credentials."""
    with platform.client() as web:
        return web.get(f"/api/pki/{path}")


def test_a_csr_becomes_a_certificate_that_openssl_verifies_against_the_served_chain(
    platform: InProcessPlatform, api: httpx.Client, tmp_path: Path
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


def test_bad_csrs_are_422_naming_the_csr(platform: InProcessPlatform, api: httpx.Client, tmp_path: Path) -> None:
    register(api, "sensor-1")
    assert_unprocessable(api.put("/devices/sensor-1/provision", json={"csr": make_csr(tmp_path, "other", "sensor-2")}), "csr")
    assert_unprocessable(api.put("/devices/sensor-1/provision", json={"csr": "-----BEGIN CERTIFICATE REQUEST-----\nnope"}), "csr")
    assert api.get("/devices/sensor-1").json()["status"] == "registered"
    assert api.put("/devices/ghost/provision", json={}).status_code == 404


def test_renewal_overlap_revocation_crl_and_decommissioning(platform: InProcessPlatform, api: httpx.Client, tmp_path: Path) -> None:
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
    platform: InProcessPlatform, api: httpx.Client, tmp_path: Path
) -> None:
    made = api.post("/provisioning/claims", json={"name": "batch 7", "device_type": "thermo", "uses": 2,
                                                  "valid_hours": 1, "tags": {"line": "b"}})
    assert made.status_code == 201, made.text
    token, claim_id = made.json()["token"], made.json()["claim_id"]
    assert token not in str(api.get("/provisioning/claims").json())

    def exchange(device_id: str, credential: str | None = token, csr: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        with platform.client(headers) as device:
            return device.post("/api/provisioning/claim", json={"device_id": device_id,
                                                             "csr": csr or make_csr(tmp_path, device_id, device_id)})

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
