"""Read models of alert rules, alerts and device commands.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from iot_platform.infrastructure.persistence.schema import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rm_alert_rules",
        sa.Column("rule_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("device_pattern", sa.String(200), nullable=True),
        sa.Column("device_type", sa.String(100), nullable=True),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("op", sa.String(20), nullable=False),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("min", sa.Float, nullable=True),
        sa.Column("max", sa.Float, nullable=True),
        sa.Column("window", sa.Integer, nullable=True),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("channels", sa.Text, nullable=False),
        sa.Column("webhook_url", sa.Text, nullable=True),
        sa.Column("mqtt_topic", sa.String(300), nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "rm_alerts",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("rule_name", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("status", sa.String(15), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("raised_at", UtcDateTime, nullable=False),
        sa.Column("acknowledged_at", UtcDateTime, nullable=True),
        sa.Column("acknowledged_by", sa.String(200), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("resolved_at", UtcDateTime, nullable=True),
        sa.Column("resolved_by", sa.String(200), nullable=True),
        sa.Column("resolution", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_rm_alerts_status", "rm_alerts", ["status", "severity"])
    op.create_index("ix_rm_alerts_device", "rm_alerts", ["device_id", "raised_at"])
    op.create_index("ix_rm_alerts_rule", "rm_alerts", ["rule_id", "device_id"])
    op.create_index("ix_rm_alerts_raised", "rm_alerts", ["raised_at"])
    op.create_table(
        "rm_device_commands",
        sa.Column("command_id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("command", sa.String(100), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("status", sa.String(15), nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("issued_by", sa.String(200), nullable=False),
        sa.Column("issued_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("sent_at", UtcDateTime, nullable=True),
        sa.Column("delivered_at", UtcDateTime, nullable=True),
        sa.Column("completed_at", UtcDateTime, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_rm_device_commands_device", "rm_device_commands", ["device_id", "status"])
    op.create_index("ix_rm_device_commands_expiry", "rm_device_commands", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_table("rm_device_commands")
    op.drop_table("rm_alerts")
    op.drop_table("rm_alert_rules")
