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

from iot_platform.config import WORKER_ROLES, ConfigError, Settings, load_settings

if TYPE_CHECKING:  # the heavy imports wait until a command needs them
    from iot_platform.composition import Platform

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
    from iot_platform.composition.operations import private_by_default

    private_by_default()  # databases, keys, the CA: whatever the platform writes is 0600/0700
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


def _roles(value: str) -> tuple[str, ...]:
    if value == "all":
        return WORKER_ROLES
    if value == "none":
        return ()
    chosen = tuple(r.strip() for r in value.split(",") if r.strip())
    unknown = [r for r in chosen if r not in WORKER_ROLES]
    if unknown:
        raise click.BadParameter(f"unknown role {unknown[0]!r}; roles: all, none or {', '.join(WORKER_ROLES)}")
    return chosen


def _tune_gc() -> None:
    # Ingestion allocates a short-lived object graph per message; with the default thresholds
    # the cyclic collector took over half the CPU at saturation (tools/bench_ingest/). Rarer
    # young-generation passes, and the start-up heap frozen out of every later pass.
    gc.set_threshold(50_000, 50, 1000)
    gc.freeze()


def _needs_kafka(settings: Settings, what: str) -> None:
    if settings.streaming.backend != "kafka":
        click.echo(f"iot-platform: {what} needs streaming.backend: kafka (IOT_STREAMING__BACKEND=kafka)", err=True)
        sys.exit(2)


@cli.command()
@click.option("--host", help="Override api.host.")
@click.option("--port", type=int, help="Override api.port.")
@click.option("--workers", default="all", show_default=True,
              help="Roles this process also runs: all, none, or a comma list of "
              + ", ".join(WORKER_ROLES) + " (others on Kafka: `iot-platform worker`).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: str) -> None:
    """Run the platform: REST API, device listeners and (by default) every worker role."""
    import uvicorn

    from iot_platform.presentation.rest.app import create_app

    api: dict[str, Any] = {}
    if host:
        api["host"] = host
    if port:
        api["port"] = port
    try:
        roles = _roles(workers)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="--workers") from None
    settings = _settings(ctx, **({"api": api} if api else {}))
    if set(roles) != set(WORKER_ROLES):
        _needs_kafka(settings, "--workers other than all")
    _tune_gc()
    uvicorn.run(
        create_app(settings, roles=roles),
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.api.log_level,
        lifespan="on",
        # The plain asyncio loop, never uvloop (which uvicorn[standard] would pick): under
        # uvloop the CoAP listener's socket drops out of the epoll set once an answer meets an
        # ICMP port-unreachable (a client that left) and the listener goes deaf for every
        # device. Every listener runs on the loop the test suite runs it on.
        loop="asyncio",
    )


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


def _with_platform(settings: Settings, work: Callable[[Platform], Awaitable[T]]) -> T:
    """Runs ``work`` on a migrated platform whose projections do not run by themselves."""
    from iot_platform.composition import build_platform

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
    from iot_platform.composition.operations import upgrade_database

    click.echo(f"database at revision {asyncio.run(upgrade_database(_settings(ctx), revision))}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Print the database's migration revision."""
    from iot_platform.composition.operations import database_revision

    current, head = asyncio.run(database_revision(_settings(ctx)))
    click.echo(f"{current or 'empty'} (head is {head})")


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
        stalls = {s.projection: s for s in await platform.projections.stalled()}
        for name in platform.projections.names:
            at = await platform.projections.checkpoint(name)
            line = f"{name}: {at} ({last - at} behind)"
            if name in stalls:
                stall = stalls[name]
                line += (f" STALLED at {stall.position} ({stall.event_type} of {stall.stream_id}, "
                         f"{stall.attempts} attempts): {stall.error}")
            lines.append(line)
        return lines

    for line in _with_platform(_settings(ctx), status):
        click.echo(line)


@projections.command("skip")
@click.argument("name")
@click.argument("position", type=click.IntRange(min=1))
@click.option("--reason", help="Why it is skipped (kept with the record).")
@click.option("--by", "by", help="Who skips it (default: the operating-system user).")
@click.pass_context
def projections_skip(ctx: click.Context, name: str, position: int, reason: str | None, by: str | None) -> None:
    """Move projection NAME past the event at POSITION it is stalled on, without applying it.

    The event stays in the store; its read model never shows it. Who, when and why are kept in
    projection_failures and logged. A running platform resumes the projection within its poll
    interval."""
    import getpass

    from iot_platform.composition.operations import NotStalled

    who = by or f"cli:{getpass.getuser()}"

    async def skip(platform: Platform) -> str:
        stall = await platform.projections.skip(name, position, who, reason)
        return (f"skipped {stall.event_type} of {stall.stream_id} at position {stall.position} "
                f"for projection {name} (by {who})")

    try:
        click.echo(_with_platform(_settings(ctx), skip))
    except NotStalled as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(WORKER_ROLES),
              help="A role to run (repeatable); processes of one role split its partitions.")
