"""Erasure (`diamond customers forget ID...`, or an admin's button on the dashboard): every row the serving
store holds about a customer is deleted, in one transaction, and the run's score tables (Parquet, in
scores_dir) are rewritten without them. What is deleted: the feature and score snapshots and the recent
events, the score history, the tier state and history, the latest run's checkpoint of them (so `diamond runs
rollback` cannot bring them back), the customer's alerts and every action logged on them, their controls and
outcomes (serving.control, serving.outcomes),
and every outbox message about those alerts (pending, dead and delivered: the store keeps no copy of what was
sent; a receiver that has one must erase it on its side).

What remains is recorded in the audit table as one `forget` row per customer, whose target is the customer's
salted hash (serving.audit.customer_hash), never the id. That row is also how later runs know the customer is
gone: `without_erased` drops them from a batch run's rows before anything is scored or written, so a history
that still holds them does not bring them back (remove them from the source CRM data as well).

What stays, by design: aggregates learned from the customer's history inside models already trained (tree
split points, the drift reference's histograms, BTYD parameters), and counts in past runs' logs. Training a
new model on a history without the customer (`diamond retrain --force` or `diamond train`, then promotion)
removes their contribution from the served model; older versions in the MLflow registry keep theirs until
deleted (docs/dashboard.md, "Privacy").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from serving import audit, schema, store
from serving.alert_rules import MODEL_ID
from serving.schema import (
    alert_actions_table,
    alert_controls_table,
    alert_outcomes_table,
    alerts_table,
    audit_table,
    checkpoint_alerts_table,
    checkpoint_tier_state_table,
    outbox_table,
    score_history_table,
    score_runs_table,
    tier_history_table,
    tier_state_table,
)


@dataclass(frozen=True)
class Forgotten:
    """What `forget` did: per table, the rows deleted; the Parquet score tables rewritten."""

    deleted: dict[str, int]
    parquet_files: int

    @property
    def rows(self) -> int:
        return sum(self.deleted.values())

    @property
    def found(self) -> bool:
        return self.rows > 0


def forget(
    engine: sa.Engine,
    customer_ids: Sequence[str],
    who: str,
    role: str | None = None,
    client: str | None = None,
) -> Forgotten:
    """Delete every stored row about these customers (one transaction), record each as a salted hash in the
    audit table, then rewrite the score tables without them. ValueError for an empty or reserved id."""
    ids = sorted({str(c).strip() for c in customer_ids})
    if not ids or "" in ids:
        raise ValueError("customers forget: give at least one non-empty customer id")
    if MODEL_ID in ids:
        raise ValueError(f"customers forget: {MODEL_ID!r} is the model-health alert's id, not a customer")
    deleted: dict[str, int] = {}
    with engine.begin() as con:
        tables = set(sa.inspect(con).get_table_names())
        # the snapshots, and the previous run's copies a checkpoint keeps for `diamond runs rollback`
        for name in [n for base in schema.SNAPSHOT_TABLES for n in (base, f"{base}__prev")]:
            if name in tables:
                deleted[name] = store.forget_rows(con, name, ids)
        for table in (
            score_history_table,
            tier_state_table,
            tier_history_table,
            checkpoint_tier_state_table,  # a rollback must not bring them back
            checkpoint_alerts_table,
            alert_controls_table,  # held-out would-be alerts and what became of them (serving.control)
            alert_outcomes_table,
        ):
            deleted[table.name] = con.execute(sa.delete(table).where(table.c.customer_id.in_(ids))).rowcount
        a = alerts_table
        alert_ids = list(con.execute(sa.select(a.c.id).where(a.c.customer_id.in_(ids))).scalars())
        deleted["outbox"] = sum(
            con.execute(
                sa.delete(outbox_table).where(outbox_table.c.webhook_id.like(f"alert-{i}-v%"))
            ).rowcount
            for i in alert_ids
        )
        act = alert_actions_table
        deleted[act.name] = con.execute(sa.delete(act).where(act.c.alert_id.in_(alert_ids))).rowcount
        deleted[a.name] = con.execute(sa.delete(a).where(a.c.id.in_(alert_ids))).rowcount
        salt = audit.salt(con)
        for cid in ids:
            audit.record(con, "forget", who, role, audit.customer_hash(salt, cid), client)
        files = [str(p) for p in con.execute(sa.select(score_runs_table.c.parquet)).scalars() if p]
    _vacuum(engine)
    return Forgotten(deleted, sum(_rewrite(Path(f), ids) for f in files))


def _vacuum(engine: sa.Engine) -> None:
    """SQLite keeps deleted rows (and the dropped snapshots of earlier runs) in free pages until VACUUM
    rewrites the file: without it the ids could still be read from the file's bytes. PostgreSQL keeps dead
    rows until its own VACUUM reuses the space (docs: run VACUUM FULL after erasures if that matters)."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
        con.exec_driver_sql("VACUUM")
        con.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def erased(engine: sa.Engine) -> frozenset[str]:
    """The salted hashes of every customer erased from this store."""
    t = audit_table
    with engine.connect() as con:
        return frozenset(con.execute(sa.select(t.c.target).where(t.c.action == "forget")).scalars())


def without_erased(engine: sa.Engine, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` without the rows of erased customers (its `customer_id` hashed with the store's salt); the
    frame itself when nobody was ever erased."""
    return eraser(engine)(frame)


def eraser(engine: sa.Engine) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """`without_erased` with the store read once, now: for a run's frames filtered later, or in another
    thread, without asking the store again for each."""
    gone = erased(engine)
    if not gone:
        return _as_it_is
    salt = audit.salt(engine)

    def drop(frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty:
            return frame
        ids = frame["customer_id"].astype(str)
        hashed = {c: audit.customer_hash(salt, c) in gone for c in ids.unique()}
        return frame[~ids.map(hashed).to_numpy(dtype=bool)]

    return drop


def _as_it_is(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def _rewrite(path: Path, ids: Iterable[str]) -> int:
    """Rewrite one score table without these customers (atomically); 1 if it held any of them, else 0."""
    if not path.is_file():
        return 0
    table = pq.read_table(path)
    if "customer_id" not in table.column_names:
        return 0
    drop = pc.is_in(table.column("customer_id").cast(pa.string()), value_set=pa.array(list(ids), pa.string()))
    if not pc.any(drop).as_py():
        return 0
    tmp = path.with_name(f".{path.name}.forget.tmp")
    pq.write_table(table.filter(pc.invert(drop)), tmp)
    os.replace(tmp, path)
    return 1
