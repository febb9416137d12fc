"""The platform in process, as ``make run`` builds it on its embedded defaults, in a temp dir.

The REST tests of this package drive the FastAPI app over ASGI (no sockets for HTTP), with the
same composition root and settings the ``serve`` command uses. The embedded broker, CoAP and
LoRaWAN listeners still start, on free loopback ports, so start-up is the real one. Each test
gets a platform of its own (``platform``, ``api``), on SQLite and on PostgreSQL: the tests
register the same device ids, and the rate limits they meet are per platform.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
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


class PortalTransport(httpx.BaseTransport):
    """A blocking client's requests, each handed to ``httpx.ASGITransport`` on the loop the app
    runs on (a portal's thread), so the tests read as plain calls while the platform's own tasks
    (projections, sinks, listeners) run beside the requests as they do in ``serve``."""

    def __init__(self, portal: BlockingPortal, app: FastAPI) -> None:
        self._portal = portal
        self._asgi = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def round_trip() -> httpx.Response:
            answered = await self._asgi.handle_async_request(request)
            raw = b"".join([chunk async for chunk in answered.aiter_raw()])
            return httpx.Response(answered.status_code, headers=answered.headers, stream=httpx.ByteStream(raw),
                                  extensions=answered.extensions)

        return self._portal.call(round_trip)


@dataclass
class InProcessPlatform:
    """The app with its lifespan started, in ``workdir`` (the working directory, as for
    ``serve``); what the e2e tests' ``RunningPlatform`` is, without the process."""

    app: FastAPI
    portal: BlockingPortal
    workdir: Path
    headers: dict[str, str] = field(default_factory=lambda: {"Authorization": f"Bearer {ADMIN_KEY}"})
    """What an admin sends: the configured admin API key."""

    def client(self, headers: dict[str, str] | None = None, base: str = "") -> httpx.Client:
        """A client of the app at ``base`` (``/api`` for the REST routes) sending ``headers``
        (none: no credentials)."""
        return httpx.Client(transport=PortalTransport(self.portal, self.app), base_url=f"http://testserver{base}",
                            headers=headers or {}, timeout=30)


@contextmanager
def in_process_platform(workdir: Path, monkeypatch: pytest.MonkeyPatch, database_url: str,
                        **sections: dict[str, Any]) -> Iterator[InProcessPlatform]:
    """The app built in ``workdir`` on ``database_url``, its lifespan run on a portal's loop
    for as long as the block lasts."""
    app = app_in(workdir, monkeypatch, eventstore={"url": database_url}, **sections)
    with start_blocking_portal("asyncio") as portal, portal.wrap_async_context_manager(
        app.router.lifespan_context(app)
    ):
        yield InProcessPlatform(app, portal, workdir)


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform_database_url: str) -> Iterator[InProcessPlatform]:
    with in_process_platform(tmp_path, monkeypatch, platform_database_url) as running:
        yield running


@pytest.fixture
def web(platform: InProcessPlatform) -> Iterator[httpx.Client]:
    """The app at its root, with no credentials."""
    with platform.client() as client:
        yield client


@pytest.fixture
def api(platform: InProcessPlatform) -> Iterator[httpx.Client]:
    """The REST API as the admin, at ``/api``."""
    with platform.client(platform.headers, "/api") as client:
        yield client


async def status_of(app: FastAPI, method: str, path: str, credential: str | None) -> int:
    """The status an ASGI call answers with; the call is abandoned once it is known (so the SSE
    streams and long polls end at once). A ``{}`` JSON body goes with every method."""
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    body_sent = False
    headers = [(b"content-type", b"application/json"), (b"host", b"testserver")]
    if credential is not None:
        headers.append((b"authorization", f"Bearer {credential}".encode()))
    raw_path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(),
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        await asyncio.shield(started)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and not started.done():
            started.set_result(message["status"])

    call = asyncio.create_task(app(scope, receive, send))
    try:
        await asyncio.wait({call, started}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            call.result()  # raised before answering: show why
        return started.result()
    finally:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
