"""The platform in process, as ``make run`` builds it on its embedded defaults, in a temp dir.

The REST tests of this package drive the FastAPI app over ASGI (no sockets for HTTP), with the
same composition root and settings the ``serve`` command uses. The embedded broker, CoAP and
LoRaWAN listeners still start, on free loopback ports, so start-up is the real one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from iot_platform.config import Settings, load_settings
from iot_platform.presentation.rest.app import create_app
from tests.e2e.platform_process import ADMIN_KEY, free_port, free_udp_port


def embedded_settings(**sections: dict[str, Any]) -> Settings:
    """The defaults (config.yaml's, relative to the working directory) on free loopback ports,
    with the admin API key the e2e tests use; ``sections`` override more."""
    return load_settings(
        None,
        mqtt={"broker_url": f"mqtt://127.0.0.1:{free_port()}"},
        coap={"port": free_udp_port()},
        lorawan={"port": free_udp_port()},
        security={"admin_api_key": ADMIN_KEY},
        **sections,
    )


def app_in(workdir: Path, monkeypatch: pytest.MonkeyPatch, **sections: dict[str, Any]) -> FastAPI:
    """A fresh app whose working directory is ``workdir`` (as ``make run`` makes ./data first),
    so nothing lands in the checkout. Whoever drives it starts it (its lifespan, or
    ``platform.start()``)."""
    monkeypatch.chdir(workdir)
    (workdir / "data").mkdir()
    return create_app(embedded_settings(**sections))


@pytest.fixture
def app_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FastAPI]:
    yield app_in(tmp_path, monkeypatch)
