"""Stored value tiers: the state hysteresis carries from run to run, every run's tiers, and the ledger of
applied runs. Each run applies serving.hysteresis to the model's raw tiers against the stored state.

Storage is SQLAlchemy Core with portable SQL (SQLite by default, PostgreSQL in production), in tables declared
in serving.schema:

    tier_state    customer_id PK, tier, runs_below, updated_at (as_of of the run that last changed it)
    tier_history  append-only: customer_id, as_of, tier, tier_raw, previous_tier, runs_below;
                  PK (customer_id, as_of)
    tier_runs     as_of PK, applied_at, customers, tier_order, demote_after: the ledger of applied runs that
                  makes re-running an as_of idempotent and refuses runs older than the latest one

Customer ids are stored as text, as the history contract keeps them; times are naive UTC.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.clock import utc_naive, utc_now
from serving import bulk
from serving.config import DEFAULT_DEMOTE_AFTER
from serving.hysteresis import RESULT_COLUMNS, check_current, check_settings, hysteresis_of, result_frame
from serving.schema import tier_history_table, tier_runs_table, tier_state_table


def update_tiers(
    engine: Engine,
    as_of: datetime | pd.Timestamp | str,
    current: pd.DataFrame,
    order: Sequence[str],
    demote_after: int = DEFAULT_DEMOTE_AFTER,
) -> pd.DataFrame:
    """Apply hysteresis to this run's raw tiers against the stored state and write state, history and the run
    ledger in one transaction: all of it or none of it.

    Re-running an as_of that was already applied changes nothing and returns the stored result (so a retried
    batch job is safe); if the raw tiers given differ from the stored ones it raises ValueError instead, as
    the run would otherwise silently disagree with what was recorded. An as_of older than the latest applied
    run raises ValueError: hysteresis counts runs in time order. Returns what `apply_hysteresis` returns.
    """
    when = utc_naive(as_of)
    check_settings(order, demote_after)
    cur = check_current(_text_ids(current), order)
    try:
        with engine.begin() as conn:
            if _applied(conn, when):
                return _replay(conn, when, cur)
            latest = conn.execute(sa.select(sa.func.max(tier_runs_table.c.as_of))).scalar()
            if latest is not None and when < latest:
                raise ValueError(
                    f"as_of {when.isoformat()} is older than the latest applied tier run "
                    f"{latest.isoformat()}; runs must be applied in time order"
                )
            conn.execute(
                sa.insert(tier_runs_table).values(
                    as_of=when,
                    applied_at=utc_now(),
                    customers=len(cur),
                    tier_order=json.dumps(list(order)),
                    demote_after=demote_after,
                )
            )
            previous = _read_state(conn)
            result = hysteresis_of(previous, cur, order, demote_after)
            _write(conn, when, previous, result)
            return result
    except sa.exc.IntegrityError:
        # a concurrent job applied the same as_of first: its result is the answer; anything else re-raises
        with engine.connect() as conn:
            if _applied(conn, when):
                return _replay(conn, when, cur)
        raise


def tier_history(engine: Engine, customer_id: str) -> pd.DataFrame:
    """One customer's tier per applied run, oldest first: as_of, tier, tier_raw, previous_tier, runs_below."""
    t = tier_history_table
    query = (
        sa.select(t.c.as_of, t.c.tier, t.c.tier_raw, t.c.previous_tier, t.c.runs_below)
        .where(t.c.customer_id == str(customer_id))
        .order_by(t.c.as_of)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    out = pd.DataFrame(rows, columns=["as_of", "tier", "tier_raw", "previous_tier", "runs_below"])
    out["previous_tier"] = _nullable(out["previous_tier"])
    return out


def latest_run(engine: Engine) -> tuple[datetime, list[str]] | None:
    """The as_of and tier order (best first) of the latest applied run; None before the first."""
    if not sa.inspect(engine).has_table(tier_runs_table.name):
        return None
    t = tier_runs_table
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.c.as_of, t.c.tier_order).order_by(t.c.as_of.desc()).limit(1)).first()
    return None if row is None else (row.as_of, list(json.loads(row.tier_order)))


def tier_movements(
    engine: Engine, as_of: datetime | pd.Timestamp | str, include_new: bool = False
) -> pd.DataFrame:
    """How many customers moved between tiers in the run at `as_of`: previous_tier, tier, direction
    ('promoted' | 'demoted', or 'new' with include_new for customers seen for the first time), customers.
    Ordered best previous tier first, then best new tier first."""
    when = utc_naive(as_of)
    t = tier_history_table
    moved = sa.or_(t.c.previous_tier.is_(None), t.c.previous_tier != t.c.tier)
    if not include_new:
        moved = sa.and_(t.c.previous_tier.is_not(None), t.c.previous_tier != t.c.tier)
    query = (
        sa.select(t.c.previous_tier, t.c.tier, sa.func.count().label("customers"))
        .where(t.c.as_of == when, moved)
        .group_by(t.c.previous_tier, t.c.tier)
    )
    with engine.connect() as conn:
        run = conn.execute(sa.select(tier_runs_table.c.tier_order).where(tier_runs_table.c.as_of == when))
        order_json = run.scalar()
        if order_json is None:
            raise KeyError(f"no tier run applied at {when.isoformat()}")
        rows = conn.execute(query).all()
    rank = {name: i for i, name in enumerate(json.loads(order_json))}
    out = []
    for previous_tier, tier, customers in rows:
        if previous_tier is None:
            direction = "new"
        else:
            direction = "promoted" if rank.get(tier, 0) < rank.get(previous_tier, 0) else "demoted"
        out.append((previous_tier, tier, direction, int(customers)))
    out.sort(key=lambda r: (rank.get(r[0], -1) if r[0] is not None else len(rank), rank.get(r[1], 0)))
    moves = pd.DataFrame(out, columns=["previous_tier", "tier", "direction", "customers"])
    moves["previous_tier"] = _nullable(moves["previous_tier"])
    return moves


