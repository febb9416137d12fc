"""TLS for the platform's MQTT connections (``mqtts://``): the broker is checked against the
configured CA chain, and the platform presents its own service certificate."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

import aiomqtt

from iot_platform.config import MqttSettings


@dataclass(frozen=True)
class ServiceIdentity:
    """The platform's own client identity for the embedded broker's mutual-TLS listener: the
    device CA chain, its certificate, and its key, encrypted at rest under ``key_password``."""

    ca_file: str
    cert_file: str
    key_file: str
    key_password: str = field(repr=False)


def tls_parameters(settings: MqttSettings, service: ServiceIdentity | None = None
                   ) -> aiomqtt.TLSParameters | None:
    """``service`` for the embedded broker's mutual-TLS listener; otherwise the ``mqtt.tls_*``
    settings."""
    if service is not None:
        return aiomqtt.TLSParameters(ca_certs=service.ca_file, certfile=service.cert_file,
                                     keyfile=service.key_file, keyfile_password=service.key_password,
                                     cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if not settings.tls:
        return None
    return aiomqtt.TLSParameters(
        ca_certs=settings.tls_ca_file or None,
        certfile=settings.tls_cert_file or None,
        keyfile=settings.tls_key_file or None,
        keyfile_password=settings.tls_key_password.get_secret_value() or None,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
