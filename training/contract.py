"""Contract-aware churn: a discrete-time cancellation hazard for subscription customers.

A subscriber churns by cancelling, not by falling silent, so the purchase-silence churn model (a booster on
13-week labels bridged to H by BG/NBD) misreads them: their plan fees look like steady purchases. Customers
under contract (every customer of a `churn: contractual` history; those whose `is_subscriber` attribute is
true in a `churn: mixed` one) get this model instead; everybody else keeps purchase silence.

- **Person-period rows.** At every month end o whose period (o, o + p] (p = 30 days) ends by the cutoff T,
  each subscriber still under contract at o is one row: the feature set's columns at o and whether a
  cancellation falls in the period. The latest `periods` month ends are stacked.
- **Hazard.** An XGBoost classifier learns the one-period cancellation hazard h(x) from those rows, with the
  subscription tenure (days since signup) among its inputs.
- **Over H.** For a customer at T, tenure is advanced one period at a time (the other inputs held as they
  are at T): P(cancel within H) = 1 - prod_k (1 - h_k), the last period raised to its fraction of p. The
  same hazards give P(cancel within d) for any d <= H (`ContractModel.curve`: the time-to-churn curve of
  training.curve for customers under contract) and the expected days to cancel given a cancellation
  within H (`expected_days`, the hazard constant within each period).
- **Level.** The cumulative hazard is multiplied by `level` (S_H -> S_H ** level), fitted so that the mean
  predicted cancellation over H matches the realised rate on the latest window whose H-day labels end by T
  (training.levels chooses the window); 1 when no window is complete.

Pure functions of frames and parameters; the fitted model ships inside the scoring artefact
(training.artefact), and serving only calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb
from scipy.optimize import brentq

from features.build import CONTRACT_ATTRIBUTE, build_training_set, monthly_cutoffs
from features.definitions import REGISTRY
from features.history import History
from features.sets import FeatureSet
from training.models import P_EPS, Encoder, booster_params

PERIOD_DAYS = 30
TENURE_COLUMN = "signup_tenure_days"
ATTRIBUTE_COLUMN = f"attr_{CONTRACT_ATTRIBUTE}"
LEVEL_BOUNDS = (0.2, 5.0)  # a level outside these says the window is unlike T: clipped, not trusted more
CONTRACT, SILENCE = "contract_hazard", "purchase_silence"  # which model scored a customer
CONTRACT_BOOSTER = "contract_booster"  # under contract, by the churn booster on H-day cancellations
HAZARD_PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "learning_rate": 0.05,
    "max_depth": 3,
    "min_child_weight": 20,
    "subsample": 0.8,
}


def contract_mode(history: History) -> str | None:
    """'contractual' (everyone is under contract), 'mixed' (the `is_subscriber` attribute says who) or None
    (nobody: purchase silence only)."""
    if history.cancellations is None or history.churn == "non_contractual":
        return None
    if history.churn == "mixed":
        c = history.customers
        if c is None or CONTRACT_ATTRIBUTE not in c.column_names:
            return None
    return history.churn


def under_contract(rows: pd.DataFrame, mode: str | None) -> np.ndarray:
    """Which feature rows the contract model scores: all in a contractual history; in a mixed one, rows
    whose `attr_is_subscriber` is true (a missing value or column: not under contract)."""
    n = len(rows)
    if mode == "contractual":
        return np.ones(n, dtype=bool)
    if mode != "mixed" or ATTRIBUTE_COLUMN not in rows:
        return np.zeros(n, dtype=bool)
    return _truthy(rows[ATTRIBUTE_COLUMN])


def _truthy(column: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_numeric_dtype(column.dtype):
        return np.asarray(column.fillna(0).astype(np.float64).to_numpy() > 0, dtype=bool)
    text = column.astype("object").map(lambda v: str(v).strip().lower() if v is not None else "")
    return np.asarray(text.isin(["true", "1", "yes", "y", "t"]).to_numpy(), dtype=bool)


def contract_customers(history: History, mode: str) -> History:
    """The history restricted to the customers under contract (all of them when contractual)."""
    if mode == "contractual" or history.customers is None:
        return history
    c = history.customers
    flags = c.column(CONTRACT_ATTRIBUTE)
    if not pa.types.is_boolean(flags.type):
        flags = pa.array(_truthy(flags.to_pandas()))
    ids = c.filter(pc.fill_null(flags, False)).column("customer_id")

    def keep(table: pa.Table | None) -> pa.Table | None:
        return None if table is None else table.filter(pc.is_in(table.column("customer_id"), value_set=ids))

    return replace(
        history,
        transactions=history.transactions.filter(
            pc.is_in(history.transactions.column("customer_id"), value_set=ids)
        ),
        customers=keep(history.customers),
        interactions=keep(history.interactions),
        cancellations=keep(history.cancellations),
    )


@dataclass
class ContractModel:
    """P(cancel within H) for customers under contract: a one-period hazard booster over tenure, advanced
    period by period, with a level on the cumulative hazard."""

    booster: xgb.Booster
    encoder: Encoder
    mode: str  # contractual | mixed
    horizon_days: int  # H
    period_days: int = PERIOD_DAYS
    tenure_column: str | None = TENURE_COLUMN  # advanced by one period per step; None: held fixed
    level: float = 1.0  # S_H -> S_H ** level (training.levels)
    info: dict[str, Any] = field(default_factory=dict)  # training rows, periods, calibration window

    def applies(self, rows: pd.DataFrame) -> np.ndarray:
        return under_contract(rows, self.mode)

    def hazards(self, rows: pd.DataFrame, days: int | None = None) -> np.ndarray:
        """(rows, periods) one-period hazards for the periods covering `days` (default H), tenure advanced."""
        steps = int(np.ceil((days or self.horizon_days) / self.period_days))
        frame = self.encoder.frame(rows)
        out = np.empty((len(rows), steps))
        for k in range(steps):
            if self.tenure_column in frame:
                frame[self.tenure_column] = rows[self.tenure_column].astype("float64") + k * self.period_days
            dm = xgb.DMatrix(frame, enable_categorical=bool(self.encoder.categories), nthread=1)
            out[:, k] = self.booster.predict(dm)
        return np.clip(out, 0.0, 1.0 - P_EPS)

    def contributions(self, rows: pd.DataFrame) -> np.ndarray:
        """(rows, columns) TreeSHAP contributions (XGBoost's pred_contribs, bias left out) of each input to
        the margin (logit) of the first period's hazard, tenure as at T: what raises or lowers this
        customer's cancellation risk, the reasons of a customer the contract model scores."""
        frame = self.encoder.frame(rows)
        dm = xgb.DMatrix(frame, enable_categorical=bool(self.encoder.categories), nthread=1)
        return np.asarray(self.booster.predict(dm, pred_contribs=True))[:, :-1]

    def survival(self, rows: pd.DataFrame, days: int | None = None, level: float | None = None) -> np.ndarray:
        """P(still under contract after `days`), level applied."""
        days = days or self.horizon_days
        h = self.hazards(rows, days)
        return survival_from_hazards(h, days, self.period_days, self.level if level is None else level)

    def predict(self, rows: pd.DataFrame, days: int | None = None) -> np.ndarray:
        """P(cancel within `days`, default H)."""
        if rows.empty:
            return np.zeros(0)
        return 1.0 - self.survival(rows, days)

    def curve(self, rows: pd.DataFrame, days: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, len(days)) P(cancel within d) for each d in `days` (each at most H), from one pass of the
        monthly hazards (tenure advanced, level applied): non-decreasing in d, `predict(rows)` at d = H; and
        E[days to cancel | cancel within H] of each row (NaN where P(cancel within H) is 0)."""
        horizon = self.horizon_days
        if any(d <= 0 or d > horizon for d in days):
            raise ValueError(f"contract curve: days {list(days)} must lie in (0, H = {horizon}]")
        steps = int(np.ceil(horizon / self.period_days))
        h = self.hazards(rows, horizon) if len(rows) else np.zeros((0, steps))
        return curve_from_hazards(h, days, self.period_days, self.level), expected_days(
            h, horizon, self.period_days, self.level
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "columns": self.encoder.columns,
            "categories": self.encoder.categories,
            "horizon_days": self.horizon_days,
            "period_days": self.period_days,
            "tenure_column": self.tenure_column,
            "level": self.level,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, spec: dict[str, Any], booster: xgb.Booster) -> ContractModel:
        return cls(
            booster,
            Encoder(spec["columns"], spec["categories"]),
            spec["mode"],
            int(spec["horizon_days"]),
            int(spec["period_days"]),
            spec.get("tenure_column"),
            float(spec.get("level", 1.0)),
            dict(spec.get("info", {})),
        )


def survival_from_hazards(hazards: np.ndarray, days: int, period_days: int, level: float = 1.0) -> np.ndarray:
    """prod_k (1 - h_k) over the periods covering `days`, the last one raised to its fraction of a period,
    then raised to `level` (a multiplier on the cumulative hazard)."""
    steps = hazards.shape[1]
    weights = np.ones(steps)
    if steps:
        weights[-1] = (days - (steps - 1) * period_days) / period_days
    log_s = np.log1p(-np.clip(hazards, 0.0, 1.0 - P_EPS)) @ weights
    return np.asarray(np.exp(level * log_s))


def curve_from_hazards(
    hazards: np.ndarray, days: Sequence[int], period_days: int, level: float = 1.0
) -> np.ndarray:
    """(rows, len(days)) P(cancel within d) = 1 - S(d) for each d in `days`, from the same one-period
    hazards (`survival_from_hazards` over the periods covering d): non-decreasing in d."""
    out = np.empty((hazards.shape[0], len(days)))
    for j, d in enumerate(days):
        steps = int(np.ceil(d / period_days))
        out[:, j] = 1.0 - survival_from_hazards(hazards[:, :steps], d, period_days, level)
    return out


def expected_days(hazards: np.ndarray, days: int, period_days: int, level: float = 1.0) -> np.ndarray:
    """E[T | T <= days] for the piecewise-constant hazard of `hazards` (one rate per period, as
    `survival_from_hazards` reads them): (integral of S over (0, days] - days S(days)) / (1 - S(days)),
    S exponential within each period; NaN where S(days) = 1 (no cancellation possible)."""
    n, steps = hazards.shape
    lengths = np.full(steps, float(period_days))
    if steps:
        lengths[-1] = days - (steps - 1) * period_days
    # the rate per day in each period: -level ln(1 - h) / period
    rate = -level * np.log1p(-np.clip(hazards, 0.0, 1.0 - P_EPS)) / period_days
    start = np.exp(-np.cumsum(np.c_[np.zeros(n), rate[:, :-1] * lengths[:-1]], axis=1))  # S at each start
    with np.errstate(divide="ignore", invalid="ignore"):
        area = np.where(rate > 1e-12, -np.expm1(-rate * lengths) / rate, lengths)  # integral of e^(-r t)
    total = (start * area).sum(axis=1)
    end = start[:, -1] * np.exp(-rate[:, -1] * lengths[-1]) if steps else np.ones(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (total - days * end) / (1.0 - end)
    return np.where(end < 1.0, np.clip(out, 0.0, float(days)), np.nan)


def fit_level(survival: np.ndarray, cancelled: np.ndarray) -> float:
    """c with mean(1 - S ** c) = the realised cancellation rate, within LEVEL_BOUNDS (1 when nothing to fit:
    no rows, or every predicted survival certain)."""
    s = np.clip(np.asarray(survival, dtype=np.float64), P_EPS, 1.0 - P_EPS)
    rate = float(np.mean(cancelled)) if len(cancelled) else float("nan")
    if not s.size or not np.isfinite(rate):
        return 1.0
    lo, hi = LEVEL_BOUNDS

    def gap(c: float) -> float:
        return float(np.mean(1.0 - s**c)) - rate

    if gap(lo) >= 0:
        return lo
    if gap(hi) <= 0:
        return hi
    return float(brentq(gap, lo, hi, xtol=1e-6))


def hazard_origins(history: History, cutoff: datetime, count: int, min_history_days: int) -> list[datetime]:
    """The latest `count` month ends whose period (o, o + PERIOD_DAYS] ends by `cutoff`, with
    `min_history_days` of history before them."""
    return monthly_cutoffs(history.until(cutoff), PERIOD_DAYS, min_history_days)[-count:]


def hazard_columns(columns: list[str], feature_set: FeatureSet) -> list[str]:
    """The main model's columns minus the BTYD ones (purchase-process outputs, meaningless for plan fees),
    plus the subscription tenure, which the hazard is a function of."""
    keep = [c for c in columns if not c.startswith("btyd_")]
    if TENURE_COLUMN in feature_set.features and TENURE_COLUMN not in keep:
        keep.append(TENURE_COLUMN)
    return keep


def person_periods(
    history: History, cutoff: datetime, origins: list[datetime], feature_set: FeatureSet, mode: str
) -> pd.DataFrame:
    """One row per subscriber under contract at each origin: features and whether they cancel in the next
    period, from what was known at `cutoff` only."""
    known = contract_customers(history.until(cutoff), mode)
    no_btyd = tuple(f for f in feature_set.features if REGISTRY[f].source != "btyd")  # not hazard inputs
    table = build_training_set(
        known, origins, PERIOD_DAYS, replace(feature_set, features=no_btyd), "contractual"
    )
    frame = table.to_pandas()
    return frame[under_contract(frame, mode)].reset_index(drop=True)


def fit_hazard(
    frame: pd.DataFrame,
    columns: list[str],
    mode: str,
    horizon_days: int,
    seed: int,
    n_jobs: int,
    params: dict[str, Any] | None = None,
) -> ContractModel:
    """The one-period hazard booster on person-period rows (`churned` = cancelled in the period)."""
    if frame.empty:
        raise ValueError("no subscriber under contract at any hazard origin: nothing to learn a hazard from")
    encoder = Encoder.fit(frame, columns)
    p = dict(HAZARD_PARAMS if params is None else params)
    rounds = int(p.get("n_estimators", 200))
    dm = encoder.matrix(frame)
    dm.set_label(frame["churned"].to_numpy(dtype=np.float64))
    booster = xgb.train(booster_params("binary:logistic", p, seed, n_jobs), dm, num_boost_round=rounds)
    tenure = TENURE_COLUMN if TENURE_COLUMN in columns else None
    info = {
        "person_periods": len(frame),
        "period_cancellation_rate": float(frame["churned"].mean()),
        "origins": sorted({f"{c:%Y-%m-%d}" for c in pd.to_datetime(frame["cutoff"])}),
    }
    return ContractModel(booster, encoder, mode, horizon_days, PERIOD_DAYS, tenure, 1.0, info)
