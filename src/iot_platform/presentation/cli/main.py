"""The ``iot-platform`` command line: serve, database migrations, projections."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from iot_platform.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:  # the heavy imports wait until a command needs them
    from sqlalchemy.ext.asyncio import AsyncEngine

    from iot_platform.bootstrap import Platform

T = TypeVar("T")


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    """Loads settings, or stops with the one line that names the bad key."""
    try:
        settings = load_settings(ctx.obj["config"], **overrides)
    except ConfigError as exc:
        click.echo(f"iot-platform: {exc}", err=True)
        sys.exit(2)
    logging.basicConfig(
        level=settings.api.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic announces every plugin and migration step at INFO; start-up needs none of it.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return settings


@click.group()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="IOT_CONFIG",
    help="config.yaml to read (default: ./config.yaml if present).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """iot-platform: an event-sourced IoT device platform."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


@cli.command()
@click.option("--host", help="Override api.host.")
@click.option("--port", type=int, help="Override api.port.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the platform: REST API, projections and (later) protocol listeners."""
    import uvicorn

    from iot_platform.presentation.rest.app import create_app

    api: dict[str, Any] = {}
    if host:
        api["host"] = host
    if port:
        api["port"] = port
    settings = _settings(ctx, **({"api": api} if api else {}))
    # Ingestion allocates a short-lived object graph per message; with the default thresholds
    # the cyclic collector took over half the CPU at saturation (tools/bench_ingest.py). Rarer
    # young-generation passes, and the start-up heap frozen out of every later pass.
    gc.set_threshold(50_000, 50, 1000)
    gc.freeze()
    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.api.log_level,
        lifespan="on",
    )


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


def _with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Runs ``work`` on an engine for the configured database, and closes it."""
    from iot_platform.infrastructure.persistence.database import create_engine

    async def main() -> T:
        engine = create_engine(settings.eventstore.url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _with_platform(settings: Settings, work: Callable[[Platform], Awaitable[T]]) -> T:
    """Runs ``work`` on a migrated platform whose projections do not run by themselves."""
    from iot_platform.bootstrap import build_platform

    async def main() -> T:
        platform = build_platform(settings)
        try:
            await platform.start(serve=False)
            return await work(platform)
        finally:
            await platform.stop()

    return asyncio.run(main())


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply migrations up to REVISION."""
    from iot_platform.infrastructure.persistence import migrate

    async def upgrade(engine: AsyncEngine) -> str | None:
        await migrate.upgrade(engine, revision)
        return await migrate.current_revision(engine)

    click.echo(f"database at revision {_with_engine(_settings(ctx), upgrade)}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Print the database's migration revision."""
    from iot_platform.infrastructure.persistence import migrate

    current = _with_engine(_settings(ctx), migrate.current_revision)
    click.echo(f"{current or 'empty'} (head is {migrate.head_revision()})")


@cli.group()
def projections() -> None:
    """Read models built from the event store."""


@projections.command("rebuild")
@click.option("--name", "names", multiple=True, help="Only this projection (repeatable).")
@click.pass_context
def projections_rebuild(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Drop the read models and rebuild them from every stored event."""

    async def rebuild(platform: Platform) -> int:
        return await platform.projections.rebuild(names or None)

    click.echo(f"rebuilt from {_with_platform(_settings(ctx), rebuild)} events")


@projections.command("status")
@click.pass_context
def projections_status(ctx: click.Context) -> None:
    """Each projection's checkpoint against the event store's last position."""

    async def status(platform: Platform) -> list[str]:
        last = await platform.store.last_position()
        lines = [f"event store at position {last}"]
        for name in platform.projections.names:
            at = await platform.projections.checkpoint(name)
            lines.append(f"{name}: {at} ({last - at} behind)")
        return lines

    for line in _with_platform(_settings(ctx), status):
        click.echo(line)


if __name__ == "__main__":
    cli()