@click.option("--metrics-port", type=click.IntRange(1, 65535),
              help="Serve this worker's Prometheus metrics on api.host at this port.")
@click.pass_context
def worker(ctx: click.Context, roles: tuple[str, ...], metrics_port: int | None) -> None:
    """Run worker roles on their own, without the REST API or device listeners (Kafka only)."""
    import signal

    from prometheus_client import start_http_server

    from iot_platform.composition import build_platform

    settings = _settings(ctx)
    _needs_kafka(settings, "worker")
    _tune_gc()

    async def main() -> None:
        platform = build_platform(settings)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        if metrics_port is not None:
            start_http_server(metrics_port, addr=settings.api.host, registry=platform.metrics.registry)
        await platform.start(roles=roles, front=False)
        logging.getLogger("iot_platform.worker").info("worker running: %s", ", ".join(roles))
        try:
            await stopping.wait()
        finally:
            await platform.stop()

    asyncio.run(main())


@cli.group()
def dlq() -> None:
    """The dead-letter topic (streaming.topics.dead_letter)."""


@dlq.command("list")
@click.option("--limit", type=int, help="At most this many, oldest first.")
@click.pass_context
def dlq_list(ctx: click.Context, limit: int | None) -> None:
    """Print every dead letter: where it came from, why, and the record's key."""
    from iot_platform.composition.operations import dead_letters

    settings = _settings(ctx)
    _needs_kafka(settings, "dlq")
    streaming = settings.streaming
    letters = asyncio.run(dead_letters(settings, limit))
    for letter in letters:
        click.echo(f"{letter.partition}@{letter.offset}\t{letter.reason}\t{letter.source}\t"
                   f"key={letter.key}\t{letter.headers.get('error', '')}")
    click.echo(f"{len(letters)} dead letters in {streaming.topics.dead_letter}")


@dlq.command("replay")
@click.option("--reason", type=click.Choice(["undecodable", "failed", "refused"]),
              help="Only letters set aside for this reason.")
@click.pass_context
def dlq_replay(ctx: click.Context, reason: str | None) -> None:
    """Send the dead letters not replayed before back to their source topics."""
    from iot_platform.composition.operations import replay

    settings = _settings(ctx)
    _needs_kafka(settings, "dlq")
    replayed, skipped = asyncio.run(replay(settings, reason))
    click.echo(f"replayed {replayed} dead letters" + (f" ({skipped} of another reason skipped)" if skipped else ""))


@cli.group()
def ca() -> None:
    """The device certificate authority (security.ca_cert_path, security.ca_key_path)."""


@ca.command("init")
@click.option("--force", is_flag=True, help="Replace an existing CA (its certificates stop verifying).")
@click.pass_context
def ca_init(ctx: click.Context, force: bool) -> None:
    """Create a root and an intermediate CA; keys encrypted with security.ca_key_passphrase."""
    settings = _settings(ctx)

    async def init(platform: Platform) -> str:
        platform.pki.init(force=force)
        await platform.pki.publish_crl()
        return str(platform.pki.chain_path)

    try:
        click.echo(f"device CA created; chain: {_with_platform(settings, init)}")
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None


@ca.command("import")
@click.option("--cert", "cert_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="DEVICE_CA_CERT_PATH", required=True, help="The issuing CA certificate (PEM).")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="DEVICE_CA_KEY_PATH", required=True, help="Its private key (PEM).")
@click.option("--chain", "chain_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificates above it, if any (PEM).")
@click.option("--key-password-stdin", is_flag=True, help="The key is encrypted: read its password from stdin.")
@click.pass_context
def ca_import(ctx: click.Context, cert_path: Path, key_path: Path, chain_path: Path | None,
              key_password_stdin: bool) -> None:
    """Take an existing CA as the issuer of device certificates (re-encrypted at rest)."""
    settings = _settings(ctx)
    password = sys.stdin.readline().rstrip("\n").encode() if key_password_stdin else None

    async def take(platform: Platform) -> None:
        platform.pki.import_ca(cert_path.read_bytes(), key_path.read_bytes(), password,
                               chain_path.read_bytes() if chain_path else None)
        await platform.pki.publish_crl()

    try:
        _with_platform(settings, take)
    except (ValueError, TypeError) as exc:
        raise click.ClickException(f"cannot import the CA: {exc}") from None
    click.echo("device CA imported")


@ca.command("service-cert")
@click.argument("name")
@click.option("--cn", "common_name", help="The subject's CN (default NAME); a client's CN is its MQTT username.")
@click.option("--host", "hosts", multiple=True,
              help="Make a server certificate for this IP address or DNS name (repeatable); none: a client one.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where NAME.crt, NAME.key and chain.pem are written.")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True)
@click.option("--key-password-stdin", is_flag=True, help="Encrypt the key with a password read from stdin.")
@click.option("--unencrypted-key", is_flag=True,
              help="Leave the key in the clear (mode 0600), for a server that cannot be given a passphrase.")
