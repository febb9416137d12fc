"""The platform's own certificates (the embedded broker's server side and its own client
identity) on disk: their keys are encrypted at rest and open only with the service key
passphrase, and one left unencrypted, or sealed under another passphrase, is replaced."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iot_platform.infrastructure.mqtt.embedded_broker import EmbeddedBroker, MutualTls
from iot_platform.infrastructure.pki.authority import CertificateAuthority
from tests.e2e.platform_process import free_port

PASSWORD = b"derived-service-key-passphrase"


def authority(tmp_path: Path) -> CertificateAuthority:
    pki = tmp_path / "pki"
    ca = CertificateAuthority(str(pki / "ca.crt"), str(pki / "ca.key"), lambda: b"ca-passphrase", "ec", 365,
                              str(pki / "crl.pem"), store=None)  # type: ignore[arg-type]  # no device certificates here
    ca.init()
    return ca


def test_a_service_key_is_encrypted_at_rest_and_serves_a_tls_context(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    cert_path, key_path = ca.service_certificate("broker", "127.0.0.1", PASSWORD, ("127.0.0.1", "localhost"))
    assert key_path.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert key_path.stat().st_mode & 0o777 == 0o600
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path, PASSWORD.decode())  # what the broker does
    names = x509.load_pem_x509_certificate(cert_path.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_a_service_certificate_still_valid_is_kept(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    cert_path, _ = ca.service_certificate("platform", "iot-platform", PASSWORD)
    first = cert_path.read_bytes()
    ca.service_certificate("platform", "iot-platform", PASSWORD)
    assert cert_path.read_bytes() == first


def test_a_key_left_unencrypted_or_sealed_under_another_passphrase_is_replaced(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    cert_path, key_path = ca.service_certificate("platform", "iot-platform", PASSWORD)
    key_path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ca.service_certificate("platform", "iot-platform", PASSWORD)
    key = serialization.load_pem_private_key(key_path.read_bytes(), PASSWORD)
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert key.public_key() == certificate.public_key()
    ca.service_certificate("platform", "iot-platform", b"another-encryption-key")
    assert serialization.load_pem_private_key(key_path.read_bytes(), b"another-encryption-key")


@pytest.mark.asyncio
async def test_a_broker_key_that_does_not_match_its_certificate_stops_the_broker_naming_both_files(
    tmp_path: Path,
) -> None:
    ca = authority(tmp_path)
    cert_path, key_path = ca.service_certificate("broker", "127.0.0.1", PASSWORD, ("127.0.0.1",))
    key_path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD)))
    tls = MutualTls(str(ca.chain_path), str(cert_path), str(key_path), PASSWORD.decode(), str(tmp_path / "crl.pem"))
    assert PASSWORD.decode() not in repr(tls)
    broker = EmbeddedBroker("127.0.0.1", free_port(), mutual_tls=tls)
    with pytest.raises(RuntimeError, match="cannot load .*broker.crt and .*broker.key"):
        await broker.start()
