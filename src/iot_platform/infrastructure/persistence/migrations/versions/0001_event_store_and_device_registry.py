"""Event store (events, streams, snapshots, outbox) and the device registry read model.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from iot_platform.infrastructure.persistence.schema import Position, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

HAVERSINE_PG = """
CREATE OR REPLACE FUNCTION haversine_km(
    lat1 double precision, lon1 double precision, lat2 double precision, lon2 double precision
) RETURNS double precision LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 2 * 6371.0088 * asin(least(1.0, sqrt(
        power(sin(radians(lat2 - lat1) / 2), 2)
        + cos(radians(lat1)) * cos(radians(lat2)) * power(sin(radians(lon2 - lon1) / 2), 2)
    )))
$$
"""


def upgrade() -> None:
    counter = op.create_table(
        "event_position_counter",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("last_position", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counter, [{"id": 1, "last_position": 0}])
    op.create_table(
        "event_streams",
        sa.Column("stream_id", sa.String(300), primary_key=True),
        sa.Column("stream_type", sa.String(50), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("position", Position, primary_key=True, autoincrement=False),
        sa.Column("stream_id", sa.String(300), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("schema_version", sa.SmallInteger, nullable=False),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),
    )
    op.create_table(
        "snapshots",
        sa.Column("stream_id", sa.String(300), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("schema_version", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("taken_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("position", Position, primary_key=True, autoincrement=False),
    )
    op.create_table(
        "projection_checkpoints",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "rm_devices",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("device_type", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("protocol", sa.String(10), nullable=False),
        sa.Column("latitude", sa.Float, nullable=True),
        sa.Column("longitude", sa.Float, nullable=True),
        sa.Column("altitude", sa.Float, nullable=True),
        sa.Column("address", sa.Text, nullable=True),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("registered_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_rm_devices_type", "rm_devices", ["device_type", "device_id"])
    op.create_index("ix_rm_devices_status", "rm_devices", ["status", "device_id"])
    op.create_index("ix_rm_devices_lat", "rm_devices", ["latitude"])
    op.create_table(
        "device_presence",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("last_seen", UtcDateTime, nullable=False),
    )
    op.create_index("ix_device_presence_last_seen", "device_presence", ["last_seen"])
    op.create_table(
        "rm_device_tags",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_index("ix_rm_device_tags_kv", "rm_device_tags", ["key", "value", "device_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(HAVERSINE_PG)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS haversine_km")
    for table in (
        "device_presence",
        "rm_device_tags",
        "rm_devices",
        "projection_checkpoints",
        "outbox",
        "snapshots",
        "events",
        "event_streams",
        "event_position_counter",
    ):
        op.drop_table(table)
