"""Alembic environment. Always handed a live connection by ``migrate.upgrade``; see there."""

from __future__ import annotations

from alembic import context

from iot_platform.infrastructure.persistence.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
