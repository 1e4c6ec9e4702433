"""Scratch (issue 16, session 24): the value model at H — why its lowest deciles are over-predicted, and
what fixes them. The pipeline's value model where it learns H-day labels (`value_labels: full`): the churn
model's 8 origins and columns, its Optuna search over objectives; judged on the rows at T with their H-day
truth (no levels: every variant's total is also shown scaled to the realised total, so the deciles compare
by shape).

    .venv/bin/python bench/exp_value16.py --data bench/.data/synthetic-50000-seed0 --cutoff 2024-12-31
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import exp_churn16_tune as E  # noqa: E402

from training import metrics, tuning  # noqa: E402
from training.config import TrainingConfig  # noqa: E402
from training.models import Encoder, fit_value, split_latest, train_booster  # noqa: E402

H = E.H


def frames(data: Path, cutoff: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The value model's training frame at H (the churn model's 8 origins), the rows at T with their
    H-day truth, the columns: exp_churn16_tune's, cached under this harness's own name."""
    return E.frames(data, cutoff=cutoff, prefix="expvalue16")


def judge(
    name: str, y: np.ndarray, p: np.ndarray, late_y: np.ndarray | None, late_p: np.ndarray | None
) -> dict:
    scaled = p * y.sum() / p.sum()
    table = metrics.decile_table(y, scaled)
    out: dict[str, Any] = {
        "variant": name,
        "gini": round(metrics.normalized_gini(y, p), 5),
        "aggregate": round(metrics.aggregate_error(y, p), 4),
        "decile_mape_raw": round(metrics.decile_mape(y, p), 3),
        "decile_mape_scaled": round(metrics.decile_mape(y, scaled), 3),
        "low5_pred_vs_actual": [f"{d['mean_predicted']:.2f}/{d['mean_actual']:.2f}" for d in table[5:]],
        "min_pred": round(float(p.min()), 4),
    }
    if late_y is not None and late_p is not None:
        out["val_gini"] = round(metrics.normalized_gini(late_y, late_p), 5)
        out["val_deviance"] = round(metrics.poisson_deviance(np.clip(late_y, 0, None), late_p), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--cutoff", required=True)
    parser.add_argument("--variants", nargs="+", default=["tuned", "hurdle"])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    frame, rows, cols = frames(Path(args.data), args.cutoff)
    config = TrainingConfig.load()
    y = rows["future_value"].to_numpy(np.float64)
    early, late = split_latest(frame, H)
    print(f"rows at T {len(rows):,}, training rows {len(frame):,}, columns {len(cols)}", flush=True)
    tuned = None
    for v in args.variants:
        t0 = time.perf_counter()
        if v == "tuned" or v.startswith("obj:"):
            objectives = tuple(config.value_objectives) if v == "tuned" else (v[4:],)
            tuned = tuning.tune_value(
                frame, H, cols, config.xgboost.params(), config.search, objectives, args.trials, 3600,
                config.seed, 1,
            )  # fmt: skip
            model, validated = fit_value(frame, H, cols, tuned.params, config.seed, 1)
            p = model.predict_label_horizon(rows)
            res = judge(v, y, p, late["future_value"].to_numpy(), validated)
            res["params"] = {k: (round(x, 4) if isinstance(x, float) else x) for k, x in tuned.params.items()}
        elif v.startswith("hurdle"):
            res = hurdle(v, frame, early, late, rows, cols, config, args.trials)
            res.update(judge(v, y, res.pop("p"), late["future_value"].to_numpy(), res.pop("validated")))
        else:
            raise SystemExit(f"unknown variant {v}")
        res["seconds"] = round(time.perf_counter() - t0)
        print(json.dumps(res), flush=True)


def hurdle(
    name: str,
    frame: pd.DataFrame,
    early: pd.DataFrame,
    late: pd.DataFrame,
    rows: pd.DataFrame,
    cols: list[str],
    config: TrainingConfig,
    trials: int,
) -> dict:
    """P(any positive value in H) by a tuned classifier, times E[value | positive] by a tuned regression on
    the rows that bought (objective `reg:gamma` unless the name says `:<objective>`)."""
    spend_obj = name.split(":", 1)[1] if ":" in name else "reg:gamma"

    def buy(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(churned=(df["future_value"] <= 0).astype(np.int8))

    fb = buy(frame)
    t_buy = tuning.tune_churn(
        fb, H, cols, config.xgboost.params(), config.search, trials, 3600, config.seed, 1
    )
    enc = Encoder.fit(frame, cols)
    pos = frame[frame["future_value"] > 0]
    pos_early = split_latest(pos, H)[0]
    t_spend = tuning.tune_value(
        pos, H, cols, config.xgboost.params(), config.search, (spend_obj,), trials, 3600, config.seed, 1
    )

    def fit_parts(train: pd.DataFrame, train_pos: pd.DataFrame) -> tuple[xgb.Booster, xgb.Booster]:
        b = train_booster(buy(train), "churned", enc, "binary:logistic", t_buy.params, config.seed, 1)
        s = train_booster(train_pos, "future_value", enc, spend_obj, t_spend.params, config.seed, 1)
        return b, s

    def predict(parts: tuple[xgb.Booster, xgb.Booster], df: pd.DataFrame) -> np.ndarray:
        dm = enc.matrix(df)
        return (1.0 - parts[0].predict(dm)) * np.maximum(parts[1].predict(dm), 0.0)

    validated = predict(fit_parts(early, pos_early), late)
    p = predict(fit_parts(frame, pos), rows)
    return {
        "p": p,
        "validated": validated,
        "params_buy": {k: (round(x, 4) if isinstance(x, float) else x) for k, x in t_buy.params.items()},
        "params_spend": {k: (round(x, 4) if isinstance(x, float) else x) for k, x in t_spend.params.items()},
    }


if __name__ == "__main__":
    main()
