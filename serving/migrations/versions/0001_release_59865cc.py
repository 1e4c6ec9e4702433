"""The store as the release before migrations (commit 59865cc) wrote it.

That release created each table on first use (`create_all`, and pandas for `score_runs`), so one of its stores
holds any subset of these tables. On such a store this revision adopts what is there and creates only the
tables and indexes it lacks; on an empty one it creates them all. Either way the store then is exactly what
59865cc would have made, and the later revisions start from the same place.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_not_resolved = sa.text("status != 'resolved'")


def _tables() -> list[tuple[str, list[Any], list[tuple[str, list[str], dict[str, Any]]]]]:
    """(table, columns and constraints, indexes (name, columns, options)) as 59865cc declared them."""
    return [
        (
            "score_history",
            [
                sa.Column("customer_id", sa.String(255), primary_key=True),
                sa.Column("as_of", sa.DateTime, primary_key=True),
                sa.Column("churn_probability", sa.Float, nullable=False),
                sa.Column("predicted_value", sa.Float, nullable=False),
                sa.Column("value_at_risk", sa.Float, nullable=False),
                sa.Column("tier", sa.String(64)),
                sa.Column("model_version", sa.String(64)),
            ],
            [("ix_score_history_as_of", ["as_of"], {})],
        ),
        (
            "score_runs",  # written by pandas' to_sql from the run's dict: text times (ISO, created_at aware)
            [
                sa.Column("as_of", sa.Text),
                sa.Column("model_version", sa.Text),
                sa.Column("customers", sa.BigInteger),
                sa.Column("parquet", sa.Text),
                sa.Column("created_at", sa.Text),
            ],
            [],
        ),
        (
            "tier_state",
            [
                sa.Column("customer_id", sa.String(255), primary_key=True),
                sa.Column("tier", sa.String(64), nullable=False),
                sa.Column("runs_below", sa.Integer, nullable=False),
                sa.Column("updated_at", sa.DateTime, nullable=False),
                sa.CheckConstraint("runs_below >= 0", name="ck_tier_state_runs_below"),
            ],
            [],
        ),
        (
            "tier_history",
            [
                sa.Column("customer_id", sa.String(255), primary_key=True),
                sa.Column("as_of", sa.DateTime, primary_key=True),
                sa.Column("tier", sa.String(64), nullable=False),
                sa.Column("tier_raw", sa.String(64), nullable=False),
                sa.Column("previous_tier", sa.String(64)),
                sa.Column("runs_below", sa.Integer, nullable=False),
            ],
            [("ix_tier_history_as_of", ["as_of"], {})],
        ),
        (
            "tier_runs",
            [
                sa.Column("as_of", sa.DateTime, primary_key=True),
                sa.Column("applied_at", sa.DateTime, nullable=False),
                sa.Column("customers", sa.Integer, nullable=False),
                sa.Column("tier_order", sa.Text, nullable=False),
                sa.Column("demote_after", sa.Integer, nullable=False),
            ],
            [],
        ),
        (
            "alerts",
            [
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
                sa.CheckConstraint(
                    "status IN ('open', 'acknowledged', 'snoozed', 'resolved')", name="ck_alerts_status"
                ),
            ],
            [
                (
                    "uq_alerts_live_customer_kind",
                    ["customer_id", "kind"],
                    {"unique": True, "sqlite_where": _not_resolved, "postgresql_where": _not_resolved},
                ),
                ("ix_alerts_status_value_at_risk", ["status", "value_at_risk"], {}),
                ("ix_alerts_customer_id", ["customer_id"], {}),
            ],
        ),
        (
            "alert_actions",
            [
                sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                sa.Column("alert_id", sa.Integer, nullable=False),
                sa.Column("action", sa.String(16), nullable=False),
                sa.Column("who", sa.String(255)),
                sa.Column("at", sa.DateTime, nullable=False),
                sa.Column("detail", sa.Text),
            ],
            [("ix_alert_actions_alert_id", ["alert_id"], {})],
        ),
        (
            "outbox",
            [
                sa.Column("webhook_id", sa.String(255), primary_key=True),
                sa.Column("destination", sa.String(255), nullable=False),
                sa.Column("payload", sa.Text, nullable=False),
                sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                sa.Column("attempts", sa.Integer, nullable=False),
                sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
                sa.Column("status", sa.String(16), nullable=False),
                sa.Column("last_error", sa.Text),
                sa.Column("delivered_at", sa.DateTime(timezone=True)),
                sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="ck_outbox_status"),
            ],
            [("ix_outbox_status_next_attempt_at", ["status", "next_attempt_at"], {})],
        ),
        (
            "drift",
            [
                sa.Column("as_of", sa.DateTime, primary_key=True),
                sa.Column("model_version", sa.String(64), primary_key=True),
                sa.Column("name", sa.String(255), primary_key=True),
                sa.Column("kind", sa.String(16), nullable=False),
                sa.Column("psi", sa.Float, nullable=False),
                sa.Column("watched", sa.Boolean, nullable=False),
            ],
            [],
        ),
        (
            "drift_runs",
            [
                sa.Column("as_of", sa.DateTime, primary_key=True),
                sa.Column("model_version", sa.String(64), primary_key=True),
                sa.Column("created_at", sa.DateTime, nullable=False),
                sa.Column("customers", sa.Integer, nullable=False),
                sa.Column("max_psi", sa.Float, nullable=False),
                sa.Column("worst", sa.String(255), nullable=False),
                sa.Column("over", sa.Integer, nullable=False),
                sa.Column("psi_alert", sa.Float, nullable=False),
                sa.Column("alert", sa.Boolean, nullable=False),
                sa.Column("reasons", sa.Text, nullable=False),
            ],
            [],
        ),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    for name, elements, indexes in _tables():
        if not sa.inspect(bind).has_table(name):
            op.create_table(name, *elements)
        present = {i["name"] for i in sa.inspect(bind).get_indexes(name)}
        for index, columns, options in indexes:
            if index not in present:  # e.g. a table an even older release made without it
                op.create_index(index, name, columns, **options)


def downgrade() -> None:
    for name, _, indexes in reversed(_tables()):
        for index, _columns, _options in indexes:
            op.drop_index(index, table_name=name)
        op.drop_table(name)
