"""X.509 provisioning end to end, where the process is the point: a generated key never reaches
the platform's log, and a factory device's first call is made with curl. The rest of
provisioning (openssl as the device and the verifier) is in tests/api/test_pki.py, in process.
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
