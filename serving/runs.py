"""The store's batch runs: list them, and undo the latest (`diamond runs list`, `diamond runs rollback`).

A batch run (serving.batch) changes the store in place: tier state and history, alerts, the outbox, the score
history, drift, and the snapshot the service answers from. One bad run (a history with a stray row dated 2031
scores everyone "as of 2031") would otherwise stay for good: tier runs must go in time order, so every later
run at a real date is refused. So before a run writes anything, `checkpoint` copies what the run changes in
place — `tier_state` and `alerts` — and notes when (the three snapshot tables are not copied: the run's
snapshot write renames the ones it replaces to `<name>__prev`, a rename where copying a million customers'
rows took a while, and says so in the checkpoint); `rollback` puts those back and
deletes what the run appended (its tier history and ledger row, its score history and run log, its drift, the
alerts it opened with their actions, and its outbox rows not yet delivered). Webhooks already delivered cannot
be recalled: `rollback` counts them.

One checkpoint is kept, the latest run's: the latest run can be undone, once. Re-running the same as_of keeps
the checkpoint from before its first run. `checkpoint` is also the store's write probe: it fails on a
read-only or full store before any heavy compute, with a message instead of a traceback at the end.
People's actions on alerts after the checkpoint are undone with the alerts (the log of them is kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from core.clock import utc_naive, utc_now
from serving import schema, store
from serving.schema import (
    alert_actions_table,
    alert_controls_table,
    alert_outcomes_table,
    alerts_table,
    checkpoint_alerts_table,
    checkpoint_tier_state_table,
    drift_runs_table,
    drift_table,
    outbox_table,
    run_checkpoint_table,
    score_history_table,
    score_runs_table,
    tier_history_table,
    tier_runs_table,
    tier_state_table,
)

RUN_COLUMNS = ["as_of", "model_version", "customers", "created_at", "parquet", "can_roll_back"]
_COPIES = ((tier_state_table, checkpoint_tier_state_table), (alerts_table, checkpoint_alerts_table))


class StoreNotWritable(ValueError):
    """The store cannot be written (read-only, full, locked): a ValueError, so commands exit 2 with it."""


@dataclass(frozen=True)
class Rollback:
    """What `rollback` undid."""

    as_of: datetime
    previous: datetime | None  # the run the store is back at (None: no run before)
    tiers_restored: int  # customers in tier_state now
    alerts_removed: int  # alerts the run opened
    alerts_restored: int  # alerts as they were before the run
    outbox_removed: int  # the run's notifications not yet delivered
    outbox_delivered: int  # the run's notifications already delivered (cannot be recalled)
    snapshot: str  # "restored" | "removed" (no earlier snapshot: the service has none until the next run)


def describe(eng: sa.Engine, exc: BaseException) -> str:
    """A store error as one sentence naming the store and the cause, without SQL or values."""
    cause = getattr(exc, "orig", None) or exc
    where = eng.url.render_as_string(hide_password=True)
    return f"the store {where} cannot be written ({cause}): nothing of this run was written"


def probe(eng: sa.Engine) -> None:
    """Raise StoreNotWritable unless a row can be written to the store (the write is rolled back): a
    read-only store is refused before a run loads anything."""
    try:
        with eng.connect() as con, con.begin() as tx:
            con.execute(sa.insert(run_checkpoint_table).values(as_of=datetime(1, 1, 1), taken_at=utc_now()))
            tx.rollback()
    except sa.exc.OperationalError as exc:
        raise StoreNotWritable(describe(eng, exc)) from None


def checkpoint(eng: sa.Engine, as_of: datetime) -> None:
    """Before a run as of `as_of` writes: keep tier_state, alerts and the snapshot as they are, for
    `rollback`. A re-run of the checkpoint's as_of keeps the existing checkpoint. Refuses (ValueError) a run
    older than the latest one, before any compute. Raises StoreNotWritable on a store it cannot write."""
    when = utc_naive(as_of)
    latest = latest_as_of(eng)
    if latest is not None and when < latest:
        raise ValueError(
            f"as_of {when:%Y-%m-%d %H:%M:%S} is older than the latest run ({latest:%Y-%m-%d %H:%M:%S}); "
            "runs go in time order. If that run was a mistake, "
            f"`diamond runs rollback {latest:%Y-%m-%dT%H:%M:%S}` undoes it"
        )
    try:
        with eng.begin() as con:
            kept = con.execute(sa.select(run_checkpoint_table.c.as_of)).scalar()
            if kept is not None and kept == when and latest == when:
                return  # a re-run: the checkpoint from before the first run stays
            con.execute(sa.delete(run_checkpoint_table))
            for table, copy in _COPIES:
                con.execute(sa.delete(copy))
                con.execute(sa.insert(copy).from_select(list(table.c.keys()), sa.select(table)))
            # the snapshot is not copied: the run's snapshot write renames the one it replaces to
            # <name>__prev (serving.store.keep_snapshot); until then the live one is the run's "before"
            for name in schema.SNAPSHOT_TABLES:
                con.execute(sa.text(f"DROP TABLE IF EXISTS {name}__prev"))
            con.execute(
                sa.insert(run_checkpoint_table).values(as_of=when, taken_at=utc_now(), snapshot_kept=False)
            )
    except sa.exc.OperationalError as exc:
        raise StoreNotWritable(describe(eng, exc)) from None


def latest_as_of(eng: sa.Engine) -> datetime | None:
    """The as_of of the latest run (tier ledger or run log), None before the first."""
    with eng.connect() as con:
        found = [
            con.execute(sa.select(sa.func.max(t.c.as_of))).scalar()
            for t in (tier_runs_table, score_runs_table)
        ]
    known = [f for f in found if f is not None]
    return max(known) if known else None


def list_runs(eng: sa.Engine) -> pd.DataFrame:
    """Every logged run, newest first (RUN_COLUMNS); `can_roll_back` marks the one `rollback` can undo."""
    t = score_runs_table
    with eng.connect() as con:
        rows = con.execute(
            sa.select(t.c.as_of, t.c.model_version, t.c.customers, t.c.created_at, t.c.parquet).order_by(
                t.c.as_of.desc(), t.c.created_at.desc()
            )
        ).all()
        kept = con.execute(sa.select(run_checkpoint_table.c.as_of)).scalar()
        tiers_only = con.execute(
            sa.select(
                tier_runs_table.c.as_of, tier_runs_table.c.customers, tier_runs_table.c.applied_at
            ).where(tier_runs_table.c.as_of.not_in(sa.select(t.c.as_of)))
        ).all()
    records: list[dict[str, Any]] = [dict(r._mapping) for r in rows]
    records += [
        {"as_of": r.as_of, "model_version": None, "customers": r.customers, "created_at": r.applied_at}
        for r in tiers_only
    ]
    frame = pd.DataFrame(records, columns=RUN_COLUMNS[:-1])
    frame = frame.sort_values(["as_of", "created_at"], ascending=False, kind="stable").reset_index(drop=True)
    return frame.assign(can_roll_back=frame["as_of"] == kept if kept is not None else False)


def rollback(eng: sa.Engine, as_of: datetime) -> Rollback:
    """Undo the latest run, as of `as_of`, in one transaction: tiers, alerts, the outbox and the snapshot go
    back to where the previous run left them. ValueError when `as_of` is not the run the checkpoint was taken
    for (only the latest run can be undone, once)."""
    when = utc_naive(as_of)
    try:
        with eng.begin() as con:
            kept = con.execute(sa.select(run_checkpoint_table)).first()
            if kept is None or kept.as_of != when:
                runs = sorted({r for t in (tier_runs_table, score_runs_table) for r in _as_ofs(con, t)})
                latest = f"; the latest run is as of {runs[-1]:%Y-%m-%dT%H:%M:%S}" if runs else "; no run yet"
                what = (
                    f"only the latest run can be rolled back, once, and only if it wrote its checkpoint "
                    f"(kept for {kept.as_of:%Y-%m-%dT%H:%M:%S})"
                    if kept is not None
                    else "no run to roll back (none since the last rollback)"
                )
                raise ValueError(f"cannot roll back the run as of {when:%Y-%m-%dT%H:%M:%S}: {what}{latest}")
            done = _undo(con, when, kept.taken_at, kept.snapshot_kept)
    except sa.exc.OperationalError as exc:
        raise StoreNotWritable(describe(eng, exc).replace("of this run", "of the rollback")) from None
    return done


def _undo(con: sa.Connection, when: datetime, taken_at: datetime, kept_snapshot: bool) -> Rollback:
    a, ca = alerts_table, checkpoint_alerts_table
    opened = sa.select(a.c.id).where(a.c.id.not_in(sa.select(ca.c.id)))
    removed = int(con.execute(sa.select(sa.func.count()).select_from(opened.subquery())).scalar() or 0)
    con.execute(sa.delete(alert_actions_table).where(alert_actions_table.c.alert_id.in_(opened)))
    for table, copy in _COPIES:
        con.execute(sa.delete(table))
        con.execute(sa.insert(table).from_select(list(copy.c.keys()), sa.select(copy)))
    # the run's controls removed and the ones it closed live again (serving.control); the outcomes of removed
    # alerts and controls go with them (serving.outcomes: the next run records the others again)
    c, oc = alert_controls_table, alert_outcomes_table
    con.execute(sa.delete(c).where(c.c.opened_at == when))
    con.execute(sa.update(c).where(c.c.closed_at == when).values(closed_at=None))
    con.execute(sa.delete(oc).where(oc.c.arm == "control", oc.c.episode_id.not_in(sa.select(c.c.id))))
    con.execute(sa.delete(oc).where(oc.c.arm == "treated", oc.c.episode_id.not_in(sa.select(a.c.id))))
    for table in (tier_history_table, tier_runs_table, score_history_table, score_runs_table, drift_table):
        con.execute(sa.delete(table).where(table.c.as_of == when))
    con.execute(sa.delete(drift_runs_table).where(drift_runs_table.c.as_of == when))
    o = outbox_table
    since = o.c.created_at >= taken_at
    delivered = con.execute(
        sa.select(sa.func.count()).select_from(o).where(since, o.c.status == "delivered")
    ).scalar()
    dropped = con.execute(sa.delete(o).where(since, o.c.status != "delivered")).rowcount
    snapshot = _restore_snapshot(con, bool(kept_snapshot))
    con.execute(sa.delete(run_checkpoint_table))
    previous = [r for t in (tier_runs_table, score_runs_table) for r in _as_ofs(con, t)]

    def count(table: sa.Table) -> int:
        return int(con.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)

    return Rollback(
        as_of=when,
        previous=max(previous) if previous else None,
        tiers_restored=count(tier_state_table),
        alerts_removed=removed,
        alerts_restored=count(alerts_table),
        outbox_removed=int(dropped or 0),
        outbox_delivered=int(delivered or 0),
        snapshot=snapshot,
    )


def _restore_snapshot(con: sa.Connection, kept: bool) -> str:
    """The snapshot tables as the checkpoint kept them; none (removed) where it kept none. When the run
    never replaced the snapshot (`kept` False: it failed or stopped before), the live one is the one from
    before it and stays."""
    inspector = sa.inspect(con)
    if not kept:
        return "restored" if any(inspector.has_table(n) for n in schema.SNAPSHOT_TABLES) else "removed"
    restored = False
    for name in schema.SNAPSHOT_TABLES:
        con.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        if inspector.has_table(f"{name}__prev"):
            con.execute(sa.text(f"ALTER TABLE {name}__prev RENAME TO {name}"))
            con.execute(sa.text(store.snapshot_index(con, name, name)))
            restored = True
    return "restored" if restored else "removed"


def _as_ofs(con: sa.Connection, table: sa.Table) -> list[datetime]:
    return [r for r in con.execute(sa.select(table.c.as_of).distinct()).scalars()]
