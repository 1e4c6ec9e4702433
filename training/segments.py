"""Quality by segment, and the parity check: is the model as good and as calibrated for every tier, contract
type and categorical attribute as for the whole window?

Pure functions of a window's rows, labels and predictions. A window's customers are split by:

- **tier**: the value tier of each predicted value, with the cut points learned on the window's own
  predictions from training.yaml's shares (at a backtest's cutoff these are the model's own cut points);
- **contract**: contractual (the `is_subscriber` attribute true) or not, in a `churn: mixed` history;
- **each categorical attribute** (`attr_*` columns of text or booleans): its `max_levels` largest levels,
  the rest pooled as "other", a missing value as "missing".

Each segment gets its size, churn rate, mean predicted probability and their gap (calibration in the large),
churn ROC-AUC (None with a single class) and Brier score, mean realised and predicted value and the value
error (predicted total over realised total, minus one; None when nothing was spent). A segment of at least
`parity.min_customers` is flagged when its AUC is more than `max_auc_drop` below the window's, its calibration
gap exceeds `max_calibration_gap`, or its value error exceeds `max_value_error` (training.yaml `parity:`).
A segment's AUC is usually below the whole window's (its customers are more alike), so `max_auc_drop` is a
margin, not zero; tiers are cut on the predicted value itself, which ranks churn too, so their AUC is not
judged at all (on CDNOW every tier's AUC is 0.07 to 0.27 below the window's), only their levels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from features.build import CONTRACT_ATTRIBUTE
from training import metrics
from training.config import ParityConfig
from training.tiers import assign_tiers, tier_thresholds

ALL, OTHER, MISSING = "all", "other", "missing"
TRUE = ("true", "1", "yes", "y", "t")  # the truthy spellings the labels accept (features.build)
METRICS = ("customers", "churn_auc", "calibration_gap", "churn_brier", "value_error")  # logged to MLflow


def segment_labels(
    rows: pd.DataFrame,
    predicted_value: np.ndarray,
    shares: Mapping[str, float | None],
    churn: str,
    max_levels: int,
) -> dict[str, np.ndarray]:
    """The segment of every row, by segmentation name: tier, contract (mixed histories), then each
    categorical attribute (without its attr_ prefix)."""
    value = np.asarray(predicted_value, dtype=np.float64)
    out = {"tier": assign_tiers(value, tier_thresholds(value, shares)).astype(str)}
    contract = f"attr_{CONTRACT_ATTRIBUTE}"
    if churn == "mixed" and contract in rows.columns:
        out["contract"] = np.where(_truthy(rows[contract]), "contractual", "non_contractual")
    for column in rows.columns:
        if column.startswith("attr_") and _categorical(rows[column]):
            out[column.removeprefix("attr_")] = _levels(rows[column], max_levels)
    return out


def segment_quality(
    segments: Mapping[str, np.ndarray],
    churned: object,
    probability: object,
    actual_value: object,
    predicted_value: object,
    parity: ParityConfig,
    order: Mapping[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """One row for the whole window (by "all"), then one per segment: its metrics and its parity flags.
    Segments come in `order[by]` when given (tiers best first), else largest first."""
    y = np.asarray(churned, dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    a = np.asarray(actual_value, dtype=np.float64)
    v = np.asarray(predicted_value, dtype=np.float64)
    whole = _quality(y, p, a, v)
    out = [{"by": ALL, "segment": ALL, **whole, "flags": []}]
    for by, labels in segments.items():
        labels = np.asarray(labels)
        names, counts = np.unique(labels, return_counts=True)
        ranked = [str(n) for _, n in sorted(zip(-counts, names.tolist(), strict=True))]
        if order and by in order:
            ranked = [n for n in order[by] if n in ranked] + [n for n in ranked if n not in order[by]]
        for name in ranked:
            keep = labels == name
            q = _quality(y[keep], p[keep], a[keep], v[keep])
            out.append({"by": by, "segment": name, **q, "flags": flags(q, whole, parity, by != "tier")})
    return out


def flags(
    q: Mapping[str, Any], whole: Mapping[str, Any], parity: ParityConfig, judge_auc: bool = True
) -> list[str]:
    """Why a segment falls outside the parity margins (empty: it does not, or it is too small to say).
    `judge_auc` False: the segments are cut on the model's own predictions (tiers), so their customers'
    scores span a narrow range and their AUC is low by construction; only their levels are judged."""
    if q["customers"] < parity.min_customers:
        return []
    out = []
    if judge_auc and q["churn_auc"] is not None and whole["churn_auc"] is not None:
        drop = whole["churn_auc"] - q["churn_auc"]
        if drop > parity.max_auc_drop:
            out.append(
                f"churn AUC {q['churn_auc']:.3f} is {drop:.3f} below the window's {whole['churn_auc']:.3f}"
            )
    if abs(q["calibration_gap"]) > parity.max_calibration_gap:
        out.append(
            f"mean P(churn) {q['mean_probability']:.3f} against a churn rate of {q['churn_rate']:.3f} "
            f"(gap {q['calibration_gap']:+.3f})"
        )
    if q["value_error"] is not None and abs(q["value_error"]) > parity.max_value_error:
        out.append(f"predicted value {q['value_error']:+.1%} off the realised total")
    return out


def flagged(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The segments with at least one parity flag."""
    return [r for r in table if r["flags"]]


def mlflow_metrics(table: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    """The table as MLflow metrics `<prefix>segment/<by>/<segment>/<metric>` (names made safe), plus
    `<prefix>parity_flags`, the number of flagged segments."""
    out = {f"{prefix}parity_flags": float(len(flagged(table)))}
    for r in table:
        if r["by"] == ALL:
            continue
        key = f"{prefix}segment/{_safe(r['by'])}/{_safe(r['segment'])}"
        out.update({f"{key}/{m}": float(r[m]) for m in METRICS if r[m] is not None})
    return out


def _quality(y: np.ndarray, p: np.ndarray, a: np.ndarray, v: np.ndarray) -> dict[str, Any]:
    rate, mean_p = float(y.mean()), float(p.mean())
    both = 0 < y.sum() < y.size
    total = float(a.sum())
    return {
        "customers": int(y.size),
        "churn_rate": rate,
        "mean_probability": mean_p,
        "calibration_gap": mean_p - rate,
        "churn_auc": metrics.roc_auc(y, p) if both else None,
        "churn_brier": metrics.brier(y, p),
        "actual_value": float(a.mean()),
        "predicted_value": float(v.mean()),
        "value_error": float(v.sum()) / total - 1.0 if total > 0 else None,
    }


def _categorical(column: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _levels(column: pd.Series, max_levels: int) -> np.ndarray:
    """Text labels: missing values as "missing", all but the `max_levels` largest levels as "other"."""
    text = column.astype("object").where(column.notna(), MISSING).astype(str)
    keep = set(text.value_counts(sort=True).index[:max_levels])
    return np.where(text.isin(keep), text, OTHER)


def _truthy(column: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(column):
        return column.fillna(False).to_numpy(dtype=bool)
    return column.astype("object").astype(str).str.lower().isin(TRUE).to_numpy()


def _safe(name: str) -> str:
    """A segment name MLflow accepts in a metric key."""
    return re.sub(r"[^\w\-. ]", "_", name) or "_"