# --- helpers -----------------------------------------------------------------------------------------------


def _text_ids(frame: pd.DataFrame) -> pd.DataFrame:
    ids = frame["customer_id"]
    if ids.dtype == object and pd.api.types.infer_dtype(ids, skipna=False) == "string":
        return frame  # text already (a batch run's million ids): no copy, no conversion
    out = frame.copy()
    out["customer_id"] = ids.where(ids.isna(), ids.astype(str))
    return out


def _nullable(column: pd.Series) -> pd.Series:
    """Text with None for missing (pandas 3 would infer its str dtype, whose missing value is NaN)."""
    return column.astype(object).where(column.notna(), None)


def _applied(conn: Connection, when: datetime) -> bool:
    query = sa.select(tier_runs_table.c.as_of).where(tier_runs_table.c.as_of == when)
    return conn.execute(query).first() is not None


def _replay(conn: Connection, when: datetime, cur: pd.DataFrame) -> pd.DataFrame:
    t = tier_history_table
    query = sa.select(t.c.customer_id, t.c.tier, t.c.tier_raw, t.c.runs_below, t.c.previous_tier).where(
        t.c.as_of == when
    )
    stored = pd.DataFrame(
        conn.execute(query).all(), columns=["customer_id", *RESULT_COLUMNS[1:4], "previous_tier"]
    )
    same_ids = set(stored["customer_id"]) == set(cur["customer_id"]) and len(stored) == len(cur)
    merged = cur.merge(stored, on="customer_id", how="left", suffixes=("_given", ""))
    if not same_ids or (merged["tier_raw_given"] != merged["tier_raw"]).any():
        raise ValueError(
            f"tier run {when.isoformat()} was already applied with different customers or raw tiers; "
            "it is not re-applied (score a new as_of instead)"
        )
    merged["changed"] = merged["previous_tier"].notna() & (merged["previous_tier"] != merged["tier"])
    return result_frame(merged)


def _read_state(conn: Connection) -> pd.DataFrame:
    t = tier_state_table
    rows = conn.execute(sa.select(t.c.customer_id, t.c.tier, t.c.runs_below)).all()
    # plain tuples: pandas asks each SQLAlchemy row for attributes it lacks (an exception a row)
    return pd.DataFrame([tuple(r) for r in rows], columns=["customer_id", "tier", "runs_below"])


# the run's result, bound once into a temporary table of the transaction's connection, then copied inside the
# database: into the history (every row) and the state (new customers inserted, changed ones updated). Binding
# a million rows' values twice (state, then history) took twice as long as binding them once and copying
_RESULT = sa.Table(
    "diamond_tier_result",
    sa.MetaData(),
    sa.Column("customer_id", sa.String(255)),
    sa.Column("tier", sa.String(64)),
    sa.Column("tier_raw", sa.String(64)),
    sa.Column("previous_tier", sa.String(64)),
    sa.Column("runs_below", sa.Integer),
    sa.Column("fresh", sa.Boolean),  # not in the state yet: inserted there
    sa.Column("moved", sa.Boolean),  # in the state with another tier or counter: updated there
    prefixes=["TEMPORARY"],
)


def _write(conn: Connection, when: datetime, previous: pd.DataFrame, result: pd.DataFrame) -> None:
    """The history gets every row; the state inserts new customers and updates only the rows whose tier or
    counter changed (most do not). UPDATE ... FROM: PostgreSQL, SQLite 3.33 or later."""
    if result.empty:
        return
    before = previous.set_index("customer_id")
    known = result["customer_id"].isin(before.index).to_numpy()
    moved = np.zeros(len(result), dtype=bool)
    if known.any():
        old = result[known]
        prior = before.loc[old["customer_id"]]
        moved[known] = (prior["tier"].to_numpy() != old["tier"].to_numpy()) | (
            prior["runs_below"].to_numpy() != old["runs_below"].to_numpy()
        )
    _RESULT.create(conn)  # in the transaction: a failure rolls its creation back with everything else
    columns = ["customer_id", "tier", "tier_raw", "previous_tier", "runs_below"]
    bulk.insert_frame(conn, _RESULT, result[columns].assign(fresh=~known, moved=moved))
    r, at = _RESULT.c, sa.literal(when, sa.DateTime())
    state = tier_state_table
    conn.execute(
        sa.insert(tier_history_table).from_select(
            ["customer_id", "as_of", *columns[1:]],
            sa.select(r.customer_id, at, r.tier, r.tier_raw, r.previous_tier, r.runs_below),
        )
    )
    conn.execute(
        sa.insert(state).from_select(
            ["customer_id", "tier", "runs_below", "updated_at"],
            sa.select(r.customer_id, r.tier, r.runs_below, at).where(r.fresh),
        )
    )
    if moved.any():
        conn.execute(
            sa.update(state)
            .where(state.c.customer_id == r.customer_id, r.moved)
            .values(tier=r.tier, runs_below=r.runs_below, updated_at=when)
        )
    _RESULT.drop(conn)
