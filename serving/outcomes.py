"""Outcomes: what happened after each alert (the treated arm) and each control (serving.control), read from
the later history by the served model's own churn definition, over the alert's horizon H (the model's
prediction horizon when the alert opened), from the run that opened it (T0):

- saved: the customer bought (a purchase, amount >= 0) in (T0, T0 + H]; for a contract customer (churn
  `contractual`, or `mixed` with `is_subscriber` true): no cancellation in (T0, T0 + H];
- lost: churned by the same definition: no purchase in (T0, T0 + H]; a contract customer: a cancellation in
  it;
- a win-back alert (kind `win-back`, serving.winback) is judged by purchase whoever the customer:
  saved when they buy again (reactivated), lost when the window runs out without a purchase;
- pending: the history does not reach far enough to say. A non-contract customer who has not bought yet is
  pending until the history reaches T0 + H, never lost before; a contract customer who has not cancelled
  is pending until then too.

With it: the value the customer brought in (T0, min(end, T0 + H)], measured as the served model measures
value (features.value): revenue, the net amount spent (refunds negative); or margin, the transactions'
margin minus the cost-to-serve of the interactions in the window; the time from T0 to the
outcome (the first purchase; the first cancellation; or H when the window ran out), and whether the
window is complete (`mature`: the history reaches T0 + H). `compute` is pure; `record` reads the alerts and
controls of a store, computes and upserts `alert_outcomes` in one transaction. Every `diamond score` run
records them with the history known at its as_of; `diamond outcomes --data DIR` with a whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.clock import utc_naive
from features.build import CONTRACT_ATTRIBUTE, end_of
from features.history import History
from features.value import MARGIN_COLUMN, REVENUE, ValueTarget
from serving import bulk
from serving.alert_rules import MODEL_ID
from serving.config import WIN_BACK
from serving.schema import alert_controls_table, alert_outcomes_table, alerts_table

OUTCOMES = ("saved", "lost", "pending")
EPISODE_COLUMNS = [
    "arm",
    "episode_id",
    "customer_id",
    "kind",
    "tier",
    "playbook",
    "value_at_risk",
    "opened_at",
]
OUTCOME_COLUMNS = ["outcome", "outcome_at", "days_to_outcome", "value_after", "observed_until", "mature"]
_TRUE = ("true", "1", "yes", "y", "t")


@dataclass(frozen=True)
class Recorded:
    """What one `record` did: outcomes by arm and outcome, over every episode it (re)computed."""

    end: datetime
    counts: dict[tuple[str, str], int]  # (arm, outcome) -> episodes
    skipped: int  # episodes final already, or computed with a later history end: left as they were

    def count(self, arm: str, outcome: str | None = None) -> int:
        return sum(n for (a, o), n in self.counts.items() if a == arm and outcome in (None, o))


def compute(
    episodes: pd.DataFrame,
    transactions: pd.DataFrame,
    end: datetime,
    cancellations: pd.DataFrame | None = None,
    contract: set[str] | None = None,
    interactions: pd.DataFrame | None = None,
    value: ValueTarget = REVENUE,
) -> pd.DataFrame:
    """The outcome of each episode (rows: customer_id, opened_at, horizon_days) from the events known up to
    `end`: `transactions` (customer_id, timestamp, amount, and margin for a margin `value`),
    `cancellations` (customer_id, timestamp), the customers judged by cancellation (`contract`; None:
    nobody) and, for a margin `value`, `interactions` (customer_id, timestamp, type: their cost-to-serve is
    subtracted). Returns `episodes` with OUTCOME_COLUMNS added, in the same order. Events at or before T0
    or after min(end, T0 + H) are not looked at."""
    end = utc_naive(end)
    e = episodes.reset_index(drop=True)
    t0 = pd.to_datetime(e["opened_at"]).to_numpy(dtype="datetime64[us]")
    window = t0 + pd.to_timedelta(e["horizon_days"].astype(np.int64), unit="D").to_numpy(
        dtype="timedelta64[us]"
    )
    stop = np.minimum(window, np.datetime64(end, "us"))
    stop = np.maximum(stop, t0)  # a history ending before the alert: nothing seen
    mature = np.datetime64(end, "us") >= window
    customers = pd.Index(pd.unique(e["customer_id"].astype(str).to_numpy()))
    keys = pd.DataFrame(
        {
            "_c": customers.get_indexer(e["customer_id"].astype(str)),  # joined on integers, not text
            "_e": np.arange(len(e)),
            "_t0": t0,
            "_stop": stop,
        }
    )

    def within(events: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
        if events is None or events.empty or e.empty:
            return pd.DataFrame(columns=["_e", "timestamp", *columns])
        code = customers.get_indexer(events["customer_id"].astype(str))
        mine = code >= 0
        ev = pd.DataFrame(
            {
                "_c": code[mine],
                "timestamp": pd.to_datetime(events["timestamp"]).to_numpy(dtype="datetime64[us]")[mine],
                **{c: events[c].to_numpy()[mine] for c in columns},
            }
        )
        j = keys.merge(ev, on="_c")
        return j[(j["timestamp"] > j["_t0"]) & (j["timestamp"] <= j["_stop"])]

    def total(events: pd.DataFrame, column: str) -> np.ndarray:
        sums = events.groupby("_e")[column].sum().astype(np.float64)
        return sums.reindex(range(len(e)), fill_value=0.0).to_numpy(dtype=np.float64)

    tx = within(transactions, ["amount", MARGIN_COLUMN] if value.is_margin else ["amount"])
    brought = total(tx, MARGIN_COLUMN if value.is_margin else "amount")
    costs = value.costs() if value.is_margin else {}
    if costs and interactions is not None:  # profit: minus what serving the customer cost in the window
        ix = within(interactions, ["type"])
        ix = ix.assign(_cost=ix["type"].astype(str).map(costs).fillna(0.0).astype(np.float64))
        brought = brought - total(ix, "_cost")
    buys = tx[tx["amount"] >= 0].groupby("_e")["timestamp"].min().reindex(range(len(e)))
    cx = within(cancellations, [])
    cancels = cx.groupby("_e")["timestamp"].min().reindex(range(len(e)))
    by_contract = e["customer_id"].astype(str).isin(contract or set()).to_numpy()
    if "kind" in e:  # a win-back is saved by reactivation: a purchase, whatever the churn definition
        by_contract = by_contract & (e["kind"].astype(str) != WIN_BACK).to_numpy()
    first_buy = pd.to_datetime(buys).to_numpy(dtype="datetime64[us]")
    first_cancel = pd.to_datetime(cancels).to_numpy(dtype="datetime64[us]")
    bought, cancelled = ~np.isnat(first_buy), ~np.isnat(first_cancel)

    outcome = np.full(len(e), "pending", dtype=object)
    at = np.full(len(e), np.datetime64("NaT"), dtype="datetime64[us]")
    # judged by silence: saved at the first purchase; lost once the window has run out without one
    silence = ~by_contract
    s_saved, s_lost = silence & bought, silence & ~bought & mature
    outcome[s_saved], at[s_saved] = "saved", first_buy[s_saved]
    outcome[s_lost], at[s_lost] = "lost", window[s_lost]
    # judged by cancellation: lost at the first cancellation; saved once the window has run out without one
    c_lost, c_saved = by_contract & cancelled, by_contract & ~cancelled & mature
    outcome[c_lost], at[c_lost] = "lost", first_cancel[c_lost]
    outcome[c_saved], at[c_saved] = "saved", window[c_saved]
    days = (at - t0) / np.timedelta64(1, "D")
    out = e.copy()
    out["outcome"] = outcome
    out["outcome_at"] = pd.to_datetime(pd.Series(at))  # NaT: no outcome yet
    out["days_to_outcome"] = np.where(np.isnat(at), np.nan, days)
    out["value_after"] = brought
    out["observed_until"] = pd.Series(stop).dt.to_pydatetime()
    out["mature"] = mature
    return out


def episodes(engine: Engine, unrecorded_from: datetime | None = None) -> pd.DataFrame:
    """Every customer alert that entered a team's list (arm treated, from `entered_at`; queued ones and
    those that left the queue without entering are in no arm) and every control (arm control), as
    EPISODE_COLUMNS, with the horizon_days, computed_at and `final` (mature) already recorded for them
    (missing when none yet). `unrecorded_from`: the episodes opened at or after it with nothing recorded yet
    are left out (`record` writes them inside the database: `_pending_from_the_start`)."""
    a, c, o = alerts_table, alert_controls_table, alert_outcomes_table
    treated = sa.select(  # an alert is treated from when it entered its team's list (serving.capacity)
        sa.literal("treated").label("arm"),
        a.c.id.label("episode_id"),
        a.c.customer_id,
        a.c.kind,
        a.c.tier,
        a.c.playbook,
        a.c.value_at_risk,
        a.c.entered_at.label("opened_at"),
    ).where(a.c.customer_id != MODEL_ID, a.c.entered_at.is_not(None))
    control = sa.select(
        sa.literal("control").label("arm"),
        c.c.id.label("episode_id"),
        c.c.customer_id,
        c.c.kind,
        c.c.tier,
        c.c.playbook,
        c.c.value_at_risk,
        c.c.opened_at,
    )
    if unrecorded_from is not None:
        treated = treated.where(_recorded_or_before("treated", a, a.c.entered_at, unrecorded_from))
        control = control.where(_recorded_or_before("control", c, c.c.opened_at, unrecorded_from))
    done = sa.select(o.c.arm, o.c.episode_id, o.c.horizon_days, o.c.computed_at, o.c.mature)
    with engine.connect() as conn:
        # plain tuples: pandas asks each SQLAlchemy row for attributes it lacks (an exception a row)
        rows = [tuple(r) for query in (treated, control) for r in conn.execute(query).all()]
        known = pd.DataFrame(
            [tuple(r) for r in conn.execute(done).all()],
            columns=["arm", "episode_id", "horizon_days", "computed_at", "final"],
        )
    frame = pd.DataFrame(rows, columns=EPISODE_COLUMNS)
    frame["episode_id"] = frame["episode_id"].astype(np.int64)
    known["episode_id"] = known["episode_id"].astype(np.int64)
    return frame.merge(known, on=["arm", "episode_id"], how="left")


def record(
    engine: Engine,
    history: History,
    horizon_days: int | None,
    end: datetime | None = None,
    value: ValueTarget = REVENUE,
) -> Recorded:
    """Compute the outcome of every alert and control from `history` as known at `end` (default: the
    history's end) and store it in `alert_outcomes`, in one transaction; value_after measures `value` (the
    served model's target: a margin target needs the history's margins, refused otherwise). An episode
    keeps the horizon it was first recorded with; a new one takes `horizon_days`, else the horizon of the
    latest episode recorded (ValueError when there is none: say the horizon).
    An episode already computed with a later end is left alone (a backfilled run never undoes what a later
    one saw), and so is one whose window was complete (final: later events fall outside it). Tier, kind,
    playbook and value at risk are the ones at the first recording (the opening run)."""
    end = utc_naive(end) if end is not None else end_of(history)
    # episodes opened at or after `end` have nothing in (T0, end] to look at: pending, as `compute` gives
    # them whatever the history, so those never recorded are written inside the database (a run opens
    # about a fifth of its customers' alerts: 197k rows read back and bound again took seconds)
    at_once = horizon_days if horizon_days is not None and horizon_days > 0 else None
    eps = episodes(engine, end if at_once is not None else None)
    later = eps["computed_at"].notna() & (pd.to_datetime(eps["computed_at"]) > pd.Timestamp(end))
    later |= eps["final"].fillna(False).astype(bool)  # a complete window: its outcome cannot change
    todo = eps[~later].copy()
    missing = todo["horizon_days"].isna()
    if missing.any() and horizon_days is None and eps["horizon_days"].notna().any():
        # e.g. an alert let in from a capacity queue by a resolve, between runs: the latest horizon recorded
        latest = eps[eps["horizon_days"].notna()].sort_values("opened_at")
        horizon_days = int(latest["horizon_days"].iloc[-1])
    if missing.any():
        if horizon_days is None:
            raise ValueError(
                f"{int(missing.sum())} alert(s) or control(s) have no outcome horizon yet; "
                "give one (diamond outcomes --horizon 90d) or record them with a `diamond score` run"
            )
        todo.loc[missing, "horizon_days"] = int(horizon_days)
    todo["horizon_days"] = todo["horizon_days"].astype(np.int64)
    if todo.empty and at_once is None:
        return Recorded(end, {}, int(later.sum()))
    if not todo.empty:
        value.check(history)
    # sets from lists: iterating pandas' Arrow-backed text boxes each value (seconds a million)
    ids = todo["customer_id"].astype(str)
    # events are looked at only in (T0, end]: the customers of episodes opened at or after `end` (those a
    # run opens) have none to look at, and their events are not read (a million customers' history)
    opened = pd.to_datetime(todo["opened_at"]).to_numpy(dtype="datetime64[us]")
    customers, watched = set(ids.tolist()), set(ids[opened < np.datetime64(end, "us")].tolist())
    tx, cx, contract, ix = _events(history, customers, end, value, watched)
    done = compute(todo, tx, end, cx, contract, ix, value)
    o = alert_outcomes_table
    is_new = missing.to_numpy(dtype=bool)  # no horizon recorded yet: a new row (`compute` keeps the order)
    fresh = _outcome_frame(done[is_new], end)  # converted column by column: a run opens many
    again = _outcome_frame(done[~is_new], end)  # recomputed: only the moving columns are written
    moving = (
        "outcome",
        "outcome_at",
        "days_to_outcome",
        "value_after",
        "observed_until",
        "mature",
        "computed_at",
    )
    with engine.begin() as conn:
        pending = _pending_from_the_start(conn, end, at_once) if at_once is not None else {}
        if any(pending.values()) and todo.empty:
            value.check(history)  # refused as for episodes computed here: the transaction rolls back
        if not fresh.empty:
            bulk.insert_frame(conn, o, fresh)
        if not again.empty:
            conn.execute(
                sa.update(o)
                .where(o.c.arm == sa.bindparam("b_arm"), o.c.episode_id == sa.bindparam("b_id"))
                .values({k: sa.bindparam(f"v_{k}") for k in moving}),
                _parameters(again, {"b_arm": "arm", "b_id": "episode_id", **{f"v_{k}": k for k in moving}}),
            )
    counts = {(str(a), str(b)): int(n) for (a, b), n in done.groupby(["arm", "outcome"]).size().items()}
    for arm, n in pending.items():
        if n:
            counts[(arm, "pending")] = counts.get((arm, "pending"), 0) + n
    return Recorded(end, counts, int(later.sum()))


def _recorded_or_before(arm: str, table: sa.Table, opened: sa.ColumnElement[Any], end: datetime) -> Any:
    """An episode of `table` (arm `arm`) opened before `end`, or with an outcome recorded already."""
    o = alert_outcomes_table
    recorded = sa.exists().where(o.c.arm == arm, o.c.episode_id == table.c.id)
    return sa.or_(opened < end, recorded)


def _pending_from_the_start(conn: sa.Connection, end: datetime, horizon_days: int) -> dict[str, int]:
    """Record, in the caller's transaction, every episode opened at or after `end` with no outcome yet as
    `compute` gives it: pending, no outcome time, nothing brought in (value_after 0), observed until its
    opening, not mature (its window ends after `end`: `horizon_days` > 0), computed at `end`, with
    `horizon_days`. Copied inside the database; returns the episodes recorded per arm."""
    a, c, o = alerts_table, alert_controls_table, alert_outcomes_table
    when = sa.literal(end, sa.DateTime())
    made = {}
    for arm, table, opened in (("treated", a, a.c.entered_at), ("control", c, c.c.opened_at)):
        new = sa.select(
            sa.literal(arm, sa.String()),
            table.c.id,
            table.c.customer_id,
            table.c.kind,
            table.c.tier,
            table.c.playbook,
            table.c.value_at_risk,
            opened,
            sa.literal(horizon_days, sa.Integer()),
            sa.literal("pending", sa.String()),
            sa.cast(sa.null(), sa.DateTime()),
            sa.cast(sa.null(), sa.Float()),
            sa.literal(0.0, sa.Float()),
            opened,
            sa.false(),
            when,
        ).where(opened >= when, sa.not_(_recorded_or_before(arm, table, opened, end)))
        if table is a:
            new = new.where(a.c.customer_id != MODEL_ID)  # entered_at >= end: entered, never null
        columns = [*EPISODE_COLUMNS[1:], "horizon_days", *OUTCOME_COLUMNS, "computed_at"]
        copied = sa.insert(o).from_select(["arm", *columns], new)
        # SQLAlchemy keeps an INSERT's row count only when asked (psycopg's was lost: -1)
        made[arm] = int(conn.execute(copied.execution_options(preserve_rowcount=True)).rowcount)
    return made


def _outcome_frame(done: pd.DataFrame, end: datetime) -> pd.DataFrame:
    """Newly recorded outcomes as `alert_outcomes` rows, column by column: what one dict per row held
    (text as str, missing as None, times as naive UTC, numbers as float or int, `mature` as bool)."""

    def text(column: str) -> pd.Series:
        values = done[column].astype(object)
        return values.where(values.notna(), None).map(lambda v: None if v is None else str(v))

    def naive(column: str) -> pd.Series:
        times = pd.to_datetime(done[column])
        if getattr(times.dtype, "tz", None) is not None:
            times = times.dt.tz_convert("UTC").dt.tz_localize(None)
        return times.astype("datetime64[us]")

    return pd.DataFrame(
        {
            "arm": done["arm"].astype(str).astype(object),
            "episode_id": done["episode_id"].astype(np.int64),
            "customer_id": done["customer_id"].astype(str).astype(object),
            "kind": done["kind"].astype(str).astype(object),
            "tier": text("tier"),
            "playbook": text("playbook"),
            "value_at_risk": done["value_at_risk"].astype(np.float64),
            "opened_at": naive("opened_at"),
            "horizon_days": done["horizon_days"].astype(np.int64),
            "outcome": done["outcome"].astype(str).astype(object),
            "outcome_at": naive("outcome_at"),
            "days_to_outcome": done["days_to_outcome"].astype(np.float64),
            "value_after": done["value_after"].astype(np.float64),
            "observed_until": naive("observed_until"),
            "mature": done["mature"].astype(bool),
            "computed_at": pd.Series(end, index=done.index).astype("datetime64[us]"),
        }
    ).reset_index(drop=True)


def _parameters(frame: pd.DataFrame, names: dict[str, str]) -> list[dict[str, object]]:
    """One dict of plain Python values per row of an `_outcome_frame` (parameter name -> its column): text as
    str, numbers as int or float, `mature` as bool, times as naive datetimes, None for anything missing."""
    columns = []
    for column in names.values():
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            plain = values.to_numpy(dtype="datetime64[us]").astype(object).tolist()  # NaT: None
        else:
            plain = values.astype(object).where(values.notna(), None).tolist()
        columns.append(plain)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def read(engine: Engine, customer_id: str | None = None, arm: str | None = None) -> pd.DataFrame:
    """Stored outcomes, oldest first: every column of `alert_outcomes`."""
    o = alert_outcomes_table
    query = sa.select(o).order_by(o.c.opened_at, o.c.arm, o.c.episode_id)
    if customer_id is not None:
        query = query.where(o.c.customer_id == str(customer_id))
    if arm is not None:
        query = query.where(o.c.arm == arm)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    frame = pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in o.columns])
    frame["mature"] = frame["mature"].astype(bool)
    return frame


def for_alerts(engine: Engine, alert_ids: list[int]) -> pd.DataFrame:
    """The outcomes of these alerts (arm treated), indexed by alert id: outcome, outcome_at,
    days_to_outcome, value_after, mature."""
    o = alert_outcomes_table
    query = sa.select(o.c.episode_id, *(o.c[k] for k in OUTCOME_COLUMNS if k != "observed_until")).where(
        o.c.arm == "treated", o.c.episode_id.in_([int(i) for i in alert_ids])
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    cols = ["alert_id", *(k for k in OUTCOME_COLUMNS if k != "observed_until")]
    return pd.DataFrame(rows, columns=cols).set_index("alert_id")


# --- helpers ------------------------------------------------------------------------------------------------


def _events(
    history: History,
    customers: set[str],
    end: datetime,
    value: ValueTarget = REVENUE,
    watched: set[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None, set[str], pd.DataFrame | None]:
    """The transactions and cancellations known at `end` (timestamp and, where recorded, recorded_at at or
    before it) of the `watched` customers (None: all of `customers`), which of `customers` are judged by
    cancellation, and, when a margin `value` has costs-to-serve, the watched customers' interactions."""
    ids = pa.array(sorted(customers if watched is None else watched), pa.string())

    def of(table: pa.Table | None, columns: list[str]) -> pd.DataFrame | None:
        if table is None:
            return None
        if not len(ids):  # no one to watch: no event is read
            return table.slice(0, 0).select(["customer_id", "timestamp", *columns]).to_pandas()
        mine = table.filter(pc.is_in(table.column("customer_id").cast(pa.string()), value_set=ids))
        sub = History(transactions=mine).until(end).transactions if mine.num_rows else mine
        return sub.select(["customer_id", "timestamp", *columns]).to_pandas()

    tx = of(history.transactions, ["amount", MARGIN_COLUMN] if value.is_margin else ["amount"])
    assert tx is not None
    ix = of(history.interactions, ["type"]) if value.is_margin and value.costs() else None
    cx = of(history.cancellations, []) if history.churn in ("contractual", "mixed") else None
    if history.churn == "contractual":
        contract = set(customers)
    elif (
        history.churn == "mixed"
        and history.customers is not None
        and CONTRACT_ATTRIBUTE in history.customers.column_names
    ):
        c = history.customers.select(["customer_id", CONTRACT_ATTRIBUTE]).to_pandas()
        flag = c[CONTRACT_ATTRIBUTE].astype(str).str.strip().str.lower().isin(_TRUE)
        contract = set(c.loc[flag, "customer_id"].astype(str).tolist()) & customers
    else:
        contract = set()
    return tx, cx, contract, ix
