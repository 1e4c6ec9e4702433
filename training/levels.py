"""Calibrated levels: the churn and value levels recalibrated on the latest complete window.

The models rank well but their levels drift: they learn 13-week labels at origins before T and reach H with
a BG/NBD bridge that knows no season and no change in the customer base, so an H-window that holds a peak
(or a trough) the origins never saw is missed by the whole aggregate. At training time, using only what was
known at T:

- **The window.** A month end o whose H-day labels (o, o + H] end by T. With `window: seasonal` (default),
  the latest such o in T's calendar month (T minus whole years), so the window covers the same part of the
  year as (T, T + H] — the seasonal level learned from an earlier year; none when the history holds no
  such year. `seasonal_or_latest` then falls back to the latest complete window, `latest` always takes it
  (a window of another season: on CDNOW it carried the Christmas quarter's level into the next spring,
  docs/training.md), `none` switches recalibration off.
- **The fit.** The artefact, as fitted at T, scores the customers eligible at o (features at o, BTYD fitted
  at o, as at any origin); against what they did in (o, o + H]:
  value_slope = the slope of log realised on log predicted mean value over ten equal-count bins, and
  value_factor = realised total / total of predicted ** value_slope (a pure level, slope 1, when that
  factor would be out of bounds, or when the value model learned H-day labels itself: the window is then
  one of its training origins, and a slope there measures the booster's fit, not a calibration; the
  factor still carries the season, which the booster averages over its origins); churn_shift = a with
  mean(sigmoid(logit p + a)) = the realised churn rate over the purchase-silence customers; the contract
  model's level (training.contract) over the customers under contract, or, when the churn booster scores
  them (it learned their H-day cancellations: `contract.scorer: auto`), a shift of their own fitted the
  same way (`contract_shift`) on their rows pooled over the latest `contract_windows` complete windows
  (`contract_origins`), not the levels' window alone: a cancellation rate has no purchase season, and one
  window's few thousand subscribers are noisy (on the synthetic benchmark one window's rate sat 8 % above
  the next year's and the subscribers landed 13 % over; docs/training.md).
- **Applied** after the models and the horizon maps, in the artefact, so batch, online and Spark scoring all
  see the same numbers. Rankings are unchanged (monotone maps); only levels move.

Pure functions; the fitted numbers ship in the scoring artefact (training.artefact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logit

from features.build import monthly_cutoffs
from features.history import History
from training.models import P_EPS

SHIFT_BOUNDS = (-3.0, 3.0)  # logit shift: beyond these the window is unlike T
FACTOR_BOUNDS = (0.25, 4.0)  # value factor, likewise
SLOPE_BOUNDS = (0.5, 1.5)  # value slope (log scale), likewise
WINDOWS = ("seasonal", "seasonal_or_latest", "latest", "none")


@dataclass
class Levels:
    """A logit shift on P(churn) of the purchase-silence customers and a factor on every predicted value."""

    churn_shift: float = 0.0
    value_factor: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)  # the window, customers, realised and predicted
    value_slope: float = 1.0  # value -> value_factor * value ** value_slope (1: a pure level)
    # customers under contract scored by the churn booster (no hazard model: training.contract `scorer`)
    # get their own shift; contract_mode says who they are (contractual | mixed). None: one shift for all
    contract_shift: float | None = None
    contract_mode: str | None = None

    def churn(self, p: np.ndarray, contract: np.ndarray | None = None) -> np.ndarray:
        """The shifted P(churn); `contract` (a mask) marks the rows that take `contract_shift` when set."""
        shift: float | np.ndarray = self.churn_shift
        if self.contract_shift is not None and contract is not None:
            shift = np.where(contract, self.contract_shift, self.churn_shift)
        if np.all(np.asarray(shift) == 0.0):
            return np.asarray(p, dtype=np.float64)
        return np.asarray(expit(logit(np.clip(p, P_EPS, 1 - P_EPS)) + shift))

    def value(self, v: np.ndarray) -> np.ndarray:
        v = np.maximum(np.asarray(v, dtype=np.float64), 0.0)
        if self.value_slope == 1.0:
            return v * self.value_factor
        return np.asarray(self.value_factor * np.power(v, self.value_slope))

    def to_dict(self) -> dict[str, Any]:
        return {
            "churn_shift": self.churn_shift,
            "value_factor": self.value_factor,
            "value_slope": self.value_slope,
            "info": self.info,
            **(
                {"contract_shift": self.contract_shift, "contract_mode": self.contract_mode}
                if self.contract_shift is not None
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Levels:
        return cls(
            float(spec["churn_shift"]),
            float(spec["value_factor"]),
            dict(spec.get("info", {})),
            float(spec.get("value_slope", 1.0)),
            None if spec.get("contract_shift") is None else float(spec["contract_shift"]),
            spec.get("contract_mode"),
        )


def calibration_origin(
    history: History, cutoff: datetime, horizon_days: int, min_history_days: int, window: str
) -> datetime | None:
    """The month end whose H-day window recalibrates the levels (module doc), or None when no window is
    complete by `cutoff` (or `window` is 'none')."""
    if window not in WINDOWS:
        raise ValueError(f"levels window {window!r}: use one of {', '.join(WINDOWS)}")
    if window == "none":
        return None
    candidates = monthly_cutoffs(history.until(cutoff), horizon_days, min_history_days)
    if not candidates:
        return None
    if window in ("seasonal", "seasonal_or_latest"):
        same = [o for o in candidates if o.month == cutoff.month]
        if same:
            return same[-1]
        if window == "seasonal":
            return None
    return candidates[-1]


def contract_origins(
    history: History, cutoff: datetime, horizon_days: int, min_history_days: int, count: int, origin: datetime
) -> list[datetime]:
    """The windows the subscribers' own shift is pooled over (module doc), oldest first: the levels' window
    `origin` and the latest `count` month ends whose H-day windows are complete by `cutoff`; `count` 1: the
    levels' window alone (as before `contract_windows`)."""
    if count < 1:
        raise ValueError(f"levels contract_windows {count}: use 1 or more")
    if count == 1:
        return [origin]
    latest = monthly_cutoffs(history.until(cutoff), horizon_days, min_history_days)[-count:]
    return sorted({*latest, origin})


