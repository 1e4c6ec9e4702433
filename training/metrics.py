"""Model-quality metrics: pure functions of (actual, predicted) arrays.

Churn: ROC-AUC, Brier score, log loss. Value: normalized Gini (Wang, Liu & Miao 2019: the Gini of actual
spend ordered by prediction over the Gini of actual spend ordered by itself), aggregate error (total
predicted over total actual, minus one) and decile MAPE (customers in ten equal bins by prediction; the
mean over bins of |mean predicted - mean actual| / mean actual).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def _arrays(actual: object, predicted: object) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if a.shape != p.shape or a.ndim != 1:
        raise ValueError(f"actual and predicted must be 1-d and the same length, got {a.shape} and {p.shape}")
    if not a.size:
        raise ValueError("no rows to score")
    if np.isnan(p).any():
        raise ValueError(f"{int(np.isnan(p).sum())} predictions are NaN")
    return a, p


def roc_auc(actual: object, predicted: object) -> float:
    a, p = _arrays(actual, predicted)
    return float(roc_auc_score(a, p))


def brier(actual: object, predicted: object) -> float:
    a, p = _arrays(actual, predicted)
    return float(np.mean((p - a) ** 2))


def logloss(actual: object, predicted: object) -> float:
    a, p = _arrays(actual, predicted)
    return float(log_loss(a, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))


def _gini(actual: np.ndarray, order_by: np.ndarray) -> float:
    """Gini of `actual` accumulated in descending order of `order_by` (ties keep row order)."""
    order = np.argsort(-order_by, kind="stable")
    cum = np.cumsum(actual[order]) / actual.sum()
    n = actual.size
    return float(cum.sum() / n - (n + 1) / (2 * n))


def normalized_gini(actual: object, predicted: object) -> float:
    a, p = _arrays(actual, predicted)
    if a.sum() == 0:
        raise ValueError("normalized Gini is undefined when every actual value is zero")
    return _gini(a, p) / _gini(a, a)


def aggregate_error(actual: object, predicted: object) -> float:
    a, p = _arrays(actual, predicted)
    return float(p.sum() / a.sum() - 1.0)


def decile_table(actual: object, predicted: object, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted and actual per bin of equal size by prediction, highest first."""
    a, p = _arrays(actual, predicted)
    order = np.argsort(-p, kind="stable")
    return [
        {
            "bin": i + 1,
            "rows": int(idx.size),
            "mean_predicted": float(p[idx].mean()),
            "mean_actual": float(a[idx].mean()),
        }
        for i, idx in enumerate(np.array_split(order, bins))
    ]


def decile_mape(actual: object, predicted: object, bins: int = 10) -> float:
    table = decile_table(actual, predicted, bins)
    errors = [
        abs(d["mean_predicted"] - d["mean_actual"]) / d["mean_actual"] for d in table if d["mean_actual"]
    ]
    if not errors:
        raise ValueError("decile MAPE is undefined when every bin's actual mean is zero")
    return float(np.mean(errors))


def churn_metrics(churned: object, probability: object) -> dict[str, float]:
    return {
        "churn_auc": roc_auc(churned, probability),
        "churn_brier": brier(churned, probability),
        "churn_logloss": logloss(churned, probability),
        "churn_rate": float(np.mean(np.asarray(churned, dtype=np.float64))),
        "churn_mean_probability": float(np.mean(np.asarray(probability, dtype=np.float64))),
    }


def value_metrics(actual: object, predicted: object) -> dict[str, float]:
    return {
        "value_gini": normalized_gini(actual, predicted),
        "value_aggregate_error": aggregate_error(actual, predicted),
        "value_decile_mape": decile_mape(actual, predicted),
        "value_total_actual": float(np.sum(np.asarray(actual, dtype=np.float64))),
        "value_total_predicted": float(np.sum(np.asarray(predicted, dtype=np.float64))),
    }


def poisson_deviance(actual: object, predicted: object) -> float:
    """Mean Poisson deviance of non-negative targets: a proper score for predicted means of spend,
    used to choose the value objective (predictions are floored at 1e-9)."""
    a, p = _arrays(actual, predicted)
    if (a < 0).any():
        raise ValueError("Poisson deviance needs non-negative actual values")
    p = np.maximum(p, 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(a > 0, a * np.log(a / p), 0.0)
    return float(np.mean(2.0 * (term - (a - p))))
