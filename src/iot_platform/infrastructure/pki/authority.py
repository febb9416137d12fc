"""The device CA: a root and an intermediate that issues device certificates, keys encrypted
at rest; CSR checks, issuance, revocation and the CRL. Every X.509 and key operation is
`cryptography`'s; no ASN.1 is written here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iot_platform.application.devices.certificates import InvalidCsr
from iot_platform.infrastructure.files import private_directory
from iot_platform.infrastructure.pki.store import SqlCertificates, StoredCertificate

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified, "key_compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded, "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "decommissioned": x509.ReasonFlags.cessation_of_operation, "affiliation_changed": x509.ReasonFlags.affiliation_changed,
}
REVOCATION_REASONS = tuple(_REASONS)


class NoAuthority(RuntimeError):
    pass


@dataclass(frozen=True)
class Issued:
    serial: str
    fingerprint: str
    not_after: dt.datetime
    certificate_pem: str
    private_key_pem: str | None = None
    """Only when the platform made the key pair (a device that cannot make a CSR)."""
    pkcs12: bytes | None = None
    pkcs12_password: str | None = None


def device_uri(device_id: str) -> str:
    return f"urn:iot-platform:device:{device_id}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key(kind: str) -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)


_SIGNATURE_HASH = hashes.SHA256()
"""Every signature (EC P-256 or RSA-2048 keys) is over SHA-256."""


class CertificateAuthority:
    def __init__(self, cert_path: str, key_path: str, passphrase: Callable[[], bytes], key_type: str,
                 validity_days: int, crl_path: str, store: SqlCertificates) -> None:
        self._cert_path = Path(cert_path)
        self._key_path = Path(key_path)
        self._dir = self._cert_path.parent
        self._passphrase = passphrase
        self._key_type = key_type
        self._validity = dt.timedelta(days=validity_days)
        self._crl_path = Path(crl_path)
        self._store = store
        self._loaded: tuple[x509.Certificate, PrivateKey] | None = None

    # -- the CA itself --------------------------------------------------------------------
    @property
    def chain_path(self) -> Path:
        return self._dir / "chain.pem"

    def exists(self) -> bool:
        return self._cert_path.exists() and self._key_path.exists()

    def init(self, force: bool = False) -> None:
        """A root (10 years) and an intermediate (5 years) that issues device certificates."""
        if self.exists() and not force:
            raise FileExistsError(f"a CA exists at {self._cert_path}; pass force to replace it")
        private_directory(self._dir)
        root_key, ca_key = _new_key(self._key_type), _new_key(self._key_type)
        root_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iot-platform"),
                               x509.NameAttribute(NameOID.COMMON_NAME, "iot-platform device root CA")])
        ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iot-platform"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "iot-platform device issuing CA")])
        now = _now()
        root = self._ca_certificate(root_name, root_name, root_key.public_key(), root_key, now,
                                    dt.timedelta(days=3650), path_length=1)
        ca = self._ca_certificate(ca_name, root_name, ca_key.public_key(), root_key, now,
                                  dt.timedelta(days=1825), path_length=0)
        self._write_key(self._dir / "root.key", root_key)
        (self._dir / "root.crt").write_bytes(root.public_bytes(serialization.Encoding.PEM))
        self._write_key(self._key_path, ca_key)
        self._cert_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.chain_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM)
                                    + root.public_bytes(serialization.Encoding.PEM))
        self._loaded = None

    def import_ca(self, cert_pem: bytes, key_pem: bytes, key_password: bytes | None,
                  chain_pem: bytes | None = None) -> None:
        """An existing issuing CA (its certificate, key and, optionally, the chain above it)."""
        certificate = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, key_password)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("the CA key must be EC or RSA")
        if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
            raise ValueError("the CA key does not belong to the CA certificate")
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            raise ValueError("the certificate is not a CA (BasicConstraints ca=false)")
        private_directory(self._dir)
        self._write_key(self._key_path, key)
        self._cert_path.write_bytes(cert_pem)
        self.chain_path.write_bytes(cert_pem + (chain_pem or b""))
        self._loaded = None

    def _ca_certificate(self, subject: x509.Name, issuer: x509.Name, public_key: object, signer: PrivateKey,
                        now: dt.datetime, lifetime: dt.timedelta, path_length: int) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        )
        if subject != issuer:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        return builder.sign(signer, _SIGNATURE_HASH)

    def _write_key(self, path: Path, key: PrivateKey) -> None:
        encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(self._passphrase()))
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(encrypted)

    def _issuer(self) -> tuple[x509.Certificate, PrivateKey]:
        if self._loaded is None:
            if not self.exists():
                raise NoAuthority(f"no device CA at {self._cert_path}: run iot-platform ca init")
            certificate = x509.load_pem_x509_certificate(self._cert_path.read_bytes())
            key = serialization.load_pem_private_key(self._key_path.read_bytes(), self._passphrase())
            assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
            self._loaded = (certificate, key)
        return self._loaded

    def chain(self) -> str:
        self._issuer()
        return self.chain_path.read_text()

    # -- the platform's own certificates --------------------------------------------------
    def service_certificate(self, name: str, common_name: str, key_password: bytes,
                            server_hosts: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """A certificate for the platform itself (the embedded broker's server side, or its
        own client identity), made or renewed when missing, within 30 days of expiry, or when
        its key does not open with ``key_password`` (kept unencrypted by an older release, or
        sealed under another encryption key). The key is encrypted at rest (PKCS#8, mode 0600)."""
        cert_path, key_path = self._dir / f"{name}.crt", self._dir / f"{name}.key"
        if cert_path.exists() and key_path.exists():
            current = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if (current.not_valid_after_utc - _now() > dt.timedelta(days=30)
                    and _opens(key_path.read_bytes(), key_password)):
                return cert_path, key_path
        return self.issue_service_certificate(self._dir, name, common_name, key_password, server_hosts)

    def issue_service_certificate(self, directory: Path, name: str, common_name: str,
                                  key_password: bytes | None, server_hosts: tuple[str, ...] = (),
                                  days: int = 365) -> tuple[Path, Path]:
        """``name.crt`` and ``name.key`` (mode 0600) in ``directory``, from the issuing CA: a
        server certificate for ``server_hosts`` (IP addresses or DNS names) if any are given,
        else a client one. The key is encrypted under ``key_password``; None leaves it in the
        clear, for a server such as Mosquitto that cannot be given a passphrase."""
        ca_cert, ca_key = self._issuer()
        key = _new_key("ec")
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if server_hosts:
            names: list[x509.GeneralName] = []
            for host in server_hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(ca_key, _SIGNATURE_HASH)
        directory.mkdir(parents=True, exist_ok=True)  # an operator's directory keeps its mode
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(key_password) if key_password else serialization.NoEncryption())
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # a file that was there keeps its mode through os.open
        with os.fdopen(descriptor, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    # -- device certificates --------------------------------------------------------------
    def check_csr(self, device_id: str, csr_pem: str) -> x509.CertificateSigningRequest:
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as exc:
            raise InvalidCsr(f"not a PEM certificate signing request: {exc}") from None
        if not csr.is_signature_valid:
            raise InvalidCsr("the CSR's signature does not verify")
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [n.value for n in names] != [device_id]:
            raise InvalidCsr(f"the CSR's subject CN must be the device id {device_id!r}")
        return csr

    async def issue(self, device_id: str, csr_pem: str | None) -> Issued:
        """A client certificate for the device, from its CSR, or with a key pair made here
        (returned once, as PEM and as PKCS#12 with a one-time password)."""
        key: PrivateKey | None = None
        if csr_pem is not None:
            public_key = self.check_csr(device_id, csr_pem).public_key()
        else:
            key = _new_key("ec")
            public_key = key.public_key()
        ca_cert, ca_key = self._issuer()
        now = _now()
        serial = x509.random_serial_number()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(ca_cert.subject).public_key(public_key)
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + self._validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(device_uri(device_id))]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, _SIGNATURE_HASH)
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        issued = Issued(serial=f"{serial:x}", fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
                        not_after=certificate.not_valid_after_utc, certificate_pem=pem)
        await self._store.add(StoredCertificate(
            serial=issued.serial, device_id=device_id, fingerprint=issued.fingerprint,
            not_after=issued.not_after, issued_at=now, pem=pem))
        if key is None:
            return issued
        password = secrets.token_urlsafe(12)
        bundle = pkcs12.serialize_key_and_certificates(
            device_id.encode(), key, certificate, [ca_cert],
            serialization.BestAvailableEncryption(password.encode()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return Issued(issued.serial, issued.fingerprint, issued.not_after, pem, key_pem, bundle, password)

    async def revoke(self, serial: str, reason: str) -> bool:
        revoked = await self._store.revoke(serial, reason, _now())
        if revoked:
            await self.publish_crl()
        return revoked

    async def crl(self) -> x509.CertificateRevocationList:
        ca_cert, ca_key = self._issuer()
        now = _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
                   .last_update(now).next_update(now + dt.timedelta(days=1)))
        for entry in await self._store.revoked():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(entry.serial, 16))
                .revocation_date(entry.revoked_at or now)
                .add_extension(x509.CRLReason(_REASONS.get(entry.reason or "", x509.ReasonFlags.unspecified)),
                               critical=False)
                .build())
        return builder.sign(ca_key, _SIGNATURE_HASH)

    async def publish_crl(self) -> x509.CertificateRevocationList:
        """Regenerates the CRL and writes it where brokers read it (``security.crl_path``)."""
        crl = await self.crl()
        private_directory(self._crl_path.parent)
        temporary = self._crl_path.with_suffix(".tmp")
        temporary.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        temporary.replace(self._crl_path)
        return crl


def _opens(key_pem: bytes, password: bytes) -> bool:
    """An encrypted key that ``password`` opens (an unencrypted one does not count)."""
    try:
        serialization.load_pem_private_key(key_pem, password)
    except (TypeError, ValueError):  # TypeError: not encrypted; ValueError: another password
        return False
    return True
