"""Mutual TLS in the embedded broker (``security.mutual_tls_required``): amqtt plugins that
admit a client only with a certificate from the device CA that the CRL does not list, take the
certificate's CN as its identity, and confine a device to its own topics, as the Mosquitto
listener of a scaled-out install does with ``use_identity_as_username`` and an ACL.

The TLS handshake itself (chain verification) is amqtt's, with the device CA as its ``cafile``.
The CRL is read from ``security.crl_path``, which the platform rewrites on every revocation,
so a revoked certificate is refused from its next connection on, without a reload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from cryptography import x509
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)

SERVICE_IDENTITY = "iot-platform"
"""The CN of the platform's own service certificate: it may use every topic."""
_DEVICE_ROOTS = ("devices", "sensors")


class _Crl:
    """The CRL file, re-read when it changes."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._stamp: float | None = None
        self._crl: x509.CertificateRevocationList | None = None

    def revoked(self, serial: int) -> bool:
        stamp = self._path.stat().st_mtime_ns if self._path.exists() else None
        if stamp != self._stamp:
            self._crl = x509.load_pem_x509_crl(self._path.read_bytes()) if stamp is not None else None
            self._stamp = stamp
        return self._crl is not None and self._crl.get_revoked_certificate_by_serial_number(serial) is not None


_crls: dict[str, _Crl] = {}


class DeviceCertificateAuth(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    @dataclass
    class Config:
        crl_file: str

    async def authenticate(self, *, session: Session) -> bool | None:
        der = session.ssl_object.getpeercert(binary_form=True) if session.ssl_object else None
        if not der:
            log.info("MQTT client %s refused: no client certificate", session.client_id)
            return False
        certificate = x509.load_der_x509_certificate(der)
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1:
            return False
        crl = _crls.setdefault(self.config.crl_file, _Crl(self.config.crl_file))
        if crl.revoked(certificate.serial_number):
            log.info("MQTT client %s refused: certificate %x is revoked", session.client_id,
                     certificate.serial_number)
            return False
        session.username = str(names[0].value)
        return True


class DeviceTopics(BaseTopicPlugin):  # type: ignore[misc]
    @dataclass
    class Config:
        service_identity: str = SERVICE_IDENTITY

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        identity = session.username if session is not None else None
        if identity is None or topic is None:
            return False
        if identity == self.config.service_identity:
            return True
        parts = topic.split("/")
        return len(parts) >= 2 and parts[0] in _DEVICE_ROOTS and parts[1] == identity