@click.pass_context
def ca_service_cert(ctx: click.Context, name: str, common_name: str | None, hosts: tuple[str, ...], out_dir: Path,
                    days: int, key_password_stdin: bool, unencrypted_key: bool) -> None:
    """Issue a certificate from the device CA for a service: an external broker's server side
    (--host), or the platform's own client identity (--cn iot-platform) on such a broker."""
    if key_password_stdin == unencrypted_key:
        raise click.UsageError("choose --key-password-stdin (an encrypted key) or --unencrypted-key")
    password = sys.stdin.readline().rstrip("\n").encode() if key_password_stdin else None
    if key_password_stdin and not password:
        raise click.UsageError("the key password read from stdin is empty")
    settings = _settings(ctx)

    async def issue(platform: Platform) -> tuple[Path, Path]:
        if not platform.pki.exists():
            raise click.ClickException(f"no device CA at {settings.security.ca_cert_path}: run iot-platform ca init "
                                       "(or start the platform once)")
        cert, key = platform.pki.issue_service_certificate(out_dir, name, common_name or name, password, hosts, days)
        (out_dir / "chain.pem").write_text(platform.pki.chain())
        return cert, key

    cert, key = _with_platform(settings, issue)
    click.echo(f"{cert}, {key} ({'encrypted' if password else 'unencrypted'}) and {out_dir / 'chain.pem'} written")


_ROLE_CHOICE = click.Choice(["admin", "fleet_manager", "firmware_engineer", "viewer", "device"])


@cli.group()
def apikey() -> None:
    """REST API keys: shown once at creation, kept hashed, revocable, with an expiry."""


@apikey.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--role", "roles", multiple=True, required=True, type=_ROLE_CHOICE, help="Repeatable.")
@click.option("--device", "device_id", help="With --role device: the only device it acts for.")
@click.option("--expires-days", type=click.FloatRange(min=0, min_open=True), help="Default: never.")
@click.pass_context
def apikey_create(ctx: click.Context, name: str, roles: tuple[str, ...], device_id: str | None,
                  expires_days: float | None) -> None:
    """Create a key and print it (the only time it is shown)."""
    from datetime import timedelta

    settings = _settings(ctx)

    async def create(platform: Platform) -> str:
        key, plaintext = await platform.access.create_key(
            name, roles, "cli", device_id, timedelta(days=expires_days) if expires_days else None)
        return f"{key.key_id}\t{plaintext}"

    try:
        click.echo(_with_platform(settings, create))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@apikey.command("list")
@click.pass_context
def apikey_list(ctx: click.Context) -> None:
    """Every key: id, name, roles, device, expiry, revoked (never the key itself)."""
    settings = _settings(ctx)

    async def listing(platform: Platform) -> list[str]:
        return [f"{k.key_id}\t{k.name}\t{','.join(k.roles)}\t{k.device_id or '-'}\t"
                f"expires={k.expires_at.isoformat() if k.expires_at else 'never'}\t"
                f"{'revoked' if k.revoked_at else 'live'}" for k in await platform.access_keys.list()]

    for line in _with_platform(settings, listing):
        click.echo(line)


@apikey.command("revoke")
@click.argument("key_id")
@click.pass_context
def apikey_revoke(ctx: click.Context, key_id: str) -> None:
    settings = _settings(ctx)
    if not _with_platform(settings, lambda platform: platform.access.revoke_key(key_id)):
        raise click.ClickException(f"no live API key {key_id}")
    click.echo(f"revoked {key_id}")


@apikey.command("new")
def apikey_new() -> None:
    """Print a fresh, well-formed key without storing it (for security.admin_api_key)."""
    import secrets

    click.echo(f"iotk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}")


@cli.group()
def users() -> None:
    """People who sign in for a bearer token (POST /api/auth/token)."""


@users.command("create")
@click.argument("username")
@click.option("--role", "roles", multiple=True, required=True, type=_ROLE_CHOICE, help="Repeatable.")
@click.option("--device", "device_id", help="With --role device (which stands alone): the only device the user acts for.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input; "
              "otherwise one is generated and printed once.")
@click.pass_context
def users_create(ctx: click.Context, username: str, roles: tuple[str, ...], device_id: str | None,
                 password_stdin: bool) -> None:
    import secrets

    from iot_platform.application.access.model import DeviceBinding, check_device_binding
    from iot_platform.application.access.ports import CredentialTaken

    roles = tuple(dict.fromkeys(roles))
    try:  # before the password is read or the database opened
        check_device_binding(roles, device_id)
    except DeviceBinding as exc:
        raise click.UsageError(f"{exc} (--{'device' if exc.field == 'device_id' else 'role'})") from None
    settings = _settings(ctx)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(18)
    if len(password) < 12:
        raise click.UsageError("the password needs at least 12 characters")
    try:
        _with_platform(settings, lambda platform: platform.access.create_user(username, password, roles, device_id))
    except CredentialTaken as exc:
        raise click.ClickException(str(exc)) from None
    except DeviceBinding as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"created {username}" + ("" if password_stdin else f"; password: {password}"))


if __name__ == "__main__":
    cli()
