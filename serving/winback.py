"""Win-back: lapsed customers of high past value, the reactivation stage of the customer lifecycle. The
win-back rule (kind `win-back`, serving.config.Rule: `lapsed_days`, `min_past_value`, `past_min_tier`) reads,
besides the scores, each customer's lapse at the run: `lapse` computes it from the history known at the run
and the tier history of earlier runs. Its alerts go through the same control groups (serving.control),
capacity queues and outcomes as the others, but are saved when the customer buys again within the horizon
(reactivated), whatever the churn definition (serving.outcomes)."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.clock import utc_naive
from features.history import History
from serving.alert_rules import LAPSE_COLUMNS
from serving.schema import tier_history_table, tier_runs_table


def lapse_of(transactions: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Days from each customer's last purchase (amount >= 0) to `as_of` (NaN: never bought) and net spend
    (refunds subtracted), over the transactions at or before `as_of`. Pure; columns customer_id,
    days_since_purchase, past_value."""
    when = pd.Timestamp(utc_naive(as_of))
    tx = transactions[pd.to_datetime(transactions["timestamp"]) <= when]
    ids = tx["customer_id"].astype(str)
    past = tx["amount"].astype(float).groupby(ids).sum()
    buys = tx[tx["amount"] >= 0]
    last = pd.to_datetime(buys["timestamp"]).groupby(buys["customer_id"].astype(str)).max()
    days = (when - last.reindex(past.index)) / pd.Timedelta(days=1)
    return pd.DataFrame(
        {
            "customer_id": past.index.to_numpy(dtype=object),
            "days_since_purchase": days.to_numpy(dtype=float),
            "past_value": past.to_numpy(dtype=float),
        }
    )


def best_tiers(engine: Engine, before: datetime) -> pd.Series:
    """Each customer's best tier at the runs before `before` (tier history; the order of the latest of them),
    indexed by customer id."""
    h, r = tier_history_table, tier_runs_table
    when = utc_naive(before)
    with engine.connect() as conn:
        order = conn.execute(
            sa.select(r.c.tier_order).where(r.c.as_of < when).order_by(r.c.as_of.desc()).limit(1)
        ).scalar()
        if order is None:
            return pd.Series(dtype=object)
        rows = conn.execute(sa.select(h.c.customer_id, h.c.tier).where(h.c.as_of < when).distinct()).all()
    rank = {name: i for i, name in enumerate(json.loads(order))}
    frame = pd.DataFrame(rows, columns=["customer_id", "tier"])
    frame["level"] = frame["tier"].map(rank).astype(float)
    frame = frame.dropna(subset=["level"]).sort_values(["customer_id", "level"])
    best = frame.drop_duplicates("customer_id")
    return pd.Series(best["tier"].to_numpy(dtype=object), index=best["customer_id"].astype(str).to_numpy())


def lapse(engine: Engine, history: History, as_of: datetime) -> pd.DataFrame:
    """LAPSE_COLUMNS for every customer with a transaction known at `as_of`: `lapse_of` the history, and
    the best tier of the earlier runs in the store."""
    table = history.transactions.select(["customer_id", "timestamp", "amount"])
    stamp = pa.scalar(utc_naive(as_of), pa.timestamp("us"))
    table = table.filter(pc.less_equal(pc.cast(table.column("timestamp"), pa.timestamp("us")), stamp))
    out = lapse_of(table.to_pandas(), as_of)
    out["best_tier"] = out["customer_id"].map(best_tiers(engine, as_of))
    return out[LAPSE_COLUMNS]
