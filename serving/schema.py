"""The serving store's schema: every fixed table of the store in one `MetaData`, the head of the Alembic
migrations in `serving/migrations` (`diamond db upgrade`; `store.prepare` and `store.upgrade` apply them).

Fixed tables (their columns never depend on the model):

    score_history   one row per customer per batch run (the dashboard's charts); PK (customer_id, as_of)
    score_runs      the log of batch runs
    tier_state      each customer's tier after hysteresis; tier_history, append-only; tier_runs, the ledger
    alerts          retention and model-health alerts (one live or queued alert per customer and kind), ranked
                    by `priority`; queued ones wait for their team's capacity (serving.capacity);
                    alert_actions, who did what to an alert and when
    alert_controls  would-be alerts held out as controls (serving.control): one live per customer and kind
    alert_outcomes  what happened after each alert and each control: saved, lost or pending (serving.outcomes)
    outbox          webhook deliveries (serving.outbox)
    drift           PSI per column per run; drift_runs, one summary per run
    run_checkpoint  the latest run's checkpoint: checkpoint_tier_state and checkpoint_alerts hold tier_state
                    and alerts as they were before it, and the snapshot it replaced is renamed <name>__prev
                    (serving.runs, `diamond runs rollback`)
    sessions        the dashboard's sessions, server-side: signing out ends one at once
    audit           who did what: sign-ins (failed ones too), alert actions, erasures, promotions
    store_secrets   the store's own random values (the salt of erased customers' hashes)

The per-run snapshot tables are not here: `feature_snapshot`, `score_snapshot` and `recent_events` take their
columns from the model's feature set and are rewritten whole and swapped in by every batch run
(`store.write_snapshot`), so they are data, not schema: migrations neither create nor alter them.

One time convention in every table: naive datetimes in UTC (`core.clock`). Customer ids are text.
A change to a table here needs a new revision in serving/migrations/versions (docs/serving.md says how).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType

SNAPSHOT_TABLES = ("feature_snapshot", "score_snapshot", "recent_events")
"""The batch run's data tables (and their `<name>__new` while a run writes them), outside the schema."""

metadata = sa.MetaData()

score_history_table = sa.Table(
    "score_history",
    metadata,
    sa.Column("customer_id", sa.String(255), primary_key=True),
    sa.Column("as_of", sa.DateTime, primary_key=True),
    sa.Column("churn_probability", sa.Float, nullable=False),
    sa.Column("predicted_value", sa.Float, nullable=False),
    sa.Column("value_at_risk", sa.Float, nullable=False),
    sa.Column("tier", sa.String(64)),
    sa.Column("model_version", sa.String(64)),
    sa.Index("ix_score_history_as_of", "as_of"),
)

score_runs_table = sa.Table(
    "score_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("as_of", sa.DateTime, nullable=False),
    sa.Column("model_version", sa.String(64)),
    sa.Column("customers", sa.Integer),
    sa.Column("parquet", sa.Text),  # the run's Parquet score table
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_score_runs_created_at", "created_at"),
)

tier_state_table = sa.Table(
    "tier_state",
    metadata,
    sa.Column("customer_id", sa.String(255), primary_key=True),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("runs_below", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),  # as_of of the run that last changed it
    sa.CheckConstraint("runs_below >= 0", name="ck_tier_state_runs_below"),
)

tier_history_table = sa.Table(
    "tier_history",
    metadata,
    sa.Column("customer_id", sa.String(255), primary_key=True),
    sa.Column("as_of", sa.DateTime, primary_key=True),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("tier_raw", sa.String(64), nullable=False),
    sa.Column("previous_tier", sa.String(64)),
    sa.Column("runs_below", sa.Integer, nullable=False),
    sa.Index("ix_tier_history_as_of", "as_of"),
)

tier_runs_table = sa.Table(
    "tier_runs",
    metadata,
    sa.Column("as_of", sa.DateTime, primary_key=True),
    sa.Column("applied_at", sa.DateTime, nullable=False),
    sa.Column("customers", sa.Integer, nullable=False),
    sa.Column("tier_order", sa.Text, nullable=False),  # JSON list, best first
    sa.Column("demote_after", sa.Integer, nullable=False),
)

