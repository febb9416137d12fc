"""A device-role user's one device.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: users stored before have none; a device-role user among them then acts for no device.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("device_id", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("device_id")
