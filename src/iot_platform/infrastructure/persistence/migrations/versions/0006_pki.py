"""Device certificates issued by the platform's CA.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from iot_platform.infrastructure.persistence.schema import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_certificates",
        sa.Column("serial", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("not_after", UtcDateTime, nullable=False),
        sa.Column("issued_at", UtcDateTime, nullable=False),
        sa.Column("superseded_at", UtcDateTime, nullable=True),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.Column("reason", sa.String(40), nullable=True),
        sa.Column("pem", sa.Text, nullable=False),
    )
    op.create_index("ix_device_certificates_device", "device_certificates", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_device_certificates_device", "device_certificates")
    op.drop_table("device_certificates")
