"""Baselines every model is compared with on the same rows: an RFM rank and BG/NBD + Gamma-Gamma.

- RFM rank: the mean of three percentile ranks, recency (longer = riskier), purchase days and spend (fewer,
  less = riskier). A ranking, not a probability, so it has an AUC and a Gini but no Brier score. Its value
  forecast is the customer's own run rate: spend so far per day of tenure x the horizon. The churn model
  also uses the rank as a stacking input (training.models), so the rank is a fitted object: its reference
  population ships with the model and one customer can be ranked online against it.
- BG/NBD + Gamma-Gamma, fitted at the cutoff on data at or before it (features.btyd): P(no purchase in
  the horizon) and expected purchases x expected spend per purchase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

RFM_AXES = {"recency_days": 1.0, "frequency_days": -1.0, "monetary_sum": -1.0}  # +1: larger is riskier
_FILL = {"recency_days": np.inf, "frequency_days": 0.0, "monetary_sum": 0.0}  # customers without purchases
MAX_REFERENCE = 10_001  # reference values kept per axis (quantiles beyond this many customers)


@dataclass
class RfmRank:
    """Percentile ranks of recency, frequency and spend against a reference population, averaged."""

    references: dict[str, np.ndarray]  # sorted "riskiness" values per axis

    @classmethod
    def fit(cls, rows: pd.DataFrame) -> RfmRank:
        refs = {}
        for axis in RFM_AXES:
            v = np.sort(_risk(rows, axis))
            if len(v) > MAX_REFERENCE:
                v = np.quantile(v, np.linspace(0.0, 1.0, MAX_REFERENCE), method="inverted_cdf")
            refs[axis] = v
        return cls(refs)

    def axes(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each axis's percentile of riskiness in [0, 1]; ties share the middle of their rank range."""
        out = {}
        for axis, ref in self.references.items():
            x = _risk(rows, axis)
            lo, hi = np.searchsorted(ref, x, "left"), np.searchsorted(ref, x, "right")
            out[axis] = (lo + hi) / (2.0 * len(ref))
        return out

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """Higher = likelier to churn, in [0, 1]: the mean of the three axes."""
        return sum(self.axes(rows).values()) / len(self.references)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [float(x) for x in v] for k, v in self.references.items()}

    @classmethod
    def from_dict(cls, raw: dict[str, list[float]]) -> RfmRank:
        return cls({k: np.asarray(v, dtype=np.float64) for k, v in raw.items()})


def _risk(rows: pd.DataFrame, axis: str) -> np.ndarray:
    v = rows[axis].astype("float64").fillna(_FILL[axis]).to_numpy()
    return np.where(np.isinf(v), np.finfo(np.float64).max, v) * RFM_AXES[axis]


def rfm_churn_score(rows: pd.DataFrame) -> np.ndarray:
    """The RFM rank of each row within the rows themselves."""
    return RfmRank.fit(rows).score(rows)


def rfm_value(rows: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Run rate: spend so far per day since the first purchase (the cutoff's day counts) x horizon."""
    tenure = rows["tenure_days"].astype("float64").fillna(0.0) + 1.0
    return (rows["monetary_sum"].astype("float64").fillna(0.0) / tenure * horizon_days).to_numpy()


def btyd_churn(rows: pd.DataFrame) -> np.ndarray:
    """BG/NBD P(no purchase in the horizon); customers the fit could not score get the mean."""
    p = rows["btyd_p_no_purchase"].astype("float64")
    return p.fillna(p.mean()).to_numpy()


def btyd_value(rows: pd.DataFrame) -> np.ndarray:
    v = rows["btyd_expected_spend"].astype("float64")
    return v.fillna(0.0).to_numpy()
