"""The embedded MQTT broker's side of the wiring: who it admits, the platform's own login to
it, and, under mutual TLS, the files of its listener and of the platform's client identity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import SecretStr

from iot_platform.application.access.service import AccessService
from iot_platform.application.limits import Throttled
from iot_platform.config import Settings
from iot_platform.infrastructure.mqtt.broker_security import SERVICE_IDENTITY, BrokerAccess
from iot_platform.infrastructure.mqtt.embedded_broker import MutualTls
from iot_platform.infrastructure.mqtt.tls import ServiceIdentity
from iot_platform.infrastructure.pki.authority import CertificateAuthority


def mutual_tls(settings: Settings, key_password: str) -> tuple[MutualTls | None, ServiceIdentity | None]:
    """With ``security.mutual_tls_required`` and the embedded broker: its listener's files, and
    the platform's own client identity (both certificates made at start from the device CA,
    their keys encrypted under ``key_password``, derived from the encryption key)."""
    if not (settings.security.mutual_tls_required and settings.mqtt.embedded_broker):
        return None, None
    pki = Path(settings.security.ca_cert_path).parent
    chain = str(pki / "chain.pem")
    return (MutualTls(chain, str(pki / "broker.crt"), str(pki / "broker.key"), key_password,
                      settings.security.crl_path),
            ServiceIdentity(chain, str(pki / "platform.crt"), str(pki / "platform.key"), key_password))


def issue_service_certificates(authority: CertificateAuthority, broker_tls: MutualTls, host: str) -> None:
    """The broker's listener certificate and the platform's client certificate, renewed at
    every start from the device CA."""
    password = broker_tls.key_password.encode()
    authority.service_certificate("broker", host, password, tuple(dict.fromkeys((host, "127.0.0.1", "localhost"))))
    authority.service_certificate("platform", SERVICE_IDENTITY, password)


def platform_broker_login(settings: Settings, secret: str) -> Settings:
    """The platform's own login to its embedded broker's plain listener: the service identity
    and a password derived from the encryption key (the same in every process of one platform,
    never logged). Under mutual TLS its service certificate is its login instead."""
    mqtt = settings.mqtt
    if not mqtt.embedded_broker or settings.security.mutual_tls_required:
        return settings
    login = mqtt.model_copy(update={"username": SERVICE_IDENTITY, "password": SecretStr(secret)})
    return settings.model_copy(update={"mqtt": login})


def broker_access(settings: Settings) -> BrokerAccess:
    """Who the embedded broker admits: the platform by the login above, a device by a device
    token or API key issued for it (``device_of``, given at start), anonymous clients only
    under allow_anonymous_devices: loopback (which start-up allows only on loopback)."""
    mqtt = settings.mqtt
    return BrokerAccess(
        allow_anonymous=settings.security.allow_anonymous_devices == "loopback",
        service_secret=mqtt.password.get_secret_value() if mqtt.username == SERVICE_IDENTITY else "",
        platform_client_id=mqtt.client_id,
    )


def device_of(access: AccessService) -> Callable[[str, str | None], Awaitable[str | None]]:
    """The device a credential presented as an MQTT password is bound to, if any. A client
    address whose credentials keep failing is refused for a while, as over REST, so the broker
    is no faster a way to guess keys than the API."""

    async def device_for(credential: str, client: str | None) -> str | None:
        try:
            principal = await access.authenticate(credential, client)
        except Throttled:
            return None
        if principal is None or not principal.may("telemetry:write"):
            return None
        return principal.device_id

    return device_for
