"""Time to churn: P(churned by t days) for t = 30, 60, 90, 180 and the expected days to churn, from the
model's P(churn over H) and the customer's row. Pure functions; the spec ships in the scoring artefact
(training.artefact), so serving applies it and never re-implements it.

What "churned by t" means follows the history's churn definition (features.build.labels_expr):

- **Purchase silence** (non-contractual): churned over H = no purchase in (T, T + H]. The customer *lapses*
  on the day their silence reaches H days; churned by T + t = lapsed by T + t and not back by T + H, i.e. no
  purchase in (T + t - H, T + H]. With R the days since the last purchase at T (`recency_days`), that is
  "silent over (T, T + H] and R >= H - t", so

      P(churned by t) = P(H) * [R >= H - t],   expected days to churn (given churn by H) = max(H - R, 0).

  Exact, observable, non-decreasing in t and equal to P(H) at H; nothing here is fitted, because the label
  says nothing about *when* inside (T, T + H] a silent customer left: a smooth survival shape below H would
  claim a timing no later data can check (docs/training.md, "Time to churn").
- **Cancellation** (contractual, and subscribers of a mixed history): churned by t = a cancellation in
  (T, T + t]. Customers the contract model scores get its own monthly hazards' curve, which the scoring
  artefact substitutes for theirs (training.contract `ContractModel.curve`, training.artefact
  `churn_curve`). Here, for an artefact with a curve but no contract model: a constant hazard over the
  horizon, anchored at H: P(t) = 1 - (1 - P(H)) ** (t / H), and the expected days to churn given churn by H
  is 1/lambda - H (1 - P) / P with lambda = -ln(1 - P) / H (docs/training.md, "Time to churn").

Horizons beyond H are not answered (null): the model says nothing past its own horizon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

HORIZONS = (30, 60, 90, 180)  # days: the curve's points, each a column of the score table
KINDS = ("non_contractual", "contractual", "mixed")
CONTRACT_COLUMN = "attr_is_subscriber"  # mixed: rows whose attribute is true cancel (features.build)
_TRUE = frozenset({"true", "1", "yes", "y", "t", "1.0"})


@dataclass(frozen=True)
class CurveSpec:
    """How the scoring artefact turns P(churn over H) into a curve: the churn definition of its history."""

    churn: str  # non_contractual | contractual | mixed

    def __post_init__(self) -> None:
        if self.churn not in KINDS:
            raise ValueError(f"curve: churn {self.churn!r} is not one of {', '.join(KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"churn": self.churn, "horizons": list(HORIZONS)}

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> CurveSpec:
        horizons = tuple(spec.get("horizons", HORIZONS))
        if horizons != HORIZONS:
            raise ValueError(f"curve: horizons {list(horizons)}, this Diamond answers {list(HORIZONS)}")
        return cls(str(spec["churn"]))

    def contract_rows(self, rows: pd.DataFrame) -> np.ndarray:
        """Which rows churn by cancellation (the rest by purchase silence)."""
        n = len(rows)
        if self.churn == "contractual":
            return np.ones(n, dtype=bool)
        if self.churn == "non_contractual" or CONTRACT_COLUMN not in rows:
            return np.zeros(n, dtype=bool)
        values = rows[CONTRACT_COLUMN].astype("object").tolist()
        return np.array([v is not None and str(v).strip().lower() in _TRUE for v in values], dtype=bool)

    def apply(
        self, probability: np.ndarray, rows: pd.DataFrame, horizon_days: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, len(HORIZONS)) P(churned by t) and the expected days to churn of each row (NaN where
        undefined) for the model's P(churn over H) of `rows`."""
        p = np.asarray(probability, dtype=np.float64)
        recency = (
            rows["recency_days"].to_numpy(dtype=np.float64, na_value=np.nan)
            if "recency_days" in rows
            else np.full(len(p), np.nan)
        )
        contract = self.contract_rows(rows)
        silent_p, silent_days = lapse_curve(p, recency, horizon_days)
        hazard_p, hazard_days = hazard_curve(p, horizon_days)
        return (
            np.where(contract[:, None], hazard_p, silent_p),
            np.where(contract, hazard_days, silent_days),
        )


def lapse_curve(
    probability: np.ndarray, recency_days: np.ndarray, horizon_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """Purchase silence: P(churned by t) = P(H) [R >= H - t] for t in HORIZONS (NaN past H or without a
    purchase), and the days to the lapse, max(H - R, 0), where P(H) > 0 and R is known."""
    p = np.asarray(probability, dtype=np.float64)
    r = np.asarray(recency_days, dtype=np.float64)
    t = np.asarray(HORIZONS, dtype=np.float64)[None, :]
    lapsed = r[:, None] >= horizon_days - t
    curve = np.where(lapsed, p[:, None], 0.0)
    curve = np.where(np.isnan(r)[:, None] | (t > horizon_days), np.nan, curve)
    days = np.where(np.isnan(r) | ~(p > 0), np.nan, np.maximum(horizon_days - r, 0.0))
    return curve, days


def hazard_curve(probability: np.ndarray, horizon_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Cancellation at a constant hazard over H: P(t) = 1 - (1 - P(H)) ** (t / H) for t in HORIZONS (NaN past
    H), and E[days to churn | churn by H] = 1/lambda - H (1 - P)/P, lambda = -ln(1 - P)/H (NaN at P = 0)."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    t = np.asarray(HORIZONS, dtype=np.float64)[None, :]
    log_stay = np.log1p(-np.minimum(p, 1.0 - 1e-15))[:, None]  # ln(1 - P), finite
    curve = -np.expm1(log_stay * (t / horizon_days))
    curve = np.where(t > horizon_days, np.nan, curve)
    x = -log_stay[:, 0]  # lambda H
    with np.errstate(all="ignore"):
        share = 1.0 / x - 1.0 / np.expm1(x)  # E/H = 1/x - 1/(e^x - 1): both ~1/x when x is small
    share = np.where(x < 1e-4, 0.5 - x / 12.0, share)  # its series there (error < 1e-13)
    days = np.where(p > 0, np.clip(horizon_days * share, 0.0, horizon_days), np.nan)
    return curve, days
