"""The programme's indicators over time, beside the effect table (`diamond effect`): for the customers of
each tier at each scoring run, what happened over the horizon after it (realised retention, churn and
repeat-purchase rates), and the tier migration matrix between consecutive runs (how many customers went
from each tier to each other), both from the tier history in the store.

- retained / churned: the model's own churn definition over (run, run + H], as for alert outcomes
  (serving.outcomes.compute): by silence, a purchase in the window retains; by cancellation, none in it.
  Only customers whose window is complete count (`mature`); the rest are `pending`;
- repeat-purchase rate: the share of those mature customers with two or more purchases (amount >= 0) in
  the window;
- migration: customers in tier a at run r and tier b at the next run; NEW for customers first tiered at
  the next run, GONE for those no longer scored there.

`rates` and `migration` are pure; `stored_*` read the store (and, for rates, a history).
"""

from __future__ import annotations

import json
from datetime import datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from serving import outcomes
from serving.schema import tier_history_table, tier_runs_table

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from features.history import History

ALL = "(all)"
NEW, GONE = "(new)", "(gone)"
RATE_COLUMNS = [
    "run",
    "tier",
    "customers",
    "mature",
    "retained",
    "churned",
    "repeat_buyers",
    "retention_rate",
    "churn_rate",
    "repeat_rate",
    "pending",
]
MIGRATION_COLUMNS = ["from_run", "to_run", "from_tier", "to_tier", "customers"]


def rates(
    tiers: pd.DataFrame,
    transactions: pd.DataFrame,
    end: datetime,
    horizon_days: int,
    cancellations: pd.DataFrame | None = None,
    contract: set[str] | None = None,
    order: list[str] | None = None,
) -> pd.DataFrame:
    """RATE_COLUMNS per (run, tier) and per run over every tier (tier ALL), runs oldest first, tiers in
    `order` (else sorted). `tiers`: customer_id, as_of, tier (the tier history); the events known up to
    `end`. Rates are over the mature customers (NaN when none is)."""
    if tiers.empty:
        return pd.DataFrame(columns=RATE_COLUMNS)
    eps = pd.DataFrame(
        {
            "customer_id": tiers["customer_id"].astype(str).to_numpy(dtype=object),
            "opened_at": pd.to_datetime(tiers["as_of"]).to_numpy(),
            "horizon_days": int(horizon_days),
            "tier": tiers["tier"].astype(str).to_numpy(dtype=object),
        }
    )
    done = outcomes.compute(eps, transactions, end, cancellations, contract)
    done["repeat"] = _purchases(eps, transactions, done["observed_until"]) >= 2
    done["run"] = pd.to_datetime(done["opened_at"])
    names = list(order or sorted(set(done["tier"])))
    names += sorted(set(done["tier"]) - set(names))
    rows = []
    for run, at_run in done.groupby("run", sort=True):
        for tier in [*names, ALL]:
            g = at_run if tier == ALL else at_run[at_run["tier"] == tier]
            if g.empty:
                continue
            ok = g[g["mature"].astype(bool)]
            n = len(ok)
            kept, lost = int((ok["outcome"] == "saved").sum()), int((ok["outcome"] == "lost").sum())
            again = int(ok["repeat"].sum())
            rows.append(
                {
                    "run": pd.Timestamp(run).to_pydatetime(),
                    "tier": tier,
                    "customers": len(g),
                    "mature": n,
                    "retained": kept,
                    "churned": lost,
                    "repeat_buyers": again,
                    "retention_rate": kept / n if n else np.nan,
                    "churn_rate": lost / n if n else np.nan,
                    "repeat_rate": again / n if n else np.nan,
                    "pending": len(g) - n,
                }
            )
    return pd.DataFrame(rows, columns=RATE_COLUMNS)


def migration(tiers: pd.DataFrame) -> pd.DataFrame:
    """MIGRATION_COLUMNS between each pair of consecutive runs of `tiers` (customer_id, as_of, tier):
    customers per (from tier, to tier), NEW and GONE for customers in only one of the two runs. Pairs with
    no customer are left out."""
    if tiers.empty:
        return pd.DataFrame(columns=MIGRATION_COLUMNS)
    t = tiers.assign(customer_id=tiers["customer_id"].astype(str), as_of=pd.to_datetime(tiers["as_of"]))
    runs = sorted(t["as_of"].unique())
    parts = []
    for a, b in pairwise(runs):
        x = t.loc[t["as_of"] == a, ["customer_id", "tier"]]
        y = t.loc[t["as_of"] == b, ["customer_id", "tier"]]
        j = x.merge(y, on="customer_id", how="outer", suffixes=("_from", "_to"))
        j["from_tier"] = j["tier_from"].astype(object).where(j["tier_from"].notna(), NEW)
        j["to_tier"] = j["tier_to"].astype(object).where(j["tier_to"].notna(), GONE)
        counts = j.groupby(["from_tier", "to_tier"]).size().reset_index(name="customers")
        counts.insert(0, "to_run", pd.Timestamp(b).to_pydatetime())
        counts.insert(0, "from_run", pd.Timestamp(a).to_pydatetime())
        parts.append(counts)
    if not parts:
        return pd.DataFrame(columns=MIGRATION_COLUMNS)
    return pd.concat(parts, ignore_index=True)[MIGRATION_COLUMNS]


