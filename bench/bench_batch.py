"""Batch scoring at CRM scale: what `diamond score --data DIR` runs, against a hand-written reference for the
same customers, measured in the same run (bench/README.md, "Batch scoring").

- `diamond`: `diamond.flows.score`, the function `diamond score --data DIR` calls: load and validate the
  history, feature rows, scores and reasons, tiers with hysteresis, the Parquet score table and the store's
  snapshot, alerts, drift, with the CDNOW demo champion, into a new, empty serving store: a SQLite file
  (`--stores sqlite`, the default; side `diamond`) and/or a PostgreSQL database (`--stores postgresql`; side
  `diamond-postgresql`): a new database of a throwaway cluster started with PostgreSQL's default durability
  settings (tests/helpers/postgres.py, the tests' cluster code), or a new schema in the database of
  `--store-url` (dropped afterwards).
- `reference`: one hand-written DuckDB query over the Parquet files for the model's inputs (spine, RFM,
  windows, trend, inter-purchase times, the BTYD summaries; the BTYD closed forms from `features.btyd`), both
  boosters' `inplace_predict` on a float32 array, the stacker, horizon maps and recalibrated levels, and a
  Parquet file of customer_id and the three scores.

Each side runs in its own subprocess (wall time around it, that child's peak RSS, imports and the model's
load from MLflow included on both sides); both use every core (the reference's DuckDB query its default
threads; Diamond its threads beside its one-thread feature query). The reference's scores must equal
Diamond's for the same customers (1e-6) or the script fails. The champion is trained once on CDNOW with the
repository's training.yaml (what `diamond demo` trains on all the data) and kept in bench/.data with the
synthetic histories.

    .venv/bin/python bench/bench_batch.py --customers 100000 1000000
    .venv/bin/python bench/bench_batch.py --customers 100000 --stores sqlite postgresql

Goals (issue 15): 1M customers in < 120 s and < 6 GB peak; >= 0.3x the reference; 1M costs <= 11x 100k.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine, measure, record_row

DATA = ROOT / "bench" / ".data"
CHAMPION = DATA / "cdnow-demo-champion"
GOAL_SECONDS, GOAL_MIB, GOAL_RATIO, GOAL_SCALING = 120.0, 6 * 1024, 0.3, 11.0
START, END = "<!-- batch-results:start -->", "<!-- batch-results:end -->"
HEADER = (
    "| date | customers | side | scored | wall s | peak RSS MiB | customers/s | speed vs reference | split "
    "| machine |\n|---|---:|---|---:|---:|---:|---:|---:|---|---|\n"
)


# --- the champion and the histories -------------------------------------------------------------------------


def store_env(champion: Path) -> dict[str, str]:
    return {
        "DIAMOND_MLFLOW_CONFIG": str(champion / "mlflow.yaml"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{champion / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def ensure_champion() -> Path:
    """The CDNOW demo champion: `diamond train` on all of CDNOW with training.yaml, in its own store."""
    if (CHAMPION / ".built").exists():
        return CHAMPION
    shutil.rmtree(CHAMPION, ignore_errors=True)
    CHAMPION.mkdir(parents=True)
    (CHAMPION / "mlflow.yaml").write_text(
        f"tracking_uri: sqlite:///{CHAMPION / 'mlflow.db'}\nartifact_root: {CHAMPION / 'artifacts'}\n",
        encoding="utf-8",
    )
    diamond = str(Path(sys.executable).with_name("diamond"))
    env = {**os.environ, **store_env(CHAMPION), "DIAMOND_STORE_URL": f"sqlite:///{CHAMPION / 'train.db'}"}
    print("training the CDNOW demo champion (once) ...", flush=True)
    subprocess.run([diamond, "data", "cdnow", "--out", str(CHAMPION / "cdnow")], check=True, env=env)
    subprocess.run([diamond, "train", "--data", str(CHAMPION / "cdnow")], check=True, env=env, cwd=ROOT)
    (CHAMPION / ".built").touch()
    return CHAMPION


def ensure_history(customers: int, seed: int, data_dir: Path = DATA) -> Path:
    """The synthetic history of `customers` (written once into bench/.data, shared with bench_features)."""
    folder = data_dir / f"synthetic-{customers}-seed{seed}"
    if not (folder / "dataset.yaml").exists():
        from features.datasets import synthetic

        print(f"writing synthetic history: {customers:,} customers -> {folder}", flush=True)
        synthetic.write(folder, customers, seed=seed)
    return folder


# --- children: each does its work and prints {"seconds": ..., "split": ...} on its last line ----------------


def child_diamond(data: Path, work: Path, store_url: str | None = None) -> dict[str, Any]:
    """`diamond score --data DATA` as the CLI runs it (diamond.flows.score), into the new, empty store at
    `store_url` (default: a SQLite file in `work`)."""
    import yaml

    raw = yaml.safe_load((ROOT / "serving.yaml").read_text(encoding="utf-8"))
    raw.update(store_url=store_url or f"sqlite:///{work / 'diamond.db'}", scores_dir=str(work / "scores"))
    raw["webhooks"]["endpoints"] = []
    (work / "serving.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    os.environ["DIAMOND_SERVING_CONFIG"] = str(work / "serving.yaml")
    os.environ.pop("DIAMOND_STORE_URL", None)
    from core.memory import keep_freed_memory
    from diamond import flows
    from features.engine import EngineConfig
    from serving.config import ServingConfig
    from training.tracking import MlflowConfig

    split: dict[str, float] = {}
    t0 = last = time.perf_counter()
    keep_freed_memory()  # as every `diamond` command does

    def progress(step: str) -> None:
        nonlocal last
        now = time.perf_counter()
        split[step.split(" (")[0]] = round(now - last, 2)
        last = now

    run = flows.score(
        EngineConfig.load(), str(data), None, ServingConfig.load(), MlflowConfig.load(), None, progress
    )
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "split": split,
        "scored": len(run.result.scores),
        "parquet": str(run.result.parquet),
    }


def reference_sql(source: dict[str, str], t: str) -> str:
    """The model's inputs for every eligible customer at T, by hand: spine (first event at or before T, not
    cancelled by T), purchase aggregates, purchase days and their gaps, the BTYD summaries."""
    ts, d = f"TIMESTAMP '{t}'", f"CAST(TIMESTAMP '{t}' AS DATE)"
    firsts = [f"SELECT customer_id, timestamp AS ts FROM {source['transactions']}"]
    if "interactions" in source:
        firsts.append(f"SELECT customer_id, timestamp FROM {source['interactions']}")
    if "customers" in source:
        firsts.append(
            f"SELECT customer_id, signup_date FROM {source['customers']} WHERE signup_date IS NOT NULL"
        )
    cancelled = (
        f"SELECT customer_id, min(timestamp) AS cancelled_at FROM {source['cancellations']} GROUP BY 1"
        if "cancellations" in source
        else "SELECT NULL::VARCHAR AS customer_id, NULL::TIMESTAMP AS cancelled_at WHERE false"
    )
    return f"""
    WITH firsts AS (SELECT customer_id, min(ts) AS first_seen FROM ({" UNION ALL ".join(firsts)}) GROUP BY 1),
    cancelled AS ({cancelled}),
    spine AS (
        SELECT f.customer_id FROM firsts f LEFT JOIN cancelled c USING (customer_id)
        WHERE f.first_seen <= {ts} AND (c.cancelled_at IS NULL OR c.cancelled_at > {ts})
    ),
    tx AS (
        SELECT customer_id, amount, CAST(timestamp AS DATE) AS day,
            date_diff('day', CAST(timestamp AS DATE), {d}) AS age
        FROM {source["transactions"]} WHERE timestamp <= {ts}
    ),
    ta AS (
        SELECT customer_id,
            min(age) FILTER (WHERE amount >= 0) AS recency_days,
            sum(amount) FILTER (WHERE amount >= 0) AS monetary_sum,
            avg(amount) FILTER (WHERE amount >= 0) AS monetary_mean,
            max(amount) FILTER (WHERE amount >= 0) AS monetary_max,
            stddev_samp(amount) FILTER (WHERE amount >= 0) AS monetary_std,
            count(*) FILTER (WHERE amount >= 0 AND age < 30) AS purchases_30d,
            sum(amount) FILTER (WHERE amount >= 0 AND age < 30) AS amount_30d,
            count(*) FILTER (WHERE amount >= 0 AND age < 90) AS purchases_90d,
            sum(amount) FILTER (WHERE amount >= 0 AND age < 90) AS amount_90d,
            count(*) FILTER (WHERE amount >= 0 AND age >= 90 AND age < 180) AS purchases_prev_90d,
            sum(amount) FILTER (WHERE amount >= 0 AND age >= 90 AND age < 180) AS amount_prev_90d
        FROM tx GROUP BY 1
    ),
    days AS (
        SELECT customer_id, day, sum(amount) AS day_amount, min(age) AS age,
            date_diff('day', lag(day) OVER (PARTITION BY customer_id ORDER BY day), day) AS gap
        FROM tx WHERE amount >= 0 GROUP BY customer_id, day
    ),
    da AS (
        SELECT customer_id, count(*) AS frequency_days, avg(gap) AS ipt_mean_days,
            stddev_samp(gap) AS ipt_std_days,
            arg_max(gap, day) AS ipt_last_days, arg_min(day_amount, day) AS monetary_first,
            arg_max(day_amount, day) AS monetary_last, count(*) - 1 AS btyd_x,
            max(age) - min(age) AS btyd_tx, max(age) AS btyd_t, sum(day_amount) AS day_total
        FROM days GROUP BY 1
    )
    SELECT s.customer_id, recency_days, coalesce(monetary_sum, 0) AS monetary_sum, monetary_mean,
        monetary_max,
        monetary_std, monetary_first, monetary_last,
        coalesce(purchases_30d, 0) AS purchases_30d, coalesce(amount_30d, 0) AS amount_30d,
        coalesce(purchases_90d, 0) AS purchases_90d, coalesce(amount_90d, 0) AS amount_90d,
        coalesce(purchases_90d, 0) - coalesce(purchases_prev_90d, 0) AS trend_purchases_90d,
        coalesce(amount_90d, 0) - coalesce(amount_prev_90d, 0) AS trend_amount_90d,
        ipt_mean_days, ipt_std_days, ipt_last_days,
        recency_days / nullif(ipt_mean_days, 0) AS recency_over_ipt,
        coalesce(frequency_days, 0) AS frequency_days, btyd_x, btyd_tx, btyd_t,
        (day_total - monetary_first) / nullif(btyd_x, 0) AS btyd_m
    FROM spine s LEFT JOIN ta USING (customer_id) LEFT JOIN da USING (customer_id)
    ORDER BY s.customer_id
    """


def child_reference(data: Path, work: Path) -> dict[str, Any]:
    """The model's inputs by hand in DuckDB, both boosters' inplace_predict, the scores to Parquet."""
    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from scipy.special import expit, logit

    from features import btyd
    from training.models import P_EPS, VALUE_FLOOR
    from training.tracking import MlflowConfig, load_artefact

    split: dict[str, float] = {}
    t0 = time.perf_counter()
    mlcfg = MlflowConfig.load()
    art = load_artefact(f"models:/{mlcfg.registered_model}@champion", mlcfg)
    split["model"] = round(time.perf_counter() - t0, 2)
    t1 = time.perf_counter()
    con = duckdb.connect()  # DuckDB's default threads: every core, as Diamond's run uses both
    source = {
        n: f"read_parquet('{data / n}.parquet')"
        for n in ("transactions", "interactions", "customers", "cancellations")
        if (data / f"{n}.parquet").exists()
    }
    declared = yaml.safe_load((data / "dataset.yaml").read_text()) if (data / "dataset.yaml").exists() else {}
    if (declared or {}).get("as_of"):
        t = datetime.fromisoformat(str(declared["as_of"]))
    else:  # the latest event, as Diamond takes it
        events = [n for n in ("transactions", "interactions", "cancellations") if n in source]
        t = max(con.execute(f"SELECT max(timestamp) FROM {source[n]}").fetchall()[0][0] for n in events)
    rows = con.sql(reference_sql(source, t.isoformat(sep=" "))).arrow().read_all()
    split["query"] = round(time.perf_counter() - t1, 2)
    t2 = time.perf_counter()
    col = {
        name: rows.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        for name in rows.column_names[1:]
    }
    params = art.btyd_params or {}
    x, has = col["btyd_x"], ~np.isnan(col["btyd_x"])
    h = art.horizon_days / 7.0
    for name in ("btyd_expected_purchases", "btyd_p_alive", "btyd_p_no_purchase", "btyd_expected_spend"):
        col[name] = np.full(len(x), np.nan)
    if "bgnbd" in params:
        bg = btyd.BGNBDParams(*params["bgnbd"])
        xs, ts, bt = x[has], col["btyd_tx"][has] / 7.0, col["btyd_t"][has] / 7.0
        col["btyd_expected_purchases"][has] = btyd.bgnbd_expected_purchases(bg, xs, ts, bt, h)
        col["btyd_p_alive"][has] = btyd.bgnbd_p_alive(bg, xs, ts, bt)
        col["btyd_p_no_purchase"][has] = btyd.bgnbd_p_no_purchase(bg, xs, ts, bt, h)
        if "gamma_gamma" in params:
            gg = btyd.GammaGammaParams(*params["gamma_gamma"])
            ms = np.nan_to_num(col["btyd_m"][has], nan=0.0)
            spend = btyd.gamma_gamma_expected_spend(gg, xs, np.where(xs > 0, np.maximum(ms, 1e-12), 0.0))
            col["btyd_expected_spend"][has] = col["btyd_expected_purchases"][has] * spend
    split["btyd"] = round(time.perf_counter() - t2, 2)
    t3 = time.perf_counter()
    matrix = np.column_stack([col[c] for c in art.columns]).astype(np.float32)
    churn, value = art.churn, art.value
    margin = churn.booster.inplace_predict(matrix, predict_type="margin")
    risk = {
        "recency_days": np.nan_to_num(col["recency_days"], nan=np.finfo(np.float64).max),
        "frequency_days": -col["frequency_days"],
        "monetary_sum": -col["monetary_sum"],
    }
    rank = sum(
        (np.searchsorted(ref, risk[a], "left") + np.searchsorted(ref, risk[a], "right")) / (2.0 * len(ref))
        for a, ref in churn.rfm.references.items()
    ) / len(churn.rfm.references)
    w_margin, w_rfm, b = churn.stack
    p_h = expit(w_margin * margin + w_rfm * rank + b)
    a_c, b_c = churn.horizon_map
    p = expit(a_c + b_c * logit(np.clip(p_h, P_EPS, 1 - P_EPS)))
    pos = art.value_positions
    v_h = np.maximum(value.raw_of(matrix if pos is None else matrix[:, pos]), 0.0)
    a_v, b_v = value.horizon_map
    v = np.where(v_h > 0, np.exp(a_v) * np.maximum(v_h, VALUE_FLOOR) ** b_v, 0.0)
    if (lv := art.levels) is not None:  # the levels recalibrated on the latest complete window
        if lv.churn_shift != 0.0:
            p = expit(logit(np.clip(p, P_EPS, 1 - P_EPS)) + lv.churn_shift)
        v = lv.value_factor * np.maximum(v, 0.0) ** lv.value_slope
    split["predict"] = round(time.perf_counter() - t3, 2)
    t4 = time.perf_counter()
    out = pa.table(
        {
            "customer_id": rows.column("customer_id"),
            "churn_probability": p,
            "predicted_value": v,
            "value_at_risk": p * v,
        }
    )
    target = work / "reference.parquet"
    pq.write_table(out, target)
    split["write"] = round(time.perf_counter() - t4, 2)
    return {
        "seconds": time.perf_counter() - t1,
        "split": split,
        "scored": out.num_rows,
        "parquet": str(target),
    }


def run_child(side: str, data: Path, work: Path, store_url: str | None) -> None:
    os.environ.update(store_env(CHAMPION))
    result = child_reference(data, work) if side == "reference" else child_diamond(data, work, store_url)
    print(json.dumps(result))


# --- the stores ---------------------------------------------------------------------------------------------


@contextmanager
def postgres_stores(url: str | None) -> Iterator[Callable[[], str]]:
    """Makes new, empty PostgreSQL serving stores (their URLs), one per run: new databases of a throwaway
    cluster with PostgreSQL's default durability (fsync and synchronous commit on, as SQLite's WAL syncs
    its commits), or new schemas in `url`'s database, first on the search path, dropped afterwards."""
    if url is None:
        from tests.helpers import free_port
        from tests.helpers import postgres as pg

        with pg.cluster(free_port(), durable=True) as cluster:
            yield lambda: cluster.new_database("bench")
        return
    import sqlalchemy as sa

    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    made: list[str] = []

    def new() -> str:
        name = f"bench_batch_{os.getpid()}_{len(made)}"
        with admin.connect() as con:
            con.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        made.append(name)
        at = sa.make_url(url).update_query_dict({"options": f"-csearch_path={name}"})
        return at.render_as_string(hide_password=False)

    try:
        yield new
    finally:
        with admin.connect() as con:
            for name in made:
                con.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')


