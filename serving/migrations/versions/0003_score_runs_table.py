"""`score_runs` becomes a declared table: naive UTC times (it held ISO text, created_at with an offset), an
id key, and an index for the latest run.

pandas created the table from the run's dict, so an old store's columns are whatever its first run wrote. The
rows are copied into the declared table with their times converted; not with a batch ALTER, which on SQLite
would CAST the text to DATETIME (numeric affinity: '2025-12-17T23:59:59' becomes 2025).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import sqlalchemy as sa
from alembic import op

from core.clock import utc_naive

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD = "_score_runs_0002"


def upgrade() -> None:
    rows = _move_aside()
    unusable = [r for r in rows if r.get("as_of") is None or r.get("created_at") is None]
    if unusable:  # never written by `diamond score`; refused rather than guessed (the transaction rolls back)
        raise ValueError(
            f"score_runs: {len(unusable)} run(s) without as_of or created_at, e.g. {unusable[0]}: fill them "
            "in or delete them, then upgrade again"
        )
    table = op.create_table(
        "score_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("as_of", sa.DateTime, nullable=False),
        sa.Column("model_version", sa.String(64)),
        sa.Column("customers", sa.Integer),
        sa.Column("parquet", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_score_runs_created_at", "score_runs", ["created_at"])
    records = [
        {
            "as_of": utc_naive(r["as_of"]),
            "model_version": r.get("model_version"),
            "customers": None if r.get("customers") is None else int(r["customers"]),
            "parquet": r.get("parquet"),
            "created_at": utc_naive(r["created_at"]),
        }
        for r in rows
    ]
    op.bulk_insert(table, sorted(records, key=lambda r: r["created_at"]))
    op.drop_table(OLD)


def downgrade() -> None:
    rows = _move_aside()
    table = op.create_table(
        "score_runs",
        sa.Column("as_of", sa.Text),
        sa.Column("model_version", sa.Text),
        sa.Column("customers", sa.BigInteger),
        sa.Column("parquet", sa.Text),
        sa.Column("created_at", sa.Text),
    )
    records = [
        {
            "as_of": r["as_of"].isoformat(),
            "model_version": r["model_version"],
            "customers": r["customers"],
            "parquet": r["parquet"],
            "created_at": r["created_at"].replace(tzinfo=UTC).isoformat(),
        }
        for r in sorted(rows, key=lambda r: r["id"])
    ]
    op.bulk_insert(table, records)
    op.drop_table(OLD)


def _move_aside() -> list[dict[str, Any]]:
    """Rename score_runs out of the way and return its rows, as stored, with the columns it has."""
    op.drop_index("ix_score_runs_created_at", table_name="score_runs", if_exists=True)
    op.rename_table("score_runs", OLD)
    old = sa.Table(OLD, sa.MetaData(), autoload_with=op.get_bind())
    return [dict(r) for r in op.get_bind().execute(sa.select(old)).mappings()]