def matrix(moves: pd.DataFrame, order: list[str]) -> tuple[list[str], list[str], list[list[int]]]:
    """One pair of runs' MIGRATION_COLUMNS rows as a square table: row names (from: NEW, then `order`),
    column names (to: `order`, then GONE) and the counts."""
    seen_from = set(moves["from_tier"])
    seen_to = set(moves["to_tier"])
    names = [*order, *sorted((seen_from | seen_to) - set(order) - {NEW, GONE})]
    rows = [*names, NEW] if NEW in seen_from else names
    cols = [*names, GONE] if GONE in seen_to else names
    count = {(r.from_tier, r.to_tier): int(r.customers) for r in moves.itertuples()}
    return rows, cols, [[count.get((a, b), 0) for b in cols] for a in rows]


def tier_history(engine: Engine) -> tuple[pd.DataFrame, list[str]]:
    """Every customer's tier at every applied run (customer_id, as_of, tier) and the latest run's tier
    order, best first."""
    h, r = tier_history_table, tier_runs_table
    with engine.connect() as conn:
        rows = conn.execute(sa.select(h.c.customer_id, h.c.as_of, h.c.tier).order_by(h.c.as_of)).all()
        order = conn.execute(sa.select(r.c.tier_order).order_by(r.c.as_of.desc()).limit(1)).scalar()
    return pd.DataFrame(rows, columns=["customer_id", "as_of", "tier"]), json.loads(order) if order else []


def stored_migration(engine: Engine) -> pd.DataFrame:
    """`migration` of the store's tier history."""
    return migration(tier_history(engine)[0])


def stored_rates(
    engine: Engine, history: History, horizon_days: int, end: datetime | None = None
) -> pd.DataFrame:
    """`rates` of the store's tier history, with the events of `history` known at `end` (default: its end)."""
    from features.build import end_of

    tiers, order = tier_history(engine)
    if tiers.empty:
        return pd.DataFrame(columns=RATE_COLUMNS)
    stop = end or end_of(history)
    tx, cx, contract, _ = outcomes._events(history, set(tiers["customer_id"].astype(str)), stop)
    return rates(tiers, tx, stop, horizon_days, cx, contract, order)


def log_to_mlflow(client: MlflowClient, run_id: str, found: pd.DataFrame, moves: pd.DataFrame) -> None:
    """Into the effect run `run_id`: each tier's rates as metrics over the runs (step: the run's position,
    timestamp: its as_of), and both tables as `indicators.json` and `migration.json`."""
    from mlflow.entities import Metric

    metrics = []
    groups = found.groupby("run", sort=True) if not found.empty else []
    for step, (run, g) in enumerate(groups):
        stamp = int(pd.Timestamp(run).timestamp() * 1000)
        for r in g.to_dict("records"):
            tier = "all" if r["tier"] == ALL else str(r["tier"])
            for k in ("retention_rate", "churn_rate", "repeat_rate"):
                if r[k] == r[k]:  # not NaN
                    metrics.append(Metric(f"{k}_{tier}", float(r[k]), stamp, step))
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    client.log_text(run_id, json.dumps(records(found), indent=1), "indicators.json")
    client.log_text(run_id, json.dumps(records(moves), indent=1), "migration.json")


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows (None for missing numbers, ISO 8601 times)."""
    from serving.effect import records as as_records

    return as_records(table)


def _purchases(eps: pd.DataFrame, transactions: pd.DataFrame, until: pd.Series) -> np.ndarray:
    """Purchases (amount >= 0) of each episode's customer in (opened_at, until]."""
    if transactions is None or transactions.empty:
        return np.zeros(len(eps), dtype=np.int64)
    buys = transactions[transactions["amount"] >= 0]
    keys = pd.DataFrame(
        {
            "customer_id": eps["customer_id"].astype(str).to_numpy(),
            "_e": np.arange(len(eps)),
            "_t0": pd.to_datetime(eps["opened_at"]).to_numpy(),
            "_stop": pd.to_datetime(until).to_numpy(),
        }
    )
    ev = pd.DataFrame(
        {
            "customer_id": buys["customer_id"].astype(str).to_numpy(),
            "timestamp": pd.to_datetime(buys["timestamp"]).to_numpy(),
        }
    )
    j = keys.merge(ev, on="customer_id")
    j = j[(j["timestamp"] > j["_t0"]) & (j["timestamp"] <= j["_stop"])]
    return j.groupby("_e").size().reindex(range(len(eps)), fill_value=0).to_numpy(dtype=np.int64)
