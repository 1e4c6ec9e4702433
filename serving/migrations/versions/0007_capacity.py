"""Capacity queues and the alerts' rank (serving.capacity, serving.alert_rules.priority): `alerts.priority`
(the rank everywhere; existing alerts take their value at risk), `alerts.entered_at` (when an alert entered
its team's list; existing alerts entered when they opened) and the status `queued`. The run checkpoint's copy
of the alerts gains the same columns.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_LIVE = sa.text("status != 'resolved'")
_OLD = "status IN ('open', 'acknowledged', 'snoozed', 'resolved')"
_NEW = "status IN ('queued', 'open', 'acknowledged', 'snoozed', 'resolved')"


def upgrade() -> None:
    for table in ("alerts", "checkpoint_alerts"):
        op.add_column(table, sa.Column("priority", sa.Float, nullable=True))
        op.add_column(table, sa.Column("entered_at", sa.DateTime, nullable=True))
        op.execute(f"UPDATE {table} SET priority = value_at_risk, entered_at = opened_at")
    # SQLite cannot alter a column or a CHECK in place: the batch copies the table. Its partial unique index
    # is dropped first and made again after, so no copy of it is lost or left unfiltered.
    op.drop_index("uq_alerts_live_customer_kind", table_name="alerts")
    with op.batch_alter_table("alerts", recreate="auto") as batch:
        batch.alter_column("priority", existing_type=sa.Float, nullable=False)
        batch.drop_constraint("ck_alerts_status", type_="check")
        batch.create_check_constraint("ck_alerts_status", _NEW)
    _live_index()
    op.create_index("ix_alerts_status_priority", "alerts", ["status", "priority"])
    with op.batch_alter_table("checkpoint_alerts", recreate="auto") as batch:
        batch.alter_column("priority", existing_type=sa.Float, nullable=False)


def downgrade() -> None:
    op.execute("DELETE FROM alerts WHERE status = 'queued'")  # never entered: nothing of them is owed
    op.drop_index("ix_alerts_status_priority", table_name="alerts")
    op.drop_index("uq_alerts_live_customer_kind", table_name="alerts")
    with op.batch_alter_table("alerts", recreate="auto") as batch:
        batch.drop_constraint("ck_alerts_status", type_="check")
        batch.create_check_constraint("ck_alerts_status", _OLD)
        batch.drop_column("entered_at")
        batch.drop_column("priority")
    _live_index()
    with op.batch_alter_table("checkpoint_alerts", recreate="auto") as batch:
        batch.drop_column("entered_at")
        batch.drop_column("priority")


def _live_index() -> None:
    op.create_index(
        "uq_alerts_live_customer_kind",
        "alerts",
        ["customer_id", "kind"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
