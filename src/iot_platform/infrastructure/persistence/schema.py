"""Tables, as SQLAlchemy Core metadata. The domain never sees these; adapters map to and fro.

The Alembic migrations create exactly this schema (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect


class UtcDateTime(TypeDecorator[datetime]):
    """Always timezone-aware UTC in Python, whatever the backend keeps (SQLite keeps text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Global positions. On SQLite an INTEGER PRIMARY KEY is the table's rowid itself; a BIGINT one
# would be a second B-tree to write for every event (see tools/bench_eventstore.py).
Position = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

# -- the write side ---------------------------------------------------------------------------

# One row whose counter hands out global positions. Updating it takes a row lock (the write
# lock on SQLite) that is held to commit, so positions are gap-free and visible in order.
position_counter = Table(
    "event_position_counter",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("last_position", BigInteger, nullable=False),
)

streams = Table(
    "event_streams",
    metadata,
    Column("stream_id", String(300), primary_key=True),
    Column("stream_type", String(50), nullable=False),
    Column("version", Integer, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=False),
    Column("stream_id", String(300), nullable=False),
    Column("version", Integer, nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("correlation_id", String(64), nullable=False),
    Column("data", Text, nullable=False),
    UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("stream_id", String(300), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("taken_at", UtcDateTime, nullable=False),
)

# The transactional outbox: one row per event, written in the event's transaction. It holds only
# what is not yet published; the Kafka relay deletes a row once the broker has acknowledged it.
outbox = Table(
    "outbox",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=False),
)

# -- the read side ----------------------------------------------------------------------------

projection_checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# Events a projection could not apply (or read): one row per (projection, position) met, open
# until the event applies on a retry or an operator skips it (who, when and why are kept).
projection_failures = Table(
    "projection_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("projection", String(100), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("stream_id", String(300), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_at", UtcDateTime, nullable=False),
    Column("last_failed_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    Column("resolution", String(20), nullable=True),  # applied (on a retry) or skipped
    Column("resolved_by", String(200), nullable=True),
    Column("note", Text, nullable=True),
    Index("ix_projection_failures_open", "projection", "resolved_at"),
)

rm_devices = Table(
    "rm_devices",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("device_type", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("protocol", String(10), nullable=False),
    Column("latitude", Float, nullable=True),
    Column("longitude", Float, nullable=True),
    Column("altitude", Float, nullable=True),
    Column("address", Text, nullable=True),
    Column("tags", Text, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("registered_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("connected", Boolean, nullable=True),
)
Index("ix_rm_devices_type", rm_devices.c.device_type, rm_devices.c.device_id)
Index("ix_rm_devices_status", rm_devices.c.status, rm_devices.c.device_id)
Index("ix_rm_devices_lat", rm_devices.c.latitude)

# When each device was last heard from, and its latest value per metric as JSON
# {"metric": [value, timestamp_ns]}. Fed by telemetry, not by events, so it lives apart from
# rm_devices: rebuilding the registry from events must not forget it.
device_presence = Table(
    "device_presence",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("latest", Text, nullable=False, server_default="{}"),
)
Index("ix_device_presence_last_seen", device_presence.c.last_seen)

rm_device_tags = Table(
    "rm_device_tags",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)
Index("ix_rm_device_tags_kv", rm_device_tags.c.key, rm_device_tags.c.value, rm_device_tags.c.device_id)

# -- rules, alerts and device commands --------------------------------------------------------

rm_alert_rules = Table(
    "rm_alert_rules",
    metadata,
    Column("rule_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("device_pattern", String(200), nullable=True),
    Column("device_type", String(100), nullable=True),
    Column("tags", Text, nullable=False),
    Column("metric", String(100), nullable=False),
    Column("op", String(20), nullable=False),
    Column("threshold", Float, nullable=True),
    Column("min", Float, nullable=True),
    Column("max", Float, nullable=True),
    Column("window", Integer, nullable=True),
    Column("duration_seconds", Float, nullable=False),
    Column("severity", String(10), nullable=False),
    Column("channels", Text, nullable=False),
    Column("webhook_url", Text, nullable=True),
    Column("mqtt_topic", String(300), nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

rm_alerts = Table(
    "rm_alerts",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("rule_id", String(64), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("rule_name", String(200), nullable=False),
    Column("metric", String(100), nullable=False),
    Column("severity", String(10), nullable=False),
    Column("status", String(15), nullable=False),
    Column("value", Float, nullable=True),
    Column("message", Text, nullable=False),
    Column("raised_at", UtcDateTime, nullable=False),
    Column("acknowledged_at", UtcDateTime, nullable=True),
    Column("acknowledged_by", String(200), nullable=True),
    Column("note", Text, nullable=True),
    Column("resolved_at", UtcDateTime, nullable=True),
    Column("resolved_by", String(200), nullable=True),
    Column("resolution", Text, nullable=True),
    Column("version", Integer, nullable=False),
)
Index("ix_rm_alerts_status", rm_alerts.c.status, rm_alerts.c.severity)
Index("ix_rm_alerts_device", rm_alerts.c.device_id, rm_alerts.c.raised_at)
Index("ix_rm_alerts_rule", rm_alerts.c.rule_id, rm_alerts.c.device_id)
Index("ix_rm_alerts_raised", rm_alerts.c.raised_at)

rm_device_commands = Table(
    "rm_device_commands",
    metadata,
    Column("command_id", String(64), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("command", String(100), nullable=False),
    Column("parameters", Text, nullable=False),
    Column("status", String(15), nullable=False),
    Column("result", Text, nullable=True),
    Column("issued_by", String(200), nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    Column("delivered_at", UtcDateTime, nullable=True),
    Column("completed_at", UtcDateTime, nullable=True),
    Column("version", Integer, nullable=False),
)
Index("ix_rm_device_commands_device", rm_device_commands.c.device_id, rm_device_commands.c.status)
Index("ix_rm_device_commands_expiry", rm_device_commands.c.status, rm_device_commands.c.expires_at)

# The LoRaWAN network server's sessions. Not a read model: frame counters change with every
# frame and the keys are secrets, so they live here, sealed (AES-GCM, the platform's
# encryption key), and never in events. ``sealed_keys`` is bound to its device id.
lorawan_devices = Table(
    "lorawan_devices",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("dev_eui", String(16), nullable=False, unique=True),
    Column("join_eui", String(16), nullable=True),
    Column("activation", String(8), nullable=False),
    Column("codec", String(64), nullable=False),
    Column("dev_addr", String(8), nullable=True),
    Column("sealed_keys", Text, nullable=False),
    Column("f_cnt_up", BigInteger, nullable=True),
    Column("f_cnt_down", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
Index("ix_lorawan_devices_dev_addr", lorawan_devices.c.dev_addr)

lorawan_dev_nonces = Table(
    "lorawan_dev_nonces",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("dev_nonce", Integer, primary_key=True),
    Column("used_at", UtcDateTime, nullable=False),
)

lorawan_gateways = Table(
    "lorawan_gateways",
    metadata,
    Column("gateway_eui", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("registered_at", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=True),
)

# OSCORE security contexts of CoAP devices: the master secret and salt sealed like LoRaWAN keys;
# ``recipient_id`` (the device's sender id, hex) is how a request finds its context;
# ``sequence_floor`` is where the next process start may begin sending (reserved in chunks).
coap_oscore_contexts = Table(
    "coap_oscore_contexts",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("recipient_id", String(16), nullable=False, unique=True),
    Column("sealed_secret", Text, nullable=False),
    Column("sequence_floor", BigInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# Credentials of people and programs calling the REST API: only hashes are kept.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("roles", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("device_id", String(128), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
)

users = Table(
    "users",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("roles", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("device_id", String(128), nullable=True),  # the one device of a device-role user
)

# Device certificates the CA issued: what revocation and the CRL need (the certificate is
# public; its private key is the device's and is never here).
device_certificates = Table(
    "device_certificates",
    metadata,
    Column("serial", String(64), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("not_after", UtcDateTime, nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("superseded_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("reason", String(40), nullable=True),
    Column("pem", Text, nullable=False),
)
Index("ix_device_certificates_device", device_certificates.c.device_id)

# Fleet provisioning claims: an enrollment token (kept hashed) shared by a batch of devices,
# and which device ids used it (a device id is claimed at most once, by any claim).
provisioning_claims = Table(
    "provisioning_claims",
    metadata,
    Column("claim_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("device_type", String(100), nullable=False),
    Column("tags", Text, nullable=False),
    Column("max_uses", Integer, nullable=False),
    Column("used", Integer, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

provisioning_claim_uses = Table(
    "provisioning_claim_uses",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("claim_id", String(32), nullable=False),
    Column("used_at", UtcDateTime, nullable=False),
)
