"""TLS for the platform's MQTT connections (``mqtts://``): the broker is checked against the
configured CA chain, and the platform presents its own service certificate."""

from __future__ import annotations

import ssl

import aiomqtt

from iot_platform.config import MqttSettings


def tls_parameters(settings: MqttSettings, service: tuple[str, str, str] | None = None
                   ) -> aiomqtt.TLSParameters | None:
    """``service``: (CA chain, certificate, key) of the platform's own identity, for the
    embedded broker's mutual-TLS listener; otherwise the ``mqtt.tls_*`` settings."""
    if service is not None:
        ca, cert, key = service
        return aiomqtt.TLSParameters(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED,
                                     tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if not settings.tls:
        return None
    return aiomqtt.TLSParameters(
        ca_certs=settings.tls_ca_file or None,
        certfile=settings.tls_cert_file or None,
        keyfile=settings.tls_key_file or None,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