_not_resolved = sa.text("status != 'resolved'")
alerts_table = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("tier", sa.String(64)),
    sa.Column("churn_probability", sa.Float, nullable=False),
    sa.Column("predicted_value", sa.Float, nullable=False),
    sa.Column("value_at_risk", sa.Float, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),  # JSON list of strings
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
    # the customer withdrew consent to be contacted (serving.consent): shown, never sent out
    sa.Column("do_not_contact", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("priority", sa.Float, nullable=False),  # the rank (serving.alert_rules.priority), highest first
    # when it entered its team's list (actionable, delivered); None while queued (serving.capacity) and for
    # an alert that left the queue without entering. The treated arm starts here (serving.outcomes)
    sa.Column("entered_at", sa.DateTime),
    sa.CheckConstraint(
        "status IN ('queued', 'open', 'acknowledged', 'snoozed', 'resolved')", name="ck_alerts_status"
    ),
    # at most one live alert per (customer, kind), even against a concurrent writer (a partial unique index)
    sa.Index(
        "uq_alerts_live_customer_kind",
        "customer_id",
        "kind",
        unique=True,
        sqlite_where=_not_resolved,
        postgresql_where=_not_resolved,
    ),
    sa.Index("ix_alerts_status_value_at_risk", "status", "value_at_risk"),
    sa.Index("ix_alerts_status_priority", "status", "priority"),
    sa.Index("ix_alerts_customer_id", "customer_id"),
)

alert_actions_table = sa.Table(
    "alert_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # acknowledged | snoozed | resolved
    sa.Column("who", sa.String(255)),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("detail", sa.Text),
    sa.Index("ix_alert_actions_alert_id", "alert_id"),
)

_control_live = sa.text("closed_at IS NULL")
alert_controls_table = sa.Table(
    "alert_controls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("tier", sa.String(64)),
    sa.Column("churn_probability", sa.Float, nullable=False),
    sa.Column("predicted_value", sa.Float, nullable=False),
    sa.Column("value_at_risk", sa.Float, nullable=False),
    sa.Column("playbook", sa.Text),  # the playbook it would have had
    sa.Column("share", sa.Float, nullable=False),  # the held-out share it was drawn under
    sa.Column("opened_at", sa.DateTime, nullable=False),  # as_of of the run that held it out
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("closed_at", sa.DateTime),  # None: live (it would still be an alert)
    # at most one live control per (customer, kind), as for alerts
    sa.Index(
        "uq_alert_controls_live_customer_kind",
        "customer_id",
        "kind",
        unique=True,
        sqlite_where=_control_live,
        postgresql_where=_control_live,
    ),
    sa.Index("ix_alert_controls_customer_id", "customer_id"),
)

