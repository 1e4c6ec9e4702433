"""Fitting and applying the two XGBoost models. Pure functions of frames and parameters.

Everything learned from data lives in the returned objects (category levels, the calibration, the chosen
value objective), so that serving applies exactly what training fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.linear_model import LogisticRegression

from training import metrics


@dataclass
class Encoder:
    """Column order and the category levels of text columns, learned from training rows."""

    columns: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: list[str]) -> Encoder:
        cats = {
            c: sorted(str(v) for v in frame[c].dropna().unique())
            for c in columns
            if frame[c].dtype == object or isinstance(frame[c].dtype, pd.StringDtype)
        }
        return cls(list(columns), cats)

    def matrix(self, frame: pd.DataFrame) -> xgb.DMatrix:
        return xgb.DMatrix(self.frame(frame), enable_categorical=bool(self.categories), nthread=1)

    def frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Model inputs: the training columns in training order, floats and fixed-level categoricals."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"rows lack model columns {missing}")
        out = {}
        for c in self.columns:
            if c in self.categories:
                out[c] = pd.Categorical(frame[c].astype("object"), categories=self.categories[c])
            else:
                out[c] = pd.to_numeric(frame[c], errors="raise").astype("float64")
        return pd.DataFrame(out, index=frame.index)


@dataclass
class ChurnModel:
    """Booster for P(churn in the label horizon) and Platt calibration fitted on a later time slice."""

    booster: xgb.Booster
    encoder: Encoder
    calibration: tuple[float, float]  # p = sigmoid(a * margin + b)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        margin = self.booster.predict(self.encoder.matrix(frame), output_margin=True)
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-(a * margin + b)))


@dataclass
class ValueModel:
    """Booster for the value in the label horizon, with the objective validation chose."""

    booster: xgb.Booster
    encoder: Encoder
    objective: str

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.maximum(self.booster.predict(self.encoder.matrix(frame)), 0.0)


def booster_params(objective: str, params: dict[str, Any], seed: int, n_jobs: int) -> dict[str, Any]:
    """XGBoost training parameters (everything but the number of rounds)."""
    out = {k: v for k, v in params.items() if k != "n_estimators"}
    out["eta"] = out.pop("learning_rate", 0.1)
    out.update(objective=objective, seed=seed, nthread=n_jobs, tree_method="hist")
    if objective == "reg:tweedie":
        out.setdefault("tweedie_variance_power", 1.5)
    return out


def _train(
    frame: pd.DataFrame, label: str, encoder: Encoder, params: dict[str, Any], rounds: int
) -> xgb.Booster:
    dm = encoder.matrix(frame)
    dm.set_label(frame[label].to_numpy(dtype=np.float64))
    return xgb.train(params, dm, num_boost_round=rounds)


def split_latest(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of earlier origins (train) and of the latest origin (validate)."""
    latest = frame["cutoff"].max()
    early, late = frame[frame["cutoff"] < latest], frame[frame["cutoff"] == latest]
    if early.empty or late.empty:
        raise ValueError("time-based validation needs rows at two or more origins")
    return early, late


def fit_churn(
    frame: pd.DataFrame, columns: list[str], params: dict[str, Any], seed: int, n_jobs: int
) -> tuple[ChurnModel, dict[str, float]]:
    """Fit on earlier origins, calibrate and validate on the latest, refit on all; calibration kept."""
    early, late = split_latest(frame)
    encoder = Encoder.fit(frame, columns)
    p = booster_params("binary:logistic", params, seed, n_jobs)
    rounds = int(params.get("n_estimators", 300))
    first = _train(early, "churned", encoder, p, rounds)
    margin = first.predict(encoder.matrix(late), output_margin=True)
    y = late["churned"].to_numpy()
    platt = LogisticRegression(C=1e6).fit(margin.reshape(-1, 1), y)
    calibration = (float(platt.coef_[0][0]), float(platt.intercept_[0]))
    validated = ChurnModel(first, encoder, calibration)
    scores = metrics.churn_metrics(y, validated.predict(late))
    final = _train(frame, "churned", encoder, p, rounds)
    return ChurnModel(final, encoder, calibration), scores


def fit_value(
    frame: pd.DataFrame,
    columns: list[str],
    params: dict[str, Any],
    objectives: tuple[str, ...],
    seed: int,
    n_jobs: int,
) -> tuple[ValueModel, dict[str, float], dict[str, float]]:
    """Choose the objective by Poisson deviance on the latest origin, then refit on all origins.
    Returns the model, its validation metrics and every objective's validation deviance."""
    early, late = split_latest(frame)
    encoder = Encoder.fit(frame, columns)
    rounds = int(params.get("n_estimators", 300))
    target = "future_value"
    fit_frame = frame.assign(**{target: frame[target].clip(lower=0.0)})
    early_fit = fit_frame.loc[early.index]
    actual = late[target].to_numpy(dtype=np.float64)
    deviance: dict[str, float] = {}
    candidates: dict[str, ValueModel] = {}
    for objective in objectives:
        booster = _train(early_fit, target, encoder, booster_params(objective, params, seed, n_jobs), rounds)
        model = ValueModel(booster, encoder, objective)
        deviance[objective] = metrics.poisson_deviance(np.clip(actual, 0, None), model.predict(late))
        candidates[objective] = model
    best = min(deviance, key=lambda k: deviance[k])
    scores = metrics.value_metrics(actual, candidates[best].predict(late))
    final = _train(fit_frame, target, encoder, booster_params(best, params, seed, n_jobs), rounds)
    return ValueModel(final, encoder, best), scores, deviance
