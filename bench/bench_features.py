"""Benchmark of the feature pipeline against a hand-written DuckDB query and idiomatic pandas.

On a synthetic history (1M customers ~ 20M transactions and 5M interactions), at one cutoff, each side runs
in its own subprocess; wall time is measured inside it around the work (imports excluded) and peak RSS is
that child's own. Sides:

- ``sql``: one hand-written DuckDB query over the Parquet files: the spine and 22 RFM / window /
  interaction features. The reference the pipeline must keep up with.
- ``sql-mem``: the same query over the tables already in memory (Arrow), as the pipeline's builder sees them.
- ``pandas``: the same 22 features in idiomatic pandas (read Parquet, filter, groupby-agg).
- ``pipeline-22``: Diamond itself on the same 22 features: ``load_history`` (read + validate the contract),
  ``build_spine``, ``build_features``, in a process set up as every ``diamond`` command sets it up
  (``core.memory.keep_freed_memory``: freed memory reused, Arrow's buffers on glibc's heap).
- ``pipeline-core``: Diamond with the whole default feature set ``core_v1`` (71 columns, BTYD fits
  included).

Every side writes its rows; the 22 columns of all sides must agree (relative tolerance 1e-9), or the
benchmark fails. Results go to the table in ``bench/README.md``; at 1M customers the run prints issue 15's
goals, PASS or FAIL. ``--threads N``: the query's DuckDB threads (default 1, the issue's protocol); the
pipeline runs its defaults (DuckDB parts by customer, one thread each, as many at once as there are cores,
and the history's checks on every core). ``--pin`` keeps every side on N cores: equal cores for both.

Usage: ``python bench/bench_features.py --customers 1000000 [--threads N] [--pin] [--no-readme]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from common import ROOT, machine, measure, record_row

CUTOFF = "2025-06-30"  # end of that day, as the pipeline reads a bare date
START_MARK = "<!-- features-results:start -->"
END_MARK = "<!-- features-results:end -->"
TABLE_HEADER = (
    "| date | customers | threads | side | events | wall s | events/s | peak RSS MiB "
    "| speed vs sql | memory vs sql | feature s | feature speed vs sql | split | machine |\n"
    "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
)
FEATURES_22 = (
    "recency_days", "tenure_days", "n_purchases", "monetary_sum", "monetary_mean", "monetary_max",
    "monetary_std", "net_amount", "refund_count",
    "purchases_30d", "purchases_90d", "purchases_180d", "purchases_365d",
    "amount_30d", "amount_90d", "amount_180d", "amount_365d",
    "complaint_90d", "support_ticket_90d", "campaign_click_30d", "days_since_complaint", "days_since_login",
)  # fmt: skip
WINDOWS = (30, 90, 180, 365)
GOAL_RATIO = 0.4  # issue 15: features end to end (load + validate + spine + 22 features) >= 0.4x the query
GOAL_CORE_S = 30.0  # issue 15: core_v1 end to end < 30 s at 1M customers
SIDES = ("sql", "sql-mem", "pandas", "pipeline-22", "pipeline-core")


def hand_sql(tx: str, ix: str, cu: str, cx: str) -> str:
    """The 22 features and the spine (first event <= T, not cancelled by T) as one DuckDB query."""
    t, d = f"TIMESTAMP '{CUTOFF} 23:59:59.999999'", f"DATE '{CUTOFF}'"
    p = "amount >= 0"
    windows = ",\n".join(
        f"count(*) FILTER (WHERE {p} AND age < {w}) AS purchases_{w}d, "
        f"sum(amount) FILTER (WHERE {p} AND age < {w}) AS amount_{w}d"
        for w in WINDOWS
    )
    fill0 = {"n_purchases", "monetary_sum", "net_amount", "refund_count"} | {
        f"{k}_{w}d" for k in ("purchases", "amount") for w in WINDOWS
    }
    fill0 |= {"complaint_90d", "support_ticket_90d", "campaign_click_30d"}
    select = ", ".join(f"coalesce({c}, 0) AS {c}" if c in fill0 else c for c in FEATURES_22)
    return f"""
    WITH firsts AS (
        SELECT customer_id, min(ts) AS first_seen FROM (
            SELECT customer_id, timestamp AS ts FROM {tx}
            UNION ALL SELECT customer_id, timestamp FROM {ix}
            UNION ALL SELECT customer_id, signup_date FROM {cu} WHERE signup_date IS NOT NULL
        ) GROUP BY customer_id
    ),
    cancelled AS (SELECT customer_id, min(timestamp) AS cancelled_at FROM {cx} GROUP BY customer_id),
    spine AS (
        SELECT f.customer_id FROM firsts f LEFT JOIN cancelled c USING (customer_id)
        WHERE f.first_seen <= {t} AND (c.cancelled_at IS NULL OR c.cancelled_at > {t})
    ),
    tx AS (
        SELECT customer_id, amount, date_diff('day', CAST(timestamp AS DATE), {d}) AS age
        FROM {tx} WHERE timestamp <= {t}
    ),
    ta AS (
        SELECT customer_id,
            min(age) FILTER (WHERE {p}) AS recency_days,
            max(age) FILTER (WHERE {p}) AS tenure_days,
            count(*) FILTER (WHERE {p}) AS n_purchases,
            sum(amount) FILTER (WHERE {p}) AS monetary_sum,
            avg(amount) FILTER (WHERE {p}) AS monetary_mean,
            max(amount) FILTER (WHERE {p}) AS monetary_max,
            stddev_samp(amount) FILTER (WHERE {p}) AS monetary_std,
            sum(amount) AS net_amount,
            count(*) FILTER (WHERE amount < 0) AS refund_count,
            {windows}
        FROM tx GROUP BY customer_id
    ),
    ix AS (
        SELECT customer_id, type, date_diff('day', CAST(timestamp AS DATE), {d}) AS age
        FROM {ix} WHERE timestamp <= {t}
    ),
    ia AS (
        SELECT customer_id,
            count(*) FILTER (WHERE type = 'complaint' AND age < 90) AS complaint_90d,
            count(*) FILTER (WHERE type = 'support_ticket' AND age < 90) AS support_ticket_90d,
            count(*) FILTER (WHERE type = 'campaign_click' AND age < 30) AS campaign_click_30d,
            min(age) FILTER (WHERE type = 'complaint') AS days_since_complaint,
            min(age) FILTER (WHERE type = 'login') AS days_since_login
        FROM ix GROUP BY customer_id
    )
    SELECT customer_id, {select}
    FROM spine LEFT JOIN ta USING (customer_id) LEFT JOIN ia USING (customer_id)
    ORDER BY customer_id
    """


# --- children: each does its work, writes its rows, prints {"seconds": ..., "split": ...} -------------


def child_sql(data: Path, threads: int, in_memory: bool) -> tuple[object, dict[str, float]]:
    import duckdb
    import pyarrow.parquet as pq

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    names = ("transactions", "interactions", "customers", "cancellations")
    if in_memory:  # read untimed: the pipeline's feature step also starts from loaded tables
        for name in names:
            con.register(name, pq.read_table(data / f"{name}.parquet"))
        sources = names
    else:
        sources = tuple(f"read_parquet('{data / name}.parquet')" for name in names)
    t0 = time.perf_counter()
    table = con.sql(hand_sql(*sources)).arrow().read_all()
    return table, {"query": time.perf_counter() - t0}


def child_pandas(data: Path) -> tuple[object, dict[str, float]]:
    import pandas as pd
    import pyarrow as pa

    t0 = time.perf_counter()
    tx = pd.read_parquet(data / "transactions.parquet", columns=["customer_id", "timestamp", "amount"])
    ix = pd.read_parquet(data / "interactions.parquet", columns=["customer_id", "timestamp", "type"])
    cu = pd.read_parquet(data / "customers.parquet", columns=["customer_id", "signup_date"])
    cx = pd.read_parquet(data / "cancellations.parquet", columns=["customer_id", "timestamp"])
    t1 = time.perf_counter()
    cutoff = pd.Timestamp(CUTOFF) + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    day = pd.Timestamp(CUTOFF)

    seen = pd.concat(
        [tx[["customer_id", "timestamp"]], ix[["customer_id", "timestamp"]],
         cu.rename(columns={"signup_date": "timestamp"}).dropna()]
    )  # fmt: skip
    first = seen.groupby("customer_id")["timestamp"].min()
    cancelled = cx.groupby("customer_id")["timestamp"].min()
    spine = first[first <= cutoff].index.difference(cancelled[cancelled <= cutoff].index)

    t = tx[tx["timestamp"] <= cutoff]
    age = (day - t["timestamp"].dt.normalize()).dt.days
    buy = t["amount"] >= 0
    cols = {
        "customer_id": t["customer_id"],
        "age_p": age.where(buy),
        "amount_p": t["amount"].where(buy),
        "amount": t["amount"],
        "buy": buy,
        "refund": ~buy,
    }
    for w in WINDOWS:
        cols[f"buy_{w}"] = buy & (age < w)
        cols[f"amount_{w}"] = t["amount"].where(buy & (age < w))
    aggs = {
        "recency_days": ("age_p", "min"),
        "tenure_days": ("age_p", "max"),
        "n_purchases": ("buy", "sum"),
        "monetary_sum": ("amount_p", "sum"),
        "monetary_mean": ("amount_p", "mean"),
        "monetary_max": ("amount_p", "max"),
        "monetary_std": ("amount_p", "std"),
        "net_amount": ("amount", "sum"),
        "refund_count": ("refund", "sum"),
    }
    for w in WINDOWS:
        aggs[f"purchases_{w}d"] = (f"buy_{w}", "sum")
        aggs[f"amount_{w}d"] = (f"amount_{w}", "sum")
    ta = pd.DataFrame(cols).groupby("customer_id").agg(**aggs)

    i = ix[ix["timestamp"] <= cutoff]
    iage = (day - i["timestamp"].dt.normalize()).dt.days
    ia = (
        pd.DataFrame(
            {
                "customer_id": i["customer_id"],
                "complaint_90d": (i["type"] == "complaint") & (iage < 90),
                "support_ticket_90d": (i["type"] == "support_ticket") & (iage < 90),
                "campaign_click_30d": (i["type"] == "campaign_click") & (iage < 30),
                "days_since_complaint": iage.where(i["type"] == "complaint"),
                "days_since_login": iage.where(i["type"] == "login"),
            }
        )
        .groupby("customer_id")
        .agg(
            complaint_90d=("complaint_90d", "sum"),
            support_ticket_90d=("support_ticket_90d", "sum"),
            campaign_click_30d=("campaign_click_30d", "sum"),
            days_since_complaint=("days_since_complaint", "min"),
            days_since_login=("days_since_login", "min"),
        )
    )
    out = ta.join(ia, how="outer").reindex(spine)
    counts = [c for c in out.columns if c.startswith(("n_", "purchases_", "amount_", "refund_"))]
    counts += ["monetary_sum", "net_amount", "complaint_90d", "support_ticket_90d", "campaign_click_30d"]
    out[counts] = out[counts].fillna(0)
    out = out.sort_index().rename_axis("customer_id").reset_index()[["customer_id", *FEATURES_22]]
    t2 = time.perf_counter()
    return pa.Table.from_pandas(out, preserve_index=False), {"read": t1 - t0, "compute": t2 - t1}


def child_pipeline(data: Path, feature_set: str) -> tuple[object, dict[str, float]]:
    from core.memory import keep_freed_memory
    from features.build import build_features, build_spine
    from features.history import load_history
    from features.sets import FeatureSet

    fs = FeatureSet("bench", 22, FEATURES_22) if feature_set == "22" else feature_set
    keep_freed_memory()  # as every `diamond` command does (core.memory)
    t0 = time.perf_counter()
    history = load_history(data)
    t1 = time.perf_counter()
    spine = build_spine(history, [CUTOFF])
    t2 = time.perf_counter()
    rows = build_features(history, spine, fs, "90d")
    t3 = time.perf_counter()
    return rows.drop_columns(["cutoff"]), {"load": t1 - t0, "spine": t2 - t1, "features": t3 - t2}


def run_child(side: str, data: Path, threads: int, out: Path, pin: bool) -> None:
    """One side: the query runs `threads` DuckDB threads, the pipeline its defaults (DuckDB parts by
    customer, one thread each, as many at once as it has cores); `pin` keeps it on `threads` cores."""
    import pyarrow.parquet as pq

    if pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    if side in ("sql", "sql-mem"):
        os.environ["DIAMOND_DUCKDB_THREADS"] = str(threads)
        table, split = child_sql(data, threads, in_memory=side == "sql-mem")
    elif side == "pandas":
        table, split = child_pandas(data)
    else:
        table, split = child_pipeline(data, "22" if side == "pipeline-22" else "core_v1")
    pq.write_table(table, out)  # untimed
    print(json.dumps({"seconds": sum(split.values()), "split": split}))


# --- parent --------------------------------------------------------------------------------------


def ensure_history(data_dir: Path, customers: int, seed: int) -> tuple[Path, int]:
    """The synthetic history for `customers` (written once, reused), and its event count at the cutoff."""
    import duckdb

    from features.datasets import synthetic

    folder = data_dir / f"synthetic-{customers}-seed{seed}"
    if not (folder / "dataset.yaml").exists():
        print(f"writing synthetic history: {customers:,} customers -> {folder}", flush=True)
        synthetic.write(folder, customers, seed=seed)
    t = f"TIMESTAMP '{CUTOFF} 23:59:59.999999'"
    events = sum(
        duckdb.sql(
            f"SELECT count(*) FROM read_parquet('{folder / n}.parquet') WHERE timestamp <= {t}"
        ).fetchall()[0][0]
        for n in ("transactions", "interactions")
    )
    return folder, events


def compare(tables: dict[str, object]) -> None:
    """Every side's 22 feature columns equal the hand-written query's (relative tolerance 1e-9)."""
    import numpy as np

    ref = tables["sql"]
    for side, table in tables.items():
        if side == "sql":
            continue
        assert table.num_rows == ref.num_rows, f"{side}: {table.num_rows} rows, sql {ref.num_rows}"
        ids, ref_ids = table.column("customer_id").to_pylist(), ref.column("customer_id").to_pylist()
        assert ids == ref_ids, f"{side}: different customers"
        for col in FEATURES_22:
            a = table.column(col).to_numpy(zero_copy_only=False).astype(float)
            b = ref.column(col).to_numpy(zero_copy_only=False).astype(float)
            if not np.allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True):
                bad = int((~np.isclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)).sum())
                raise SystemExit(f"{side}: column {col} differs from the hand-written query in {bad} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--threads", type=int, default=1, help="DuckDB threads of the hand-written query")
    parser.add_argument("--pin", action="store_true", help="pin every side to --threads cores (equal cores)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=str(ROOT / "bench" / ".data"), help="cached histories")
    parser.add_argument("--no-readme", action="store_true", help="do not record results in bench/README.md")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, Path(args.data), args.threads, Path(args.out), args.pin)
        return

    import pyarrow.parquet as pq

    sides = ["sql", *[s for s in args.sides if s != "sql"]]  # sql is the reference of every ratio
    for customers in args.customers:
        folder, events = ensure_history(Path(args.data_dir), customers, args.seed)
        results, tables = {}, {}
        with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
            for side in sides:
                out = Path(tmp) / f"{side}.parquet"
                cmd = [sys.executable, __file__, "--child", side, "--data", str(folder), "--out", str(out)]
                print(f"{customers:,} customers, {side} ...", flush=True)
                results[side] = measure(
                    [*cmd, "--threads", str(args.threads), *(["--pin"] if args.pin else [])]
                )
                tables[side] = pq.read_table(out)
        compare(tables)
        ref = results["sql"]
        how = f"{args.threads} pinned" if args.pin else str(args.threads)
        print(f"\n{customers:,} customers, {events:,} events at or before {CUTOFF}, threads: {how}")
        print(
            "| side | wall s | events/s | peak RSS MiB | speed vs sql | memory vs sql | feature s "
            "| feature speed vs sql | split |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for side in sides:
            r = results[side]
            seconds = r.result["seconds"]
            split = ", ".join(f"{k} {v:.1f}" for k, v in r.result["split"].items())
            speed = ref.result["seconds"] / seconds
            memory = r.peak_rss_mib / ref.peak_rss_mib
            # feature s: the work after the history is in memory (pipeline: spine + features, no load)
            feature_s = seconds - r.result["split"].get("load", 0.0) - r.result["split"].get("read", 0.0)
            cells = (
                f"{seconds:.1f} | {events / seconds:,.0f} | {r.peak_rss_mib:,.0f} "
                f"| {speed:.2f} | {memory:.2f} | {feature_s:.1f} | {ref.result['seconds'] / feature_s:.2f}"
            )
            print(f"| {side} | {cells} | {split} |")
            if not args.no_readme:
                row = (
                    f"| {date.today().isoformat()} | {customers:,} | {how} | {side} | {events:,} "
                    f"| {cells} | {split} | {machine()} |"
                )
                record_row(START_MARK, END_MARK, TABLE_HEADER, row, key_columns=4)
        print()
        if customers == 1_000_000:
            print_goals(
                results, f"query on {args.threads} thread(s)" + (", every side pinned" if args.pin else "")
            )


def print_goals(results: dict, how: str) -> None:
    """Issue 15's feature goals at 1M customers, PASS or FAIL, for the sides this run measured."""
    ref = results["sql"].result["seconds"]
    if "pipeline-22" in results:
        ratio = ref / results["pipeline-22"].result["seconds"]
        verdict = "PASS" if ratio >= GOAL_RATIO else "FAIL"
        print(f"{verdict}  features end to end >= {GOAL_RATIO}x the query ({how}): {ratio:.2f}x")
    if "pipeline-core" in results:
        seconds = results["pipeline-core"].result["seconds"]
        verdict = "PASS" if seconds < GOAL_CORE_S else "FAIL"
        print(f"{verdict}  core_v1 end to end < {GOAL_CORE_S:.0f} s ({how}): {seconds:.1f} s")


if __name__ == "__main__":
    main()
