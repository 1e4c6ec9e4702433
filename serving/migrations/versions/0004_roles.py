"""Roles, sessions, consent and erasure: server-side dashboard sessions (`sessions`, so signing out ends a
session at once), an `audit` table (who did what: sign-ins, alert actions, erasures, promotions), the store's
own random values (`store_secrets`: the salt of erased customers' hashes) and `alerts.do_not_contact` (the
customer withdrew consent: the alert is shown, never sent). Existing alerts get do_not_contact false.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
    )
    op.create_index("ix_sessions_key_id", "sessions", ["key_id"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("who", sa.String(255)),
        sa.Column("role", sa.String(16)),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("client", sa.String(64)),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    op.create_index("ix_audit_action_target", "audit", ["action", "target"])
    op.create_table(
        "store_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    # a plain ADD COLUMN (SQLite too): a batch copy of `alerts` would have to rebuild its partial index
    op.add_column(
        "alerts", sa.Column("do_not_contact", sa.Boolean, nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("alerts", "do_not_contact")
    op.drop_table("store_secrets")
    op.drop_index("ix_audit_action_target", table_name="audit")
    op.drop_index("ix_audit_at", table_name="audit")
    op.drop_table("audit")
    op.drop_index("ix_sessions_key_id", table_name="sessions")
    op.drop_table("sessions")
