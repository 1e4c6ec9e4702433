"""The latest batch run's checkpoint, for `diamond runs rollback` (serving.runs): `run_checkpoint` (which run,
when it was taken) and copies of `tier_state` and `alerts` as they were before that run.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_checkpoint",
        sa.Column("as_of", sa.DateTime, primary_key=True),
        sa.Column("taken_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "checkpoint_tier_state",
        sa.Column("customer_id", sa.String(255), primary_key=True),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("runs_below", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "checkpoint_alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tier", sa.String(64)),
        sa.Column("churn_probability", sa.Float, nullable=False),
        sa.Column("predicted_value", sa.Float, nullable=False),
        sa.Column("value_at_risk", sa.Float, nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("playbook", sa.Text),
        sa.Column("due_at", sa.DateTime),
        sa.Column("owner", sa.String(255)),
        sa.Column("opened_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("last_notified_at", sa.DateTime),
        sa.Column("notified_value_at_risk", sa.Float),
        sa.Column("resolved_at", sa.DateTime),
        sa.Column("resolved_by", sa.String(255)),
        sa.Column("snoozed_until", sa.DateTime),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("do_not_contact", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    for name in ("checkpoint_alerts", "checkpoint_tier_state", "run_checkpoint"):
        op.drop_table(name)
