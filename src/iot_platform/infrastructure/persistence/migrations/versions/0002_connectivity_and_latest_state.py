"""Device connectivity in the registry; latest value per metric beside last-seen.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rm_devices") as table:
        table.add_column(sa.Column("connected", sa.Boolean, nullable=True))
    with op.batch_alter_table("device_presence") as table:
        table.add_column(sa.Column("latest", sa.Text, nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("device_presence") as table:
        table.drop_column("latest")
    with op.batch_alter_table("rm_devices") as table:
        table.drop_column("connected")
