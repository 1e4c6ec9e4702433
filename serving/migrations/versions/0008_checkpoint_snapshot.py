"""The checkpoint keeps the previous snapshot by renaming it, not by copying it:
`run_checkpoint.snapshot_kept` says whether the run's snapshot write has already moved the snapshot it
replaced to `<name>__prev` (serving.runs, serving.store.write_snapshot). A checkpoint taken by an earlier
release made its copies when it was taken: kept.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_checkpoint") as batch:
        batch.add_column(sa.Column("snapshot_kept", sa.Boolean, nullable=False, server_default=sa.false()))
    op.execute(sa.text("UPDATE run_checkpoint SET snapshot_kept = :yes").bindparams(yes=True))


def downgrade() -> None:
    with op.batch_alter_table("run_checkpoint") as batch:
        batch.drop_column("snapshot_kept")
