"""Time to churn and cold start on CDNOW, time-based (docs/training.md, "Time to churn" and "Cold start").

Trains at T (default 1997-09-30) with data <= T only (training.pipeline.backtest, H = 273 days), then on the
later data:

* **the curve**: each customer's predicted P(churned by t) (training.curve, shipped in the artefact) against
  the realised "churned by t" (no purchase in (T + t - H, T + H]) for t = 30, 60, 90, 180 and H: mean
  predicted, realised rate, Brier, ROC-AUC over every customer; and the same on the customers whose lapse
  can fall by t (R >= H - t), where the curve is the model's P(H) itself.
* **cold start**: the customers with one purchase day at T, scored by the population mean (the model's mean
  P(H) over every customer at T), by the segment mean and by the served model: AUC, Brier, mean predicted
  vs realised. (A separate cold-start model was measured here and deleted: docs/training.md "Cold start".)
* the cold-start counts at the demo's scoring cutoff (the end of CDNOW, 1998-06-30) as serving flags them.

Usage: ``python bench/bench_curve.py [--cutoff 1997-09-30] [--horizon 273] [--trials 20]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import parse_cutoff
from features.datasets import cdnow, synthetic
from features.history import History, load_history
from serving import scoring
from serving.config import ServingConfig
from training import metrics
from training.config import TrainingConfig
from training.curve import HORIZONS, hazard_curve
from training.pipeline import Backtest, backtest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cutoff", default="1997-09-30")
    parser.add_argument("--horizon", type=int, default=273)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--synthetic", type=int, default=0, help="customers of a synthetic (mixed) history instead of CDNOW"
    )
    args = parser.parse_args()
    config = TrainingConfig.load().model_copy(update={"trials": args.trials})
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic:
            synthetic.write(Path(tmp) / "synthetic", args.synthetic, seed=0)
            history = load_history(Path(tmp) / "synthetic")
            result = backtest(history, args.cutoff, args.horizon, config)
            subscribers(history, result)
            return
        history = load_history(cdnow.write(Path(tmp) / "cdnow"))
    result = backtest(history, args.cutoff, args.horizon, config)
    art, rows = result.trained.artefact, result.trained.scoring_rows.reset_index(drop=True)
    assert result.truth is not None, "the history does not reach T + H"
    y = result.truth["churned"].to_numpy()
    p = result.predictions["churn_probability"].to_numpy()
    h = art.horizon_days
    curve = art.churn_curve(rows, p)
    assert curve is not None
    probs, days = curve
    recency = rows["recency_days"].to_numpy(dtype=np.float64)
    print(f"# Time to churn: CDNOW, T = {args.cutoff}, H = {h} d, {len(rows):,} customers\n")
    print(
        "| t (days) | customers who can lapse by t | mean predicted P(t) | realised churn by t | Brier | "
        "ROC-AUC | on those who can lapse: mean predicted / realised |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for k, t in enumerate([*HORIZONS, h]):
        pred = probs[:, k] if t in HORIZONS else p
        can = recency >= h - t
        real = (y == 1) & can
        print(
            f"| {t} | {int(can.sum()):,} | {pred.mean():.4f} | {real.mean():.4f} | "
            f"{metrics.brier(real, pred):.4f} | {metrics.roc_auc(real, pred):.4f} | "
            f"{pred[can].mean():.4f} / {real[can].mean():.4f} |"
        )
    churners = days[np.isfinite(days)]
    print(
        f"\nexpected days to churn: defined for {churners.size:,}; median {np.median(churners):.0f} d; "
        f"already lapsed (0 d): {(churners == 0).sum():,}"
    )

    one = rows["frequency_days"].to_numpy() == 1
    print(f"\n# Cold start: {int(one.sum()):,} of {len(rows):,} customers have one purchase day at T\n")
    yo = y[one]
    population = np.full(int(one.sum()), p.mean())
    candidates = {
        "population mean (model's mean P over everyone at T)": population,
        "one-purchase mean (model's mean P over them)": np.full(int(one.sum()), p[one].mean()),
        "served model": p[one],
    }
    print(
        "| scored by | ROC-AUC | Brier | mean predicted | realised | AUC gain over the served model "
        "(bootstrap SE) | Brier gain over the served model (SE) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    served = p[one]
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, yo.size, yo.size) for _ in range(200)]
    for name, q in candidates.items():
        auc_gain = [metrics.roc_auc(yo[i], q[i]) - metrics.roc_auc(yo[i], served[i]) for i in draws]
        brier_gain = [metrics.brier(yo[i], served[i]) - metrics.brier(yo[i], q[i]) for i in draws]
        print(
            f"| {name} | {metrics.roc_auc(yo, q):.4f} | {metrics.brier(yo, q):.4f} | {q.mean():.4f} | "
            f"{yo.mean():.4f} | {metrics.roc_auc(yo, q) - metrics.roc_auc(yo, served):+.4f} "
            f"({np.std(auc_gain):.4f}) | {metrics.brier(yo, served) - metrics.brier(yo, q):+.4f} "
            f"({np.std(brier_gain):.4f}) |"
        )

    end = parse_cutoff(cdnow.AS_OF)
    demo_rows = art.feature_rows(history, end)
    serving = ServingConfig()
    flags = scoring.cold_start(demo_rows, serving.cold_start_min_purchase_days)
    print(
        f"\n# Cold start at the demo's scoring cutoff {cdnow.AS_OF}: {int(flags.sum()):,} of "
        f"{len(demo_rows):,} customers flagged (fewer than {serving.cold_start_min_purchase_days} "
        "purchase days)"
    )


def subscribers(history: History, result: Backtest) -> None:
    """The cancellation curve of the subscribers of a mixed history (read from the contract model's monthly
    hazards, training.contract): predicted P(cancelled by t) against realised cancellation in (T, T + t],
    and the shape alone (P(t) / P(H) against realised(t) / realised(H)), which does not inherit the level of
    P(H); beside it the constant hazard anchored at the same P(H) (what the curve was before)."""
    art, rows = result.trained.artefact, result.trained.scoring_rows.reset_index(drop=True)
    assert result.truth is not None and history.cancellations is not None and art.curve is not None
    t0, h = art.cutoff, art.horizon_days
    p = result.predictions["churn_probability"].to_numpy()
    sub = art.curve.contract_rows(rows)
    cancels = history.cancellations.to_pandas()
    later = cancels[cancels["timestamp"] > t0].groupby("customer_id")["timestamp"].min()
    first = rows["customer_id"].map(later).to_numpy()
    days = np.array([(f - t0).total_seconds() / 86400 if pd.notna(f) else np.inf for f in first])
    curve = art.churn_curve(rows, p)
    assert curve is not None
    probs = curve[0]
    flat, _ = hazard_curve(p, h)  # the constant hazard anchored at the same P(H)
    y = result.truth["churned"].to_numpy()
    print(f"# Cancellation curve: synthetic, T = {t0:%Y-%m-%d}, H = {h} d, {int(sub.sum()):,} subscribers\n")
    print(
        "| t (days) | mean predicted P(t) | realised cancelled by t | predicted P(t) / P(H) | "
        "realised(t) / realised(H) | Brier | ROC-AUC | constant hazard: P(t) / P(H), Brier |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    real_h = (days[sub] <= h).mean()
    assert np.array_equal(days[sub] <= h, y[sub] == 1), "cancellation dates disagree with the labels"
    for k, t in enumerate([*HORIZONS, h]):
        if t > h:
            continue
        pred = (probs[:, k] if t in HORIZONS else p)[sub]
        const = (flat[:, k] if t in HORIZONS else p)[sub]
        real = days[sub] <= t
        print(
            f"| {t} | {pred.mean():.4f} | {real.mean():.4f} | {pred.mean() / p[sub].mean():.3f} | "
            f"{real.mean() / real_h:.3f} | {metrics.brier(real, pred):.4f} | "
            f"{metrics.roc_auc(real, pred):.4f} | {const.mean() / p[sub].mean():.3f}, "
            f"{metrics.brier(real, const):.4f} |"
        )


if __name__ == "__main__":
    main()