def fit_churn_shift(p: np.ndarray, churned: np.ndarray) -> float:
    """a with mean(sigmoid(logit p + a)) = mean(churned), within SHIFT_BOUNDS; 0 with no rows."""
    p = np.clip(np.asarray(p, dtype=np.float64), P_EPS, 1 - P_EPS)
    if not p.size:
        return 0.0
    rate = float(np.mean(churned))
    x = logit(p)
    lo, hi = SHIFT_BOUNDS

    def gap(a: float) -> float:
        return float(np.mean(expit(x + a))) - rate

    if gap(lo) >= 0:
        return lo
    if gap(hi) <= 0:
        return hi
    return float(brentq(gap, lo, hi, xtol=1e-8))


def fit_value_factor(predicted: np.ndarray, actual: np.ndarray, slope: float = 1.0) -> float:
    """Realised total over the total of predicted ** slope, within FACTOR_BOUNDS; 1 when nothing was
    predicted."""
    total = float(np.sum(np.power(np.maximum(np.asarray(predicted, dtype=np.float64), 0.0), slope)))
    if total <= 0 or not np.isfinite(total):
        return 1.0
    lo, hi = FACTOR_BOUNDS
    return float(np.clip(float(np.sum(actual)) / total, lo, hi))


def fit_value_level(predicted: np.ndarray, actual: np.ndarray, slope: bool = True) -> tuple[float, float]:
    """(value_factor, value_slope): the slope over bins (`slope` false: 1, a pure level), then the factor
    for it. A slope whose factor would fall outside FACTOR_BOUNDS is dropped for a pure level: a clipped
    factor would no longer match the window's total, and the aggregate could be off by the power of the
    slope (seen: slope 1.38, factor clipped at 0.25, the window's total predicted 4.5x too high)."""
    b = fit_value_slope(predicted, actual) if slope else 1.0
    if b != 1.0:
        total = float(np.sum(np.power(np.maximum(np.asarray(predicted, dtype=np.float64), 0.0), b)))
        lo, hi = FACTOR_BOUNDS
        if not (total > 0 and np.isfinite(total) and lo <= float(np.sum(actual)) / total <= hi):
            b = 1.0
    return fit_value_factor(predicted, actual, b), b


def fit_value_slope(predicted: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """b in log(mean actual) = a + b log(mean predicted) over equal-count bins of predicted value (bins
    with a positive mean of both), within SLOPE_BOUNDS; 1 with fewer than three such bins. A slope below 1
    says the model spreads its values too far (the low bins over-, the top bins under-predicted)."""
    pred = np.asarray(predicted, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    order = np.argsort(pred, kind="stable")
    parts = [p for p in np.array_split(order, bins) if p.size]
    mp = np.array([pred[p].mean() for p in parts])
    ma = np.array([act[p].mean() for p in parts])
    keep = (mp > 0) & (ma > 0)
    if keep.sum() < 3 or np.ptp(np.log(mp[keep])) == 0:
        return 1.0
    slope = float(np.polyfit(np.log(mp[keep]), np.log(ma[keep]), 1)[0])
    lo, hi = SLOPE_BOUNDS
    return float(np.clip(slope, lo, hi))
