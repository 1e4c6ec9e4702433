"""Value tiers that do not flap: hysteresis over the model's raw tiers, their stored state and history, and
classic RFM segments.

The model cuts tiers afresh every run (training.artefact.assign_tiers), so a customer near a cut point would
bounce between gold and silver from one run to the next. CRM teams act on tiers (an account manager per
diamond customer), so a promotion is applied at once but a demotion only after `demote_after` consecutive
runs below the current tier.

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
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.clock import utc_naive, utc_now
from serving.config import DEFAULT_DEMOTE_AFTER
from serving.schema import tier_history_table, tier_runs_table, tier_state_table

RESULT_COLUMNS = ["customer_id", "tier", "tier_raw", "runs_below", "changed", "previous_tier"]


# --- hysteresis (pure) -------------------------------------------------------------------------------------


def apply_hysteresis(
    previous: pd.DataFrame | None, current: pd.DataFrame, order: Sequence[str], demote_after: int
) -> pd.DataFrame:
    """Each current customer's tier after this run: a better raw tier promotes at once; a worse one only
    demotes after `demote_after` consecutive runs below the current tier (to the latest raw tier); a run at or
    above the current tier resets the counter. New customers take their raw tier.

    `previous`: customer_id, tier, runs_below (the stored state); `current`: customer_id, tier_raw. Returns
    customer_id, tier, tier_raw, runs_below, changed, previous_tier in `current`'s row order; `changed` is
    False for new customers (their previous_tier is missing). Customers only in `previous` are not returned.
    """
    _check_order(order)
    _check_demote_after(demote_after)
    cur = _check_current(current, order)
    if previous is None or previous.empty:
        prev = pd.DataFrame(
            {"customer_id": cur["customer_id"].iloc[:0], "previous_tier": [], "prev_runs": []}
        )
    else:
        prev = _check_previous(previous, order)
    merged = cur.merge(prev, on="customer_id", how="left", validate="one_to_one", sort=False)

    rank = {name: i for i, name in enumerate(order)}
    raw_level = merged["tier_raw"].map(rank).to_numpy(dtype=np.float64)
    prev_level = merged["previous_tier"].map(rank).to_numpy(dtype=np.float64, na_value=np.nan)
    prev_runs = merged["prev_runs"].to_numpy(dtype=np.float64, na_value=np.nan)
    new = np.isnan(prev_level)
    below = ~new & (raw_level > prev_level)
    runs = np.where(below, np.nan_to_num(prev_runs) + 1, 0).astype(np.int64)
    demote = below & (runs >= demote_after)
    runs[demote] = 0
    keep = below & ~demote
    raw = merged["tier_raw"].to_numpy(dtype=object)
    before = merged["previous_tier"].to_numpy(dtype=object, na_value=None)
    tier = np.where(keep, before, raw)
    return _result_frame(
        pd.DataFrame(
            {
                "customer_id": merged["customer_id"].to_numpy(dtype=object),
                "tier": tier,
                "tier_raw": raw,
                "runs_below": runs,
                "changed": ~new & (tier != before),
                "previous_tier": before,
            }
        )
    )


# --- storage ------------------------------------------------------------------------------------------------


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
    _check_order(order)
    _check_demote_after(demote_after)
    cur = _check_current(_text_ids(current), order)
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
            result = apply_hysteresis(previous, cur, order, demote_after)
            _write_state(conn, when, previous, result)
            _write_history(conn, when, result)
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


# --- RFM segments -------------------------------------------------------------------------------------------

SEGMENTS: dict[tuple[bool, bool, bool], str] = {  # (R high, F high, M high) -> segment
    (True, True, True): "important-value",
    (True, False, True): "important-develop",
    (False, True, True): "important-retain",
    (False, False, True): "important-win-back",
    (True, True, False): "general-value",
    (True, False, False): "general-develop",
    (False, True, False): "general-retain",
    (False, False, False): "general-win-back",
}


@dataclass(frozen=True)
class RfmReference:
    """Medians of the scored population on each axis. A customer is "high" on an axis when strictly better
    than the median: more recent (fewer recency days), more purchase days, more spend. Never-bought customers
    (null recency) count as infinitely old."""

    recency_days: float
    frequency: float
    monetary: float

    @classmethod
    def fit(cls, rows: pd.DataFrame) -> RfmReference:
        r, f, m = _rfm_arrays(rows)
        if r.size == 0:
            raise ValueError("RFM reference: no rows to take medians of")
        return cls(float(np.median(r)), float(np.median(f)), float(np.median(m)))


def rfm_segment(
    recency_days: float | None, frequency: float | None, monetary: float | None, reference: RfmReference
) -> str:
    """The classic RFM segment of one customer against the population medians in `reference`."""
    row = pd.DataFrame(
        {"recency_days": [recency_days], "frequency_days": [frequency], "monetary_sum": [monetary]}
    )
    return str(rfm_segments(row, reference).iloc[0])


def rfm_segments(rows: pd.DataFrame, reference: RfmReference | None = None) -> pd.Series:
    """The RFM segment of every row (columns recency_days, frequency_days, monetary_sum), scored against
    `reference` or, by default, against the medians of `rows` themselves. Index follows `rows`."""
    if rows.empty:
        return pd.Series([], index=rows.index, dtype=object, name="rfm_segment")
    ref = reference if reference is not None else RfmReference.fit(rows)
    r, f, m = _rfm_arrays(rows)
    r_high, f_high, m_high = r < ref.recency_days, f > ref.frequency, m > ref.monetary
    names = [SEGMENTS[(bool(a), bool(b), bool(c))] for a, b, c in zip(r_high, f_high, m_high, strict=True)]
    return pd.Series(names, index=rows.index, dtype=object, name="rfm_segment")


# --- helpers ------------------------------------------------------------------------------------------------


def _check_order(order: Sequence[str]) -> None:
    if isinstance(order, str) or len(order) == 0:
        raise ValueError(f"tier order must be a non-empty list of tier names, best first; got {order!r}")
    if len(set(order)) != len(order):
        raise ValueError(f"tier order repeats a name: {list(order)}")


def _check_demote_after(demote_after: int) -> None:
    if int(demote_after) != demote_after or demote_after < 1:
        raise ValueError(f"demote_after must be a whole number of runs >= 1, got {demote_after!r}")


def _check_current(current: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    missing = {"customer_id", "tier_raw"} - set(current.columns)
    if missing:
        raise ValueError(f"current scores lack column(s) {sorted(missing)}")
    cur = current[["customer_id", "tier_raw"]].reset_index(drop=True)
    _check_ids(cur, "current scores")
    unknown = sorted(set(cur["tier_raw"].dropna()) - set(order)) + (
        ["<null>"] if cur["tier_raw"].isna().any() else []
    )
    if unknown:
        raise ValueError(f"current scores: tier_raw {unknown} not among the tiers {list(order)}")
    return cur


def _check_previous(previous: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    missing = {"customer_id", "tier", "runs_below"} - set(previous.columns)
    if missing:
        raise ValueError(f"previous tiers lack column(s) {sorted(missing)}")
    prev = previous[["customer_id", "tier", "runs_below"]].reset_index(drop=True)
    _check_ids(prev, "previous tiers")
    unknown = sorted(set(prev["tier"].dropna()) - set(order))
    if unknown:
        raise ValueError(
            f"previous tiers: {unknown} not among the tiers {list(order)}; renamed tiers need a reset"
        )
    return prev.rename(columns={"tier": "previous_tier", "runs_below": "prev_runs"})


def _check_ids(frame: pd.DataFrame, what: str) -> None:
    ids = frame["customer_id"]
    if ids.isna().any():
        raise ValueError(f"{what}: {int(ids.isna().sum())} row(s) without a customer_id")
    dup = ids[ids.duplicated()]
    if not dup.empty:
        raise ValueError(f"{what}: customer_id repeated, e.g. {list(dup.unique()[:5])}")


def _text_ids(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    ids = out["customer_id"]
    out["customer_id"] = ids.where(ids.isna(), ids.astype(str))
    return out


def _result_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[RESULT_COLUMNS].copy()
    for col in ("customer_id", "tier", "tier_raw", "previous_tier"):
        out[col] = _nullable(out[col])
    out["runs_below"] = out["runs_below"].astype(np.int64)
    out["changed"] = out["changed"].astype(bool)
    return out.reset_index(drop=True)


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
    return _result_frame(merged)


def _read_state(conn: Connection) -> pd.DataFrame:
    t = tier_state_table
    rows = conn.execute(sa.select(t.c.customer_id, t.c.tier, t.c.runs_below)).all()
    return pd.DataFrame(rows, columns=["customer_id", "tier", "runs_below"])


def _write_state(conn: Connection, when: datetime, previous: pd.DataFrame, result: pd.DataFrame) -> None:
    """Insert new customers; update only the rows whose tier or counter changed (most do not)."""
    t = tier_state_table
    before = previous.set_index("customer_id")
    known = result["customer_id"].isin(before.index)
    fresh = result[~known]
    if not fresh.empty:
        conn.execute(
            sa.insert(t),
            [
                {"customer_id": c, "tier": tier, "runs_below": int(n), "updated_at": when}
                for c, tier, n in zip(fresh["customer_id"], fresh["tier"], fresh["runs_below"], strict=True)
            ],
        )
    old = result[known]
    if old.empty:
        return
    prior = before.loc[old["customer_id"]]
    moved = (prior["tier"].to_numpy() != old["tier"].to_numpy()) | (
        prior["runs_below"].to_numpy() != old["runs_below"].to_numpy()
    )
    upd = old[moved]
    if upd.empty:
        return
    stmt = (
        sa.update(t)
        .where(t.c.customer_id == sa.bindparam("b_id"))
        .values(tier=sa.bindparam("b_tier"), runs_below=sa.bindparam("b_runs"), updated_at=when)
    )
    conn.execute(
        stmt,
        [
            {"b_id": c, "b_tier": tier, "b_runs": int(n)}
            for c, tier, n in zip(upd["customer_id"], upd["tier"], upd["runs_below"], strict=True)
        ],
    )


def _write_history(conn: Connection, when: datetime, result: pd.DataFrame) -> None:
    if result.empty:
        return
    conn.execute(
        sa.insert(tier_history_table),
        [
            {
                "customer_id": c,
                "as_of": when,
                "tier": tier,
                "tier_raw": raw,
                "previous_tier": prev,
                "runs_below": int(n),
            }
            for c, tier, raw, prev, n in zip(
                result["customer_id"],
                result["tier"],
                result["tier_raw"],
                result["previous_tier"],
                result["runs_below"],
                strict=True,
            )
        ],
    )


def _rfm_arrays(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = {"recency_days", "frequency_days", "monetary_sum"} - set(rows.columns)
    if missing:
        raise ValueError(f"RFM segments need column(s) {sorted(missing)}")
    r = pd.to_numeric(rows["recency_days"], errors="raise").astype("float64").fillna(np.inf).to_numpy()
    f = pd.to_numeric(rows["frequency_days"], errors="raise").astype("float64").fillna(0.0).to_numpy()
    m = pd.to_numeric(rows["monetary_sum"], errors="raise").astype("float64").fillna(0.0).to_numpy()
    return r, f, m
