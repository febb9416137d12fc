"""Who may use the embedded broker (amqtt auth plugins), and which topics (``topic_allowed``,
which the broker asks itself).

Every client is one of three identities:

- the platform itself (``SERVICE_IDENTITY``): by the internal password made from the
  platform's encryption key (``BrokerAccess.service_secret``), or, under mutual TLS, by its
  service certificate. Only it may use the platform's client ids (``mqtt.client_id`` and
  ``<client_id>-...``), so no one can take over its sessions, and only it may subscribe
  with wildcards or use any topic;
- a device: MQTT username = device id and password = a device token or API key issued over
  REST for that device (``DeviceCredentialAuth``), or, under mutual TLS, a certificate from
  the device CA that the CRL does not list, its CN being the device id
  (``DeviceCertificateAuth``). A device is confined to ``devices/<id>/...`` and
  ``sensors/<id>/...`` (``topic_allowed``, the ACL the Mosquitto listener applies with
  ``pattern readwrite devices/%u/#``), without wildcards: it cannot read another device's
  commands, publish its readings, acknowledge its commands or mark it offline, nor leave a
  last will on another device's topic;
- anonymous (no username), admitted only while ``security.allow_anonymous_devices`` is
  ``loopback`` (start-up refuses that with a listener off loopback): a local client, trusted
  with any concrete topic as Mosquitto 2.0's local-only mode trusts it, but never with
  wildcards nor with the platform's client ids.

The TLS handshake itself (chain verification) is amqtt's, with the device CA as its ``cafile``.
The CRL is read from ``security.crl_path``, which the platform rewrites on every revocation,
so a revoked certificate is refused from its next connection on, without a reload.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin
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


@dataclass
class BrokerAccess:
    """What the plain listener's plugins need to know: the default admits anonymous local
    clients only (as a bare broker in a test)."""

    allow_anonymous: bool = True
    service_secret: str = field(default="", repr=False)
    """The platform's own password (username ``SERVICE_IDENTITY``); empty: none logs in so."""
    platform_client_id: str = SERVICE_IDENTITY
    """``mqtt.client_id``: it and ``<it>-...`` are the platform's sessions, no one else's."""
    device_for: Callable[[str, str | None], Awaitable[str | None]] | None = field(default=None, repr=False)
    """The device a password credential is bound to, given the client's address (whose failed
    attempts are budgeted as over REST)."""
    """The device a credential (device token or API key) is bound to, or None."""
    refusals: Counter[str] = field(default_factory=Counter, compare=False)
    """Connections refused, by reason (``iot_mqtt_connections_refused``)."""

    def refuse(self, reason: str, client_id: str | None, detail: str) -> bool:
        self.refusals[reason] += 1
        log.info("MQTT client %r refused: %s", client_id, detail)  # %r: a client id may hold a newline
        return False


def reserved_client_id(client_id: str | None, platform_client_id: str) -> bool:
    """The platform's own sessions: its client id and the ones it derives (``<id>-commands``)."""
    return bool(client_id) and (client_id == platform_client_id or
                                str(client_id).startswith(f"{platform_client_id}-"))


def topic_allowed(identity: str | None, topic: str, action: Action | str, *, anonymous: bool,
                  service_identity: str = SERVICE_IDENTITY) -> bool:
    """The ACL: the platform anything; nobody else a wildcard subscription; an admitted
    anonymous client any concrete topic; a device its own topics only."""
    if identity is not None and identity == service_identity:
        return True
    if action == Action.SUBSCRIBE and ("#" in topic or "+" in topic):
        return False
    if identity is None:
        return anonymous
    parts = topic.split("/")
    return len(parts) >= 2 and parts[0] in _DEVICE_ROOTS and parts[1] == identity


def _will_allowed(session: Session, identity: str | None, anonymous: bool) -> bool:
    """A last will is published by the broker on the client's behalf, past the topic ACL:
    it is checked at connection, as Mosquitto does."""
    if not session.will_flag or session.will_topic is None:
        return True
    return topic_allowed(identity, session.will_topic, Action.PUBLISH, anonymous=anonymous)


class DeviceCredentialAuth(BaseAuthPlugin):  # type: ignore[misc]
    """The plain listener: the platform by its internal password, devices by a credential
    issued for them over REST, anonymous clients only if allowed."""

    @dataclass
    class Config:
        access: Any  # a BrokerAccess (callables do not pass dacite's type check otherwise)

    async def authenticate(self, *, session: Session) -> bool | None:
        access: BrokerAccess = self.config.access
        username, password, client_id = session.username, session.password, session.client_id
        if username == SERVICE_IDENTITY:
            if access.service_secret and password is not None and hmac.compare_digest(
                    str(password).encode(), access.service_secret.encode()):
                return True
            return access.refuse("bad_credentials", client_id, f"wrong password for {SERVICE_IDENTITY}")
        if reserved_client_id(client_id, access.platform_client_id):
            return access.refuse("reserved_client_id", client_id, "that client id is the platform's own")
        if not username:
            if not access.allow_anonymous:
                return access.refuse("no_credentials", client_id,
                                     "no username (security.allow_anonymous_devices: never)")
            session.username = None
        elif password is None or access.device_for is None or await access.device_for(str(password), session.remote_address) != username:
            return access.refuse("bad_credentials", client_id, f"no valid credential for device {username!r}")
        if not _will_allowed(session, session.username, access.allow_anonymous):
            return access.refuse("foreign_will", client_id, "its last will names a topic it may not publish to")
        return True


class DeviceCertificateAuth(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    @dataclass
    class Config:
        crl_file: str
        access: Any = None  # a BrokerAccess: the platform's client id, the refusal counts

    async def authenticate(self, *, session: Session) -> bool | None:
        access: BrokerAccess = self.config.access or BrokerAccess(allow_anonymous=False)
        der = session.ssl_object.getpeercert(binary_form=True) if session.ssl_object else None
        if not der:
            return access.refuse("no_credentials", session.client_id, "no client certificate")
        certificate = x509.load_der_x509_certificate(der)
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1:
            return access.refuse("bad_credentials", session.client_id, "a certificate without one CN")
        crl = _crls.setdefault(self.config.crl_file, _Crl(self.config.crl_file))
        if crl.revoked(certificate.serial_number):
            return access.refuse("bad_credentials", session.client_id,
                                 f"certificate {certificate.serial_number:x} is revoked")
        identity = str(names[0].value)
        if identity != SERVICE_IDENTITY and reserved_client_id(session.client_id, access.platform_client_id):
            return access.refuse("reserved_client_id", session.client_id, "that client id is the platform's own")
        if not _will_allowed(session, identity, anonymous=False):
            return access.refuse("foreign_will", session.client_id,
                                 "its last will names a topic it may not publish to")
        session.username = identity
        return True
