"""The device CA and what is provisioned from it: X.509 certificates and claim tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from iot_platform.application.devices.certificates import CertificateProvisioning
from iot_platform.application.devices.claims import ClaimProvisioning
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.composition.adapters import Adapters
from iot_platform.config import Settings
from iot_platform.infrastructure.pki.authority import CertificateAuthority
from iot_platform.infrastructure.pki.claims import SqlClaims
from iot_platform.infrastructure.pki.store import SqlCertificates


@dataclass
class Pki:
    authority: CertificateAuthority
    issued: SqlCertificates
    certificates: CertificateProvisioning
    claims: ClaimProvisioning
    claim_store: SqlClaims


def pki_from(settings: Settings, adapters: Adapters, devices: DeviceCommandHandler) -> Pki:
    security, box = settings.security, adapters.secrets
    issued = SqlCertificates(adapters.engine)
    passphrase = security.ca_key_passphrase.get_secret_value()
    authority = CertificateAuthority(
        security.ca_cert_path, security.ca_key_path,
        (lambda: passphrase.encode()) if passphrase else (lambda: box.derive(b"iot-platform ca keys").hex().encode()),
        security.ca_key_type, security.device_cert_validity_days, security.crl_path, issued)
    certificates = CertificateProvisioning(devices, authority, issued,
                                           timedelta(hours=security.renewal_overlap_hours), adapters.clock)
    claim_store = SqlClaims(adapters.engine)
    return Pki(authority, issued, certificates,
               ClaimProvisioning(claim_store, devices, certificates, adapters.clock), claim_store)
