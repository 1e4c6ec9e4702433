"""The validation design: which cutoffs train, which validate, and how a short-horizon model answers for a
longer horizon. Pure functions of a history and dates; nothing here looks past the cutoff it is given.

- Models are trained on labels of `label_horizon_days` (13 weeks by default) at several month-end
  **origins** whose label windows end by the cutoff T, so every label is known at T.
- The latest origin validates (tuning, objective choice, calibration); the others train. The final
  models are refit on all origins.
- Model inputs are the feature set minus the features whose values grow with customer age (lifetime
  totals, tenure: `exclude_features` in training.yaml): models trained on younger snapshots would misread
  older customers. The BTYD columns look ahead over the target horizon H, in training and in scoring.
- A longer target horizon H is reached with **horizon maps** fitted at T over every customer known at T:
  the BG/NBD bridge gives each customer's P(no purchase in H) = P_model(no purchase in h) x
  P_bgnbd(silent in H) / P_bgnbd(silent in h) and value in H = value in h x E_bgnbd[purchases in H] /
  E_bgnbd[purchases in h]; a monotone map (logit-linear for churn, log-linear for value) is fitted from the
  model's h-horizon output to these bridged targets. The model keeps its own ranking; BG/NBD says how
  purchasing decays after h. The maps ship with the model, so one customer can be scored online.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from scipy.special import logit

from features.build import (
    btyd_fits,
    build_scoring_rows,
    build_training_set,
    monthly_cutoffs,
    resolve_columns,
)
from features.history import History
from features.sets import FeatureSet, get_feature_set
from features.value import REVENUE, ValueTarget
from training.models import P_EPS, VALUE_FLOOR


def choose_feature_set(history: History, name: str = "auto") -> FeatureSet:
    """`auto`: every family (core_v1) when the history has more than transactions, else rfm_v1."""
    if name != "auto":
        return get_feature_set(name)
    richer = any(t is not None for t in (history.customers, history.interactions, history.cancellations))
    return get_feature_set("core_v1" if richer else "rfm_v1")


def training_origins(
    history: History, cutoff: datetime, horizon_days: int, count: int, min_history_days: int
) -> list[datetime]:
    """The latest `count` month ends whose label window (c, c + horizon] ends by `cutoff`, plus, when none
    of them is, the latest month end a full label horizon before the last one (validation trains on it)."""
    origins = monthly_cutoffs(history.until(cutoff), horizon_days, min_history_days)
    if len(origins) < 2:
        raise ValueError(
            f"cutoff {cutoff:%Y-%m-%d}: only {len(origins)} training origin(s) with {horizon_days}-day "
            f"labels ending by the cutoff and {min_history_days} days of history before them; at least two "
            "are needed (one to train, a later one to validate): use a later cutoff or a shorter horizon"
        )
    chosen = origins[-count:]
    latest = chosen[-1]
    gap = [o for o in origins if o + timedelta(days=horizon_days) <= latest]
    if not gap:
        raise ValueError(
            f"cutoff {cutoff:%Y-%m-%d}: no training origin ends its {horizon_days}-day labels by the latest "
            f"origin {latest:%Y-%m-%d}, so nothing can be validated on it; use a later cutoff"
        )
    if gap[-1] not in chosen:  # validation needs one origin a full label horizon before the latest
        chosen = [gap[-1], *chosen]
    return chosen


def churn_design(
    history: History,
    cutoff: datetime,
    label_days: int,
    target_days: int,
    labels: str,
    count: int,
    min_history_days: int,
) -> tuple[int, list[datetime]] | None:
    """The churn model's own label horizon and origins when it learns the target horizon H directly:
    `labels` full, H longer than h, and the latest `count` month ends whose H-day labels end by `cutoff`
    (at least two) plus one a full H before the latest of them (it validates, as in `training_origins`).
    None: the churn model shares the h-day origins and is bridged to H (short labels, or a history too
    short for H-day labels, as CDNOW's classic protocol)."""
    if labels != "full" or target_days <= label_days:
        return None
    try:
        origins = training_origins(history, cutoff, target_days, count, min_history_days)
    except ValueError:
        return None  # not enough H-day labels before the cutoff: h-day labels and the bridge
    return target_days, origins


def model_columns(feature_set: FeatureSet, history: History, exclude: tuple[str, ...]) -> list[str]:
    """The set's columns this history can feed, minus the excluded (age-growing) ones."""
    return [c for c in resolve_columns(feature_set, history) if c not in exclude]


def churn_columns(
    feature_set: FeatureSet, history: History, exclude: tuple[str, ...], keep: tuple[str, ...]
) -> list[str]:
    """The columns of a churn model that learns H-day labels itself: the model columns plus the excluded
    ones in `keep`, in the set's order. The customer's age (days since the first purchase, since signup)
    says how long a silent customer has had to leave: it raised the churn AUC at H by about 0.004 on the
    synthetic histories (docs/training.md, "The churn AUC goal, session 11"); the value model keeps the
    exclusion."""
    return model_columns(feature_set, history, tuple(c for c in exclude if c not in keep))


def training_frame(
    history: History,
    cutoff: datetime,
    origins: list[datetime],
    horizon_days: int,
    target_days: int,
    feature_set: FeatureSet,
    value: ValueTarget = REVENUE,
) -> pd.DataFrame:
    """Features (BTYD looking `target_days` ahead) and `horizon_days` labels at each origin (future_value
    measuring `value`), from the history as known at `cutoff` only."""
    known = history.until(cutoff)
    table = build_training_set(
        known, origins, horizon_days, feature_set, btyd_horizon=target_days, value=value
    )
    return table.to_pandas()


def scoring_frames(
    history: History, cutoff: datetime, horizon_days: int, target_days: int, feature_set: FeatureSet
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Feature rows at `cutoff` with BTYD outputs for the target horizon (the model inputs) and, when the
    label horizon is shorter, for the label horizon (what the bridge needs)."""
    known = history.until(cutoff)
    table = build_scoring_rows(known, cutoff, feature_set, target_days)
    rows = table.to_pandas()
    rows.attrs["btyd_params"] = next(iter(btyd_fits(table).values()), None)  # what the artefact ships
    if target_days <= horizon_days:
        return rows, None
    return rows, build_scoring_rows(known, cutoff, feature_set, horizon_days).to_pandas()


def churn_horizon_map(
    p_short: np.ndarray, rows: pd.DataFrame, short: pd.DataFrame | None
) -> tuple[float, float]:
    """(a, b) with logit P(churn in H) = a + b logit P(churn in h), least squares on the BG/NBD-bridged
    probabilities of the customers at the cutoff. Identity when there is nothing to bridge."""
    if short is None:
        return 0.0, 1.0
    stay = np.minimum(_ratio(rows["btyd_p_no_purchase"], short["btyd_p_no_purchase"]), 1.0)
    x = logit(np.clip(p_short, P_EPS, 1 - P_EPS))
    return _line(x, logit(np.clip(p_short * stay, P_EPS, 1 - P_EPS)))


def value_horizon_map(
    v_short: np.ndarray, rows: pd.DataFrame, short: pd.DataFrame | None
) -> tuple[float, float]:
    """(a, b) with log value_H = a + b log value_h, least squares on the BG/NBD-bridged values of the
    customers at the cutoff with a positive prediction. Identity when there is nothing to bridge."""
    if short is None:
        return 0.0, 1.0
    more = np.maximum(_ratio(rows["btyd_expected_purchases"], short["btyd_expected_purchases"]), 1.0)
    keep = v_short > 0
    x = np.log(np.maximum(v_short[keep], VALUE_FLOOR))
    return _line(x, x + np.log(more[keep]))


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if x.size < 2 or np.ptp(x) == 0:
        return float(np.mean(y - x)) if x.size else 0.0, 1.0
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def _ratio(num: pd.Series, den: pd.Series) -> np.ndarray:
    n = num.to_numpy(dtype=np.float64, na_value=np.nan)
    d = den.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = n / d
    return np.where(np.isfinite(r), r, 1.0)
