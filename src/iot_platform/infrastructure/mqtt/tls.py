"""TLS for the platform's MQTT connections (``mqtts://``): the broker is checked against the
configured CA chain, and the platform presents its own service certificate."""

from __future__ import annotations

import ssl

import aiomqtt

from iot_platform.config import MqttSettings


def tls_parameters(settings: MqttSettings) -> aiomqtt.TLSParameters | None:
    if not settings.tls:
        return None
    return aiomqtt.TLSParameters(
        ca_certs=settings.tls_ca_file or None,
        certfile=settings.tls_cert_file or None,
        keyfile=settings.tls_key_file or None,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
