"""The validation design: which cutoffs train, which validate, and how a short-horizon model answers for a
longer horizon. Pure functions of a history and dates; nothing here looks past the cutoff it is given.

- Models are trained on labels of `label_horizon_days` (13 weeks by default) at several month-end
  **origins** whose label windows end by the cutoff T, so every label is known at T.
- The latest origin validates (tuning, objective choice, calibration); the others train. The final
  models are refit on all origins.
- A longer horizon H is **bridged** with the BG/NBD model fitted at T: P(no purchase in H) =
  P_model(no purchase in h) x P_bgnbd(no purchase in H) / P_bgnbd(no purchase in h), the BG/NBD
  chance of staying silent for the rest of H given silence in the first h; value in H = value in h x
  E_bgnbd[purchases in H] / E_bgnbd[purchases in h]. The models rank and set the level for the period the
  data can label; BG/NBD only says how purchasing decays after it (docs/training.md).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from features.build import build_scoring_rows, build_training_set, monthly_cutoffs
from features.history import History
from features.sets import FeatureSet, get_feature_set


def choose_feature_set(history: History, name: str = "auto") -> FeatureSet:
    """`auto`: every family (core_v1) when the history has more than transactions, else rfm_v1."""
    if name != "auto":
        return get_feature_set(name)
    richer = any(t is not None for t in (history.customers, history.interactions, history.cancellations))
    return get_feature_set("core_v1" if richer else "rfm_v1")


def training_origins(
    history: History, cutoff: datetime, horizon_days: int, count: int, min_history_days: int
) -> list[datetime]:
    """The latest `count` month ends whose label window (c, c + horizon] ends by `cutoff`."""
    origins = monthly_cutoffs(history.until(cutoff), horizon_days, min_history_days)
    if len(origins) < 2:
        raise ValueError(
            f"cutoff {cutoff:%Y-%m-%d}: only {len(origins)} training origin(s) with {horizon_days}-day "
            f"labels ending by the cutoff and {min_history_days} days of history before them; at least two "
            "are needed (one to train, a later one to validate): use a later cutoff or a shorter horizon"
        )
    return origins[-count:]


def training_frame(
    history: History, cutoff: datetime, origins: list[datetime], horizon_days: int, feature_set: FeatureSet
) -> pd.DataFrame:
    """Features and labels at each origin, from the history as known at `cutoff` only."""
    known = history.until(cutoff)
    return build_training_set(known, origins, horizon_days, feature_set).to_pandas()


def scoring_frames(
    history: History, cutoff: datetime, horizon_days: int, target_days: int, feature_set: FeatureSet
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Feature rows at `cutoff` with BTYD outputs for the label horizon (what the models saw in training)
    and, when the target horizon is longer, for the target horizon (what the bridge needs)."""
    known = history.until(cutoff)
    rows = build_scoring_rows(known, cutoff, feature_set, horizon_days).to_pandas()
    if target_days <= horizon_days:
        return rows, None
    return rows, build_scoring_rows(known, cutoff, feature_set, target_days).to_pandas()


def bridge(
    p_churn: np.ndarray, value: np.ndarray, short: pd.DataFrame, long: pd.DataFrame | None
) -> tuple[np.ndarray, np.ndarray]:
    """Stretch h-horizon churn probabilities and values to the target horizon with BG/NBD (see module doc).
    Customers without BTYD outputs keep their h-horizon predictions (no information to stretch with)."""
    if long is None:
        return p_churn, value
    stay = _ratio(long["btyd_p_no_purchase"], short["btyd_p_no_purchase"])
    more = _ratio(long["btyd_expected_purchases"], short["btyd_expected_purchases"])
    return np.clip(p_churn * np.minimum(stay, 1.0), 0.0, 1.0), value * np.maximum(more, 1.0)


def _ratio(num: pd.Series, den: pd.Series) -> np.ndarray:
    n = num.to_numpy(dtype=np.float64, na_value=np.nan)
    d = den.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = n / d
    return np.where(np.isfinite(r), r, 1.0)
