"""Feature-set ablation: churn AUC and spend Gini with core_v1, core_v2, and core_v2 minus each new family.

A synthetic history with all four tables (`diamond data synthetic`: cached in bench/.data/). Time-based
protocol, per evaluation cutoff E: the models train on stacked origins whose label windows (c, c + H] end by
E (so no training label sees past E) and are scored on the customers eligible at E, whose labels are
(E, E + H]: never a training row. The models are a plain XGBoost with fixed parameters (no tuning, no
stacker, no horizon map), the same for every variant, so only the columns differ; text attributes are
XGBoost categoricals (`training.models.Encoder`).

core_v2 is built once per cutoff; every variant is a column subset of it (a feature is a pure function of
(history, cutoff), so core_v1's columns inside core_v2 are core_v1: `tests/unit/test_features_oracle.py`).
Standard errors of each variant's difference to core_v1 come from a paired bootstrap over the evaluation
customers (the model fixed: the spread of the metric on this sample, not of the training).

Usage: ``python bench/bench_ablation.py [--customers 30000] [--seeds 1 2] [--horizon 90]
[--eval 2025-06-30 2025-09-30] [--out bench/ablation.md]``
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import ROOT, machine

from features.build import build_training_set, month_end_cutoffs, resolve_columns
from features.datasets import synthetic
from features.history import History, load_history
from features.sets import CORE_V2_FAMILIES, FEATURE_SETS
from training import metrics
from training.models import Encoder, train_booster

PARAMS: dict[str, Any] = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "max_depth": 5,
    "min_child_weight": 5,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
}
ORIGINS = 6  # training origins per evaluation cutoff: the month ends every 2 months before it
BOOT = 100


def ensure_history(data_dir: Path, customers: int, seed: int) -> Path:
    folder = data_dir / f"synthetic-{customers}-seed{seed}"
    if not (folder / "dataset.yaml").exists():
        print(f"writing synthetic history: {customers:,} customers -> {folder}", flush=True)
        synthetic.write(folder, customers, seed=seed)
    return folder


def origins_for(evaluate: datetime, horizon: int, first: datetime) -> list[datetime]:
    """Month ends, every other one going back from the last whose label window ends by `evaluate`."""
    ends = month_end_cutoffs(first, evaluate, horizon)
    return ends[::-1][::2][:ORIGINS][::-1]


def variants(history: History) -> dict[str, list[str]]:
    """Column lists: core_v1, core_v2, and core_v2 minus each new family (as resolved on this history)."""
    v1 = resolve_columns("core_v1", history)
    v2 = resolve_columns("core_v2", history)
    out = {"core_v1": v1, "core_v2": v2}
    for family, names in CORE_V2_FAMILIES.items():
        out[f"core_v2 - {family}"] = [c for c in v2 if c not in names]
    return out


def fit_predict(train: pd.DataFrame, test: pd.DataFrame, columns: list[str], seed: int) -> dict[str, Any]:
    encoder = Encoder.fit(train, columns)
    # one thread: on a shared machine OpenMP's spinning threads made two ~20x slower than one
    churn = train_booster(train, "churned", encoder, "binary:logistic", PARAMS, seed, 1)
    value = train_booster(train, "future_value", encoder, "reg:tweedie", PARAMS, seed, 1)
    dm = encoder.matrix(test)
    return {"p": churn.predict(dm), "v": np.maximum(value.predict(dm), 0.0)}


def bootstrap_se(
    y: np.ndarray, fv: np.ndarray, base: dict[str, Any], other: dict[str, Any]
) -> tuple[float, float]:
    """Paired bootstrap standard errors of (other - base) churn AUC and spend Gini."""
    rng = np.random.default_rng(0)
    d_auc, d_gini = [], []
    for _ in range(BOOT):
        i = rng.integers(0, len(y), len(y))
        d_auc.append(metrics.roc_auc(y[i], other["p"][i]) - metrics.roc_auc(y[i], base["p"][i]))
        d_gini.append(
            metrics.normalized_gini(fv[i], other["v"][i]) - metrics.normalized_gini(fv[i], base["v"][i])
        )
    return float(np.std(d_auc, ddof=1)), float(np.std(d_gini, ddof=1))


def run(folder: Path, evaluate: datetime, horizon: int, seed: int) -> list[dict[str, Any]]:
    history = load_history(folder)
    events = [t for n, t in history.tables().items() if n != "customers"]
    first = min(t.column("timestamp").to_numpy().min() for t in events)
    train_cutoffs = origins_for(evaluate, horizon, pd.Timestamp(first).to_pydatetime())
    t0 = time.perf_counter()
    rows = build_training_set(history, [*train_cutoffs, evaluate], f"{horizon}d", FEATURE_SETS["core_v2"])
    build_s = time.perf_counter() - t0
    frame = rows.to_pandas()
    train = frame[frame["cutoff"] < pd.Timestamp(evaluate)]
    test = frame[frame["cutoff"] == pd.Timestamp(evaluate)]
    assert (train["cutoff"] + pd.Timedelta(days=horizon) <= pd.Timestamp(evaluate)).all()
    y, fv = test["churned"].to_numpy(), test["future_value"].to_numpy(dtype=np.float64)
    active = test["purchases_90d"].to_numpy() > 0  # the harder half: still buying, churn not yet visible
    print(
        f"{folder.name} E={evaluate:%Y-%m-%d}: {len(train):,} training rows at {len(train_cutoffs)} origins "
        f"({train_cutoffs[0]:%Y-%m-%d}..{train_cutoffs[-1]:%Y-%m-%d}), {len(test):,} evaluation rows, "
        f"churn rate {y.mean():.3f}, core_v2 built in {build_s:.1f} s",
        flush=True,
    )
    preds, out = {}, []
    for name, columns in variants(history).items():
        preds[name] = fit_predict(train, test, columns, seed)
        auc = metrics.roc_auc(y, preds[name]["p"])
        auc_active = metrics.roc_auc(y[active], preds[name]["p"][active])
        gini = metrics.normalized_gini(fv, preds[name]["v"])
        se = bootstrap_se(y, fv, preds["core_v1"], preds[name]) if name != "core_v1" else (0.0, 0.0)
        out.append(
            {
                "history": folder.name,
                "evaluate": f"{evaluate:%Y-%m-%d}",
                "variant": name,
                "columns": len(columns),
                "auc": auc,
                "auc_active": auc_active,
                "d_auc_active": auc_active - metrics.roc_auc(y[active], preds["core_v1"]["p"][active]),
                "gini": gini,
                "d_auc": auc - metrics.roc_auc(y, preds["core_v1"]["p"]),
                "d_gini": gini - metrics.normalized_gini(fv, preds["core_v1"]["v"]),
                "se_auc": se[0],
                "se_gini": se[1],
                "train_rows": len(train),
                "test_rows": len(test),
            }
        )
        print(
            f"  {name:<36} {len(columns):>3} cols  AUC {auc:.4f}  active AUC {auc_active:.4f}  "
            f"Gini {gini:.4f}",
            flush=True,
        )
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| history | evaluated at | variant | columns | churn AUC | Δ AUC vs core_v1 (± SE) "
        "| AUC, bought in last 90 d | Δ | spend Gini | Δ Gini vs core_v1 (± SE) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        delta = "" if r["variant"] == "core_v1" else f"{r['d_auc']:+.4f} ± {r['se_auc']:.4f}"
        dact = "" if r["variant"] == "core_v1" else f"{r['d_auc_active']:+.4f}"
        dgini = "" if r["variant"] == "core_v1" else f"{r['d_gini']:+.4f} ± {r['se_gini']:.4f}"
        lines.append(
            f"| {r['history']} | {r['evaluate']} | {r['variant']} | {r['columns']} "
            f"| {r['auc']:.4f} | {delta} | {r['auc_active']:.4f} | {dact} | {r['gini']:.4f} | {dgini} |"
        )
    return "\n".join(lines)


def mean_table(results: list[dict[str, Any]]) -> str:
    frame = pd.DataFrame(results)
    cols = ["auc", "d_auc", "auc_active", "d_auc_active", "gini", "d_gini"]
    g = frame.groupby("variant", sort=False)[cols].mean()
    lines = [
        "| variant | churn AUC | Δ AUC | AUC, bought in last 90 d | Δ | spend Gini | Δ Gini |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in g.iterrows():
        lines.append(
            f"| {name} | {r.auc:.4f} | {r.d_auc:+.4f} | {r.auc_active:.4f} | {r.d_auc_active:+.4f} "
            f"| {r.gini:.4f} | {r.d_gini:+.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=30000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--horizon", type=int, default=90)
    parser.add_argument("--eval", nargs="+", default=["2025-06-30", "2025-09-30"])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "bench" / ".data")
    parser.add_argument("--out", type=Path, default=None, help="write the tables to this markdown file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    for seed in args.seeds:
        folder = ensure_history(args.data_dir, args.customers, seed)
        for e in args.eval:
            evaluate = datetime.fromisoformat(e) + timedelta(days=1) - timedelta(microseconds=1)
            results.extend(run(folder, evaluate, args.horizon, seed))
            text = (
                f"{args.customers:,} customers, synthetic seeds {args.seeds}, horizon {args.horizon} days, "
                f"{ORIGINS} training origins per evaluation cutoff, plain XGBoost {PARAMS}; {machine()}; "
                f"{time.perf_counter() - start:.0f} s in all.\n\n"
                + table(results)
                + "\n\nMeans over the histories and evaluation cutoffs above:\n\n"
                + mean_table(results)
                + "\n"
            )
            if args.out:  # after each evaluation, so a long run leaves what it measured
                args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
