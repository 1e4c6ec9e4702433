"""Value tiers as training learns them: cut points on predicted value that ship with the model, and the tier
of a value. Serving keeps tiers from flapping between runs (serving.hysteresis) and stores them
(serving.tier_store); the names and cut points always come from here, through the artefact.

- `tiers:` in training.yaml gives each tier (best first) a share of customers by predicted value; the last
  tier, share null, takes the rest. `tier_thresholds` turns the shares into cut points on the predictions at
  the cutoff T.
- `assign_tiers` gives a value the first (best) tier whose cut point it reaches: the model's raw tier.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from training.models import VALUE_FLOOR

DEFAULT_SHARES: dict[str, float | None] = {"diamond": 0.05, "gold": 0.15, "silver": 0.30, "bronze": None}
DEFAULT_TIERS = tuple(DEFAULT_SHARES)  # tier names, best first, when no model gives them


def tier_thresholds(values: np.ndarray, shares: Mapping[str, float | None]) -> dict[str, float]:
    """Cut points on predicted value: each tier (best first) takes the next `share` of customers; the
    last tier in `shares` with share None/0 takes the rest (threshold 0)."""
    out: dict[str, float] = {}
    top = 0.0
    v = np.asarray(values, dtype=np.float64)
    for name, share in shares.items():
        top += share or 0.0
        out[name] = max(float(np.quantile(v, 1.0 - top)), VALUE_FLOOR) if share and v.size else 0.0
    return out


def assign_tiers(values: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """The first (best) tier whose threshold the value reaches; the last tier catches the rest."""
    names = list(thresholds)
    out = np.full(len(values), names[-1], dtype=object)
    for name in reversed(names[:-1]):
        out[np.asarray(values) >= thresholds[name]] = name
    return out
