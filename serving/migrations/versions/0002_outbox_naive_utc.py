"""The outbox keeps naive UTC times like every other table (it declared timezone-aware columns).

PostgreSQL: the three columns become `timestamp without time zone`, each value converted to its UTC wall time.
SQLite has no time zone type (both declarations are DATETIME, and SQLAlchemy wrote aware values as their UTC
wall time already): values stored with an offset by another writer are rewritten as naive UTC.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

from core.clock import utc_naive

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMES = {"created_at": False, "next_attempt_at": False, "delivered_at": True}  # column: nullable


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _rewrite_sqlite(bind)
        return
    with op.batch_alter_table("outbox") as batch:
        for column, nullable in TIMES.items():
            batch.alter_column(
                column,
                type_=sa.DateTime(),
                existing_type=sa.DateTime(timezone=True),
                existing_nullable=nullable,
                postgresql_using=f"{column} AT TIME ZONE 'UTC'",
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # naive UTC text is what the aware columns held on SQLite
    with op.batch_alter_table("outbox") as batch:
        for column, nullable in TIMES.items():
            batch.alter_column(
                column,
                type_=sa.DateTime(timezone=True),
                existing_type=sa.DateTime(),
                existing_nullable=nullable,
                postgresql_using=f"{column} AT TIME ZONE 'UTC'",
            )


def _rewrite_sqlite(bind: sa.Connection) -> None:
    """Every stored time that is not naive UTC in SQLAlchemy's text format, rewritten as one."""
    raw = sa.table("outbox", sa.column("webhook_id"), *(sa.column(c, sa.String) for c in TIMES))
    typed = sa.table("outbox", sa.column("webhook_id"), *(sa.column(c, sa.DateTime) for c in TIMES))
    fmt = sa.DateTime().dialect_impl(bind.dialect).bind_processor(bind.dialect)
    assert fmt is not None
    # SQLAlchemy writes "YYYY-MM-DD HH:MM:SS.ffffff" (26 characters): only other values can need a rewrite
    odd = sa.or_(*(sa.or_(sa.func.length(raw.c[c]) != 26, raw.c[c].contains("T")) for c in TIMES))
    for row in bind.execute(sa.select(raw).where(odd)).mappings().all():
        changed = {}
        for column in TIMES:
            text = row[column]
            if text is None:
                continue
            value = utc_naive(datetime.fromisoformat(text))
            if fmt(value) != text:
                changed[column] = value
        if changed:
            bind.execute(sa.update(typed).where(typed.c.webhook_id == row["webhook_id"]).values(**changed))