alert_outcomes_table = sa.Table(
    "alert_outcomes",
    metadata,
    sa.Column("arm", sa.String(16), primary_key=True),  # treated (an alert) | control
    sa.Column("episode_id", sa.Integer, primary_key=True),  # alerts.id or alert_controls.id
    sa.Column("customer_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("tier", sa.String(64)),  # at opening
    sa.Column("playbook", sa.Text),  # at opening
    sa.Column("value_at_risk", sa.Float, nullable=False),  # at opening
    sa.Column("opened_at", sa.DateTime, nullable=False),
    sa.Column("horizon_days", sa.Integer, nullable=False),  # the served model's horizon at opening
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("outcome_at", sa.DateTime),
    sa.Column("days_to_outcome", sa.Float),
    sa.Column("value_after", sa.Float, nullable=False),  # net spend in (opened_at, observed_until]
    sa.Column("observed_until", sa.DateTime, nullable=False),  # min(history end, opened_at + horizon)
    sa.Column("mature", sa.Boolean, nullable=False),  # the history reaches opened_at + horizon
    sa.Column("computed_at", sa.DateTime, nullable=False),  # the history end it was computed with
    sa.CheckConstraint("arm IN ('treated', 'control')", name="ck_alert_outcomes_arm"),
    sa.CheckConstraint("outcome IN ('saved', 'lost', 'pending')", name="ck_alert_outcomes_outcome"),
    sa.Index("ix_alert_outcomes_customer_id", "customer_id"),
    sa.Index("ix_alert_outcomes_opened_at", "opened_at"),
)

outbox_table = sa.Table(
    "outbox",
    metadata,
    sa.Column("webhook_id", sa.String(255), primary_key=True),  # idempotency key, same on every retry
    sa.Column("destination", sa.String(255), nullable=False),  # Endpoint.name
    sa.Column("payload", sa.Text, nullable=False),  # JSON text
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, default="pending"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered_at", sa.DateTime, nullable=True),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="ck_outbox_status"),
    sa.Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
)

drift_table = sa.Table(
    "drift",
    metadata,
    sa.Column("as_of", sa.DateTime, primary_key=True),
    sa.Column("model_version", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),  # a model input or a score
    sa.Column("kind", sa.String(16), nullable=False),  # feature | score
    sa.Column("psi", sa.Float, nullable=False),
    sa.Column("watched", sa.Boolean, nullable=False),  # counted towards the alert (drift.watch)
)

drift_runs_table = sa.Table(
    "drift_runs",
    metadata,
    sa.Column("as_of", sa.DateTime, primary_key=True),
    sa.Column("model_version", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("customers", sa.Integer, nullable=False),
    sa.Column("max_psi", sa.Float, nullable=False),  # over the watched columns
    sa.Column("worst", sa.String(255), nullable=False),
    sa.Column("over", sa.Integer, nullable=False),  # watched columns at or over psi_alert
    sa.Column("psi_alert", sa.Float, nullable=False),
    sa.Column("alert", sa.Boolean, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),  # JSON list of sentences
)


run_checkpoint_table = sa.Table(
    "run_checkpoint",
    metadata,
    sa.Column("as_of", sa.DateTime, primary_key=True),  # the run it was taken for (one row at most)
    sa.Column("taken_at", sa.DateTime, nullable=False),  # wall clock: outbox rows created later are the run's
    # the run's snapshot write moved the snapshot it replaced to <name>__prev (until then it is the live one)
    sa.Column("snapshot_kept", sa.Boolean, nullable=False, server_default=sa.false()),
)

# the state a batch run changes in place, as it was before the latest run (serving.runs, `diamond runs
# rollback`)
checkpoint_tier_state_table = sa.Table(
    "checkpoint_tier_state", metadata, *(c._copy() for c in tier_state_table.columns)
)
checkpoint_alerts_table = sa.Table(
    "checkpoint_alerts",
    metadata,
    *(c._copy() for c in alerts_table.columns),
)

sessions_table = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # sha256 hex of the session id the cookie carries
    sa.Column("key_id", sa.String(16), nullable=False),  # serving.access.key_id of the key signed in with
    sa.Column("name", sa.String(64), nullable=False),  # the key's name at sign-in
    sa.Column("client", sa.String(64)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("ended_at", sa.DateTime),  # signed out (or ended by an admin): refused from then on
    sa.Index("ix_sessions_key_id", "key_id"),
)

audit_table = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("who", sa.String(255)),  # the key's name (or the CLI user); None: nobody signed in
    sa.Column("role", sa.String(16)),
    sa.Column("action", sa.String(32), nullable=False),  # serving.audit.ACTIONS
    sa.Column("target", sa.String(255)),  # an alert id, a model version, a salted customer hash
    sa.Column("client", sa.String(64)),  # the request's address, for the dashboard and the API
    sa.Column("detail", sa.Text),
    sa.Index("ix_audit_at", "at"),
    sa.Index("ix_audit_action_target", "action", "target"),
)

store_secrets_table = sa.Table(
    "store_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),  # e.g. the salt of erased customers' hashes
)


def is_snapshot_table(name: str) -> bool:
    """True for a batch run's data tables (the `__new` copies a run swaps in, and the `__prev` copies a
    checkpoint keeps), which the schema and its migrations leave alone."""
    return name.removesuffix("__new").removesuffix("__prev") in SNAPSHOT_TABLES


def include_name(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    """Alembic's `include_name` hook: the snapshot tables and their indexes are left out of autogenerate and
    of schema comparisons."""
    table = name if type_ == "table" else parent_names.get("table_name")
    return table is None or not is_snapshot_table(table)
