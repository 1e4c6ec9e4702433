"""Baselines every model is compared with on the same rows: an RFM rank and BG/NBD + Gamma-Gamma.

- RFM rank (training.rfm), within the rows themselves: a ranking, not a probability, so it has an AUC and a
  Gini but no Brier score. Its value forecast is the customer's own run rate: spend so far per day of tenure
  x the horizon.
- BG/NBD + Gamma-Gamma, fitted at the cutoff on data at or before it (features.btyd): P(no purchase in
  the horizon) and expected purchases x expected spend per purchase.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.rfm import RfmRank


def rfm_churn_score(rows: pd.DataFrame) -> np.ndarray:
    """The RFM rank of each row within the rows themselves."""
    return RfmRank.fit(rows).score(rows)


def rfm_value(rows: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Run rate: spend so far per day since the first purchase (the cutoff's day counts) x horizon."""
    tenure = rows["tenure_days"].astype("float64").fillna(0.0) + 1.0
    return (rows["monetary_sum"].astype("float64").fillna(0.0) / tenure * horizon_days).to_numpy()


def btyd_churn(rows: pd.DataFrame) -> np.ndarray:
    """BG/NBD P(no purchase in the horizon); customers the fit could not score get the mean (0.5 when it
    scored nobody: a fit that failed on a small history must not stop training)."""
    p = rows["btyd_p_no_purchase"].astype("float64")
    return p.fillna(p.mean() if p.notna().any() else 0.5).to_numpy()


def btyd_value(rows: pd.DataFrame) -> np.ndarray:
    v = rows["btyd_expected_spend"].astype("float64")
    return v.fillna(0.0).to_numpy()
