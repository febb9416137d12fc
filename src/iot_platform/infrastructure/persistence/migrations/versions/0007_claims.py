"""Fleet provisioning claims and their uses.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from iot_platform.infrastructure.persistence.schema import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provisioning_claims",
        sa.Column("claim_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("device_type", sa.String(100), nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("max_uses", sa.Integer, nullable=False),
        sa.Column("used", sa.Integer, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
    )
    op.create_table(
        "provisioning_claim_uses",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("claim_id", sa.String(32), nullable=False),
        sa.Column("used_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("provisioning_claim_uses")
    op.drop_table("provisioning_claims")
