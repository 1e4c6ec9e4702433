"""Closing the retention loop (serving.control, serving.outcomes): `alert_controls`, would-be alerts held out
as controls, and `alert_outcomes`, what happened after each alert and each control.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    live = sa.text("closed_at IS NULL")
    op.create_table(
        "alert_controls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(64)),
        sa.Column("churn_probability", sa.Float, nullable=False),
        sa.Column("predicted_value", sa.Float, nullable=False),
        sa.Column("value_at_risk", sa.Float, nullable=False),
        sa.Column("playbook", sa.Text),
        sa.Column("share", sa.Float, nullable=False),
        sa.Column("opened_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("closed_at", sa.DateTime),
    )
    op.create_index(
        "uq_alert_controls_live_customer_kind",
        "alert_controls",
        ["customer_id", "kind"],
        unique=True,
        sqlite_where=live,
        postgresql_where=live,
    )
    op.create_index("ix_alert_controls_customer_id", "alert_controls", ["customer_id"])
    op.create_table(
        "alert_outcomes",
        sa.Column("arm", sa.String(16), primary_key=True),
        sa.Column("episode_id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(64)),
        sa.Column("playbook", sa.Text),
        sa.Column("value_at_risk", sa.Float, nullable=False),
        sa.Column("opened_at", sa.DateTime, nullable=False),
        sa.Column("horizon_days", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_at", sa.DateTime),
        sa.Column("days_to_outcome", sa.Float),
        sa.Column("value_after", sa.Float, nullable=False),
        sa.Column("observed_until", sa.DateTime, nullable=False),
        sa.Column("mature", sa.Boolean, nullable=False),
        sa.Column("computed_at", sa.DateTime, nullable=False),
        sa.CheckConstraint("arm IN ('treated', 'control')", name="ck_alert_outcomes_arm"),
        sa.CheckConstraint("outcome IN ('saved', 'lost', 'pending')", name="ck_alert_outcomes_outcome"),
    )
    op.create_index("ix_alert_outcomes_customer_id", "alert_outcomes", ["customer_id"])
    op.create_index("ix_alert_outcomes_opened_at", "alert_outcomes", ["opened_at"])


def downgrade() -> None:
    op.drop_table("alert_outcomes")
    op.drop_table("alert_controls")