# --- the parent -----------------------------------------------------------------------------------------


def same_scores(diamond: Path, reference: Path) -> float:
    """The largest difference between the two sides' scores for the same customers (fails on other
    customers)."""
    import numpy as np
    import pandas as pd

    d = pd.read_parquet(
        diamond, columns=["customer_id", "churn_probability", "predicted_value", "value_at_risk"]
    )
    r = pd.read_parquet(reference)
    if set(d["customer_id"]) != set(r["customer_id"]):
        raise SystemExit(f"the sides scored different customers: diamond {len(d):,}, reference {len(r):,}")
    m = d.merge(r, on="customer_id", suffixes=("", "_ref"))
    worst = 0.0
    for c in ("churn_probability", "predicted_value", "value_at_risk"):
        diff = np.abs(m[c] - m[f"{c}_ref"]) / np.maximum(1.0, np.abs(m[f"{c}_ref"]))
        worst = max(worst, float(diff.max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sides", nargs="+", default=["reference", "diamond"], choices=["reference", "diamond"]
    )
    parser.add_argument(
        "--stores",
        nargs="+",
        default=["sqlite"],
        choices=["sqlite", "postgresql"],
        help="the serving stores Diamond's side writes (a run each; postgresql: side diamond-postgresql)",
    )
    parser.add_argument(
        "--store-url",
        help="PostgreSQL database for --stores postgresql (a schema per run, dropped afterwards); "
        "default: a throwaway cluster (PostgreSQL 15 binaries, tests/helpers/postgres.py)",
    )
    parser.add_argument("--data-dir", type=Path, default=DATA, help="where histories are kept")
    parser.add_argument("--tmp", type=Path, default=None, help="where each run's store and files go")
    parser.add_argument("--child", choices=["diamond", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.data, args.work, args.child_store)
        return
    ensure_champion()
    results: dict[tuple[int, str], Any] = {}
    runs = [("reference", None)] if "reference" in args.sides else []
    if "diamond" in args.sides:
        runs += [("diamond" if s == "sqlite" else f"diamond-{s}", s) for s in args.stores]
    with ExitStack() as stack:
        pg_store = (
            stack.enter_context(postgres_stores(args.store_url)) if "postgresql" in args.stores else None
        )
        for n in args.customers:
            measure_size(n, args, runs, pg_store, results)
    report(results, args.customers)


def measure_size(
    n: int,
    args: argparse.Namespace,
    runs: list[tuple[str, str | None]],
    pg_store: Callable[[], str] | None,
    results: dict[tuple[int, str], Any],
) -> None:
    """Each side at `n` customers, then the check that every Diamond side scored as the reference did."""
    data = ensure_history(n, args.seed, args.data_dir)
    with tempfile.TemporaryDirectory(prefix="bench-batch-", dir=args.tmp) as tmp:
        parquet = {}
        for side, kind in runs:
            work = Path(tmp) / side
            work.mkdir()
            cmd = [sys.executable, __file__, "--child", side.split("-")[0], "--data", str(data)]
            cmd += ["--work", str(work)]
            if kind == "postgresql" and pg_store is not None:
                cmd += ["--child-store", pg_store()]
            print(f"{n:,} customers: {side} ...", flush=True)
            got = measure(cmd)
            results[(n, side)] = got
            parquet[side] = Path(got.result["parquet"])
            print(
                f"  {side}: {got.wall_s:.1f} s wall, {got.peak_rss_mib:,.0f} MiB peak, "
                f"{got.result['scored']:,} scored, split {got.result['split']}, "
                f"load average after {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        for side in sorted(set(parquet) - {"reference"}) if "reference" in parquet else []:
            worst = same_scores(parquet[side], parquet["reference"])
            print(f"  {side}'s scores agree: largest relative difference {worst:.2e}", flush=True)
            if worst > 1e-6:
                raise SystemExit(f"the reference's scores differ from {side}'s by {worst:.2e}")


def report(results: dict[tuple[int, str], Any], customers: list[int]) -> None:
    """A row per side and size in bench/README.md, then PASS/FAIL per goal."""
    today = date.today().isoformat()
    for (n, side), got in sorted(results.items()):
        ref = results.get((n, "reference"))
        speed = f"{ref.wall_s / got.wall_s:.2f}" if ref else "—"
        split = ", ".join(f"{k} {v:.1f}" for k, v in got.result["split"].items())
        row = (
            f"| {today} | {n:,} | {side} | {got.result['scored']:,} | {got.wall_s:.1f} "
            f"| {got.peak_rss_mib:,.0f} "
            f"| {got.result['scored'] / got.wall_s:,.0f} | {speed} | {split} | {machine()} |"
        )
        record_row(START, END, HEADER, row, 3)
    big, small = max(customers), min(customers)
    d_big, r_big = results.get((big, "diamond")), results.get((big, "reference"))
    goals = []
    if d_big is not None:
        goals.append(
            (
                f"{big:,} customers in < {GOAL_SECONDS:.0f} s",
                d_big.wall_s < GOAL_SECONDS,
                f"{d_big.wall_s:.1f} s",
            )
        )
        goals.append(
            (
                f"{big:,} customers in < 6 GB peak",
                d_big.peak_rss_mib < GOAL_MIB,
                f"{d_big.peak_rss_mib:,.0f} MiB",
            )
        )
        if r_big is not None:
            ratio = r_big.wall_s / d_big.wall_s
            goals.append((f">= {GOAL_RATIO}x the reference at {big:,}", ratio >= GOAL_RATIO, f"{ratio:.2f}x"))
        d_small = results.get((small, "diamond"))
        if d_small is not None and small != big:
            scale = d_big.wall_s / d_small.wall_s
            goals.append(
                (f"{big:,} costs <= {GOAL_SCALING:.0f}x {small:,}", scale <= GOAL_SCALING, f"{scale:.1f}x")
            )
    for name, ok, got in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {got}")


if __name__ == "__main__":
    main()
