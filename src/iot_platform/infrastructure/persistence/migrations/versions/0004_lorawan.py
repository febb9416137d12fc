"""LoRaWAN device sessions (sealed keys, frame counters), used DevNonces, gateways; OSCORE
contexts of CoAP devices.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from iot_platform.infrastructure.persistence.schema import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lorawan_devices",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("dev_eui", sa.String(16), nullable=False, unique=True),
        sa.Column("join_eui", sa.String(16), nullable=True),
        sa.Column("activation", sa.String(8), nullable=False),
        sa.Column("codec", sa.String(64), nullable=False),
        sa.Column("dev_addr", sa.String(8), nullable=True),
        sa.Column("sealed_keys", sa.Text, nullable=False),
        sa.Column("f_cnt_up", sa.BigInteger, nullable=True),
        sa.Column("f_cnt_down", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_lorawan_devices_dev_addr", "lorawan_devices", ["dev_addr"])
    op.create_table(
        "lorawan_dev_nonces",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("dev_nonce", sa.Integer, primary_key=True),
        sa.Column("used_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "lorawan_gateways",
        sa.Column("gateway_eui", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("registered_at", UtcDateTime, nullable=False),
        sa.Column("last_seen", UtcDateTime, nullable=True),
    )


    op.create_table(
        "coap_oscore_contexts",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("recipient_id", sa.String(16), nullable=False, unique=True),
        sa.Column("sealed_secret", sa.Text, nullable=False),
        sa.Column("sequence_floor", sa.BigInteger, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("coap_oscore_contexts")
    op.drop_table("lorawan_gateways")
    op.drop_table("lorawan_dev_nonces")
    op.drop_index("ix_lorawan_devices_dev_addr", "lorawan_devices")
    op.drop_table("lorawan_devices")
