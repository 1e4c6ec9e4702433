"""Wiring: which step feeds which. No maths here (training.design, training.models, training.metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa

from features.build import build_labels, end_of, parse_cutoff, parse_horizon, resolve_columns
from features.history import History
from training import baselines, design, metrics
from training.config import TrainingConfig
from training.models import ChurnModel, ValueModel, fit_churn, fit_value


@dataclass
class Fitted:
    """Both models trained at one cutoff, and what they were trained on."""

    cutoff: datetime
    label_horizon_days: int
    feature_set: str
    columns: list[str]
    origins: list[datetime]
    churn: ChurnModel
    value: ValueModel
    validation: dict[str, float]  # metrics on the latest origin, label horizon
    value_deviance: dict[str, float]  # each candidate objective's validation deviance
    training_rows: int


@dataclass
class Backtest:
    fitted: Fitted
    horizon_days: int
    predictions: pd.DataFrame  # customer_id, churn_probability, predicted_value
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # model/baseline -> metrics


def fit(
    history: History, cutoff: str | datetime, config: TrainingConfig, horizon_days: int | None = None
) -> Fitted:
    """Train churn and value models using only what was known at `cutoff`."""
    t = parse_cutoff(cutoff)
    h = min(config.label_horizon_days, horizon_days or config.label_horizon_days)
    fs = design.choose_feature_set(history, config.feature_set)
    origins = design.training_origins(history, t, h, config.origins, config.min_history_days)
    frame = design.training_frame(history, t, origins, h, fs)
    columns = resolve_columns(fs, history.until(t))
    churn, churn_scores = fit_churn(frame, columns, config.xgboost, config.seed, config.n_jobs)
    value, value_scores, deviance = fit_value(
        frame, columns, config.xgboost, config.value_objectives, config.seed, config.n_jobs
    )
    return Fitted(
        t, h, fs.key, columns, origins, churn, value, {**churn_scores, **value_scores}, deviance, len(frame)
    )


def predict(fitted: Fitted, history: History, cutoff: str | datetime, horizon: str | int) -> pd.DataFrame:
    """churn_probability and predicted_value over (cutoff, cutoff + horizon] for every eligible customer."""
    return _predict(fitted, *_frames(fitted, history, parse_cutoff(cutoff), parse_horizon(horizon)))


def _frames(
    fitted: Fitted, history: History, cutoff: datetime, horizon_days: int
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    fs = design.choose_feature_set(history, fitted.feature_set)
    return design.scoring_frames(history, cutoff, fitted.label_horizon_days, horizon_days, fs)


def _predict(fitted: Fitted, short: pd.DataFrame, long: pd.DataFrame | None) -> pd.DataFrame:
    p, v = design.bridge(fitted.churn.predict(short), fitted.value.predict(short), short, long)
    return pd.DataFrame(
        {"customer_id": short["customer_id"].to_numpy(), "churn_probability": p, "predicted_value": v}
    )


def backtest(
    history: History, cutoff: str | datetime, horizon: str | int, config: TrainingConfig
) -> Backtest:
    """Train with data <= cutoff, predict every eligible customer, and score against (cutoff, cutoff + H]
    (when the history reaches that far) beside the RFM and BG/NBD baselines."""
    t, big_h = parse_cutoff(cutoff), parse_horizon(horizon)
    fitted = fit(history, t, config, big_h)
    short, long = _frames(fitted, history, t, big_h)
    preds = _predict(fitted, short, long)
    result = Backtest(fitted, big_h, preds)
    if end_of(history) < t + timedelta(days=big_h):
        return result  # the future is not in the history: predictions only
    spine = pa.table(
        {"customer_id": preds["customer_id"], "cutoff": pa.array([t] * len(preds), pa.timestamp("us"))}
    )
    truth = build_labels(history, spine, big_h).to_pandas()
    y, value = truth["churned"].to_numpy(), truth["future_value"].to_numpy()
    at_h = long if long is not None else short
    result.metrics = {
        "model": {
            **metrics.churn_metrics(y, preds["churn_probability"]),
            **metrics.value_metrics(value, preds["predicted_value"]),
        },
        "rfm": _rank_only(y, baselines.rfm_churn_score(short), value, baselines.rfm_value(short, big_h)),
        "bgnbd": {
            **metrics.churn_metrics(y, baselines.btyd_churn(at_h)),
            **metrics.value_metrics(value, baselines.btyd_value(at_h)),
        },
    }
    return result


def _rank_only(y: Any, score: Any, value: Any, predicted: Any) -> dict[str, float | None]:
    """A ranking has an AUC but no probability scores."""
    out: dict[str, float | None] = {**metrics.value_metrics(value, predicted)}
    out.update(churn_auc=metrics.roc_auc(y, score), churn_brier=None, churn_logloss=None)
    return out
