"""Scratch (issue 16, session 11): the pipeline's backtest at T with the project's training.yaml, beside the
plain peer on the churn model's columns (bench_model_quality's peer) and on the value model's columns (the
peer before `churn_keep_features`). Prints churn AUC, Brier, value Gini, aggregate error and subscribers'
mean P(churn) against realised, one JSON line.

    .venv/bin/python bench/exp_churn16_pipeline.py --customers 50000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_model_quality import plain_peer  # noqa: E402
from features.build import monthly_cutoffs  # noqa: E402
from features.history import load_history  # noqa: E402
from training import metrics  # noqa: E402
from training.config import TrainingConfig  # noqa: E402
from training.pipeline import backtest  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--customers", type=int, default=50000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--horizon", type=int, default=182)
    a = p.parse_args()
    history = load_history(str(ROOT / "bench" / ".data" / f"synthetic-{a.customers}-seed{a.seed}"))
    t = monthly_cutoffs(history, a.horizon)[-1]
    config = TrainingConfig.load().model_copy(update={"horizon_days": a.horizon})
    bt = backtest(history, t, f"{a.horizon}d", config)
    assert bt.truth is not None
    art, rows = bt.trained.artefact, bt.trained.scoring_rows
    truth = bt.predictions.merge(bt.truth, on="customer_id", validate="1:1")
    y, value = truth["churned"].to_numpy(), truth["future_value"].to_numpy()
    sub = rows["attr_is_subscriber"].fillna(False).to_numpy(bool)
    out = {"customers": a.customers, "seed": a.seed, "columns": len(art.columns),
           "value_columns": len(art.value.encoder.columns), "params": bt.trained.params["churn"]}  # fmt: skip
    preds = {"model": (truth["churn_probability"].to_numpy(), truth["predicted_value"].to_numpy())}
    value_cols = art.value.encoder.columns
    preds["peer"] = plain_peer(history, art.cutoff, a.horizon, config, rows, art.columns, value_cols)[:2]
    preds["peer_value_columns"] = plain_peer(
        history, art.cutoff, a.horizon, config, rows, value_cols, value_cols
    )[:2]
    for name, (pc, pv) in preds.items():
        out[name] = {
            "auc": round(metrics.roc_auc(y, pc), 5),
            "brier": round(metrics.brier(y, pc), 5),
            "gini": round(metrics.normalized_gini(value, pv), 5),
            "aggregate": round(float(pv.sum() / value.sum() - 1), 4),
            "sub_p": round(float(pc[sub].mean()), 4),
        }
    out["sub_rate"] = round(float(y[sub].mean()), 4)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
