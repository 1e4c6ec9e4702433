"""A small cold-start churn model: P(churn) of a customer with one purchase day, from what that one day and
the customer's age say, fitted at training time and shipped in the scoring artefact (training.artefact).

Why a separate model: a customer with one purchase day has no inter-purchase time, frequency or trend; the
main booster sees their rows among everyone's. This logistic regression is fitted on the one-purchase rows
of the training origins only (labels over h, known at T), on four inputs:

- the logit of BG/NBD's P(no purchase over H) (`btyd_p_no_purchase`): for x = 0 a smooth function of the
  customer's age with the population's parameters, which carries the model to ages the origins did not see;
- the days since that purchase (`recency_days`);
- log(1 + the first purchase's amount) (`monetary_first`) and log(1 + the purchases that day)
  (`n_purchases`).

Inputs absent from a history are left out; rows with a missing input get the training mean. Its P(churn
over h) goes through the churn model's horizon map to H, like the booster's. Measured against the population
mean on CDNOW (bench/bench_curve.py, docs/training.md "Cold start").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from training.models import P_EPS

INPUTS = ("btyd_p_no_purchase", "recency_days", "monetary_first", "n_purchases")
MIN_ROWS = 200  # fewer one-purchase training rows than this: no cold-start model


@dataclass(frozen=True)
class ColdStartModel:
    """logit P(churn over h) = intercept + sum coef * (input - mean) / scale, then the churn horizon map."""

    inputs: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    horizon_map: tuple[float, float] = (0.0, 1.0)  # logit p_H = a + b logit p_h (the churn model's)

    def predict_label_horizon(self, rows: pd.DataFrame) -> np.ndarray:
        x = (_design(rows, self.inputs) - np.asarray(self.mean)) / np.asarray(self.scale)
        x = np.where(np.isnan(x), 0.0, x)  # a missing input: the training mean
        return np.asarray(expit(self.intercept + x @ np.asarray(self.coef)), dtype=np.float64)

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        """P(churn over H) of every row (meaningful for one-purchase customers, whom it was fitted on)."""
        a, b = self.horizon_map
        p_h = np.clip(self.predict_label_horizon(rows), P_EPS, 1 - P_EPS)
        return np.asarray(expit(a + b * logit(p_h)), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": list(self.inputs),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "horizon_map": list(self.horizon_map),
        }

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> ColdStartModel:
        return cls(
            tuple(spec["inputs"]),
            tuple(float(v) for v in spec["mean"]),
            tuple(float(v) for v in spec["scale"]),
            tuple(float(v) for v in spec["coef"]),
            float(spec["intercept"]),
            (float(spec["horizon_map"][0]), float(spec["horizon_map"][1])),
        )


def one_purchase(rows: pd.DataFrame) -> np.ndarray:
    """Rows of customers with exactly one purchase day."""
    if "frequency_days" not in rows:
        return np.zeros(len(rows), dtype=bool)
    return np.asarray(rows["frequency_days"].to_numpy(dtype=np.float64, na_value=np.nan) == 1, dtype=bool)


def fit_cold_start(frame: pd.DataFrame, horizon_map: tuple[float, float]) -> ColdStartModel | None:
    """Fit on the one-purchase rows of the training origins (`frame` with `churned` over h); None when the
    history has fewer than MIN_ROWS of them, no usable input, or one label only."""
    inputs = tuple(c for c in INPUTS if c in frame)
    rows = frame[one_purchase(frame)]
    if not inputs or len(rows) < MIN_ROWS or rows["churned"].nunique() < 2:
        return None
    x = _design(rows, inputs)
    mean = np.nanmean(x, axis=0)
    scale = np.nanstd(x, axis=0)
    keep = np.isfinite(mean) & (scale > 0)
    if not keep.any():
        return None
    inputs = tuple(c for c, k in zip(inputs, keep, strict=True) if k)
    x, mean, scale = x[:, keep], mean[keep], scale[keep]
    z = np.where(np.isnan(x), 0.0, (x - mean) / scale)
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(z, rows["churned"].to_numpy())
    return ColdStartModel(
        inputs,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(float(v) for v in lr.coef_[0]),
        float(lr.intercept_[0]),
        horizon_map,
    )


def _design(rows: pd.DataFrame, inputs: tuple[str, ...]) -> np.ndarray:
    """The transformed inputs as a float matrix (NaN: missing)."""
    columns = []
    for name in inputs:
        v = rows[name].to_numpy(dtype=np.float64, na_value=np.nan)
        if name == "btyd_p_no_purchase":
            v = logit(np.clip(v, P_EPS, 1 - P_EPS))
        elif name in ("monetary_first", "n_purchases"):
            v = np.log1p(np.maximum(v, 0.0))
        columns.append(v)
    return np.column_stack(columns) if columns else np.zeros((len(rows), 0))
