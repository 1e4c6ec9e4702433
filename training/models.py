"""Fitting and applying the two XGBoost models. Pure functions of frames and parameters.

Everything learned from data lives in the returned objects (column order, category levels, the churn
stacker and its RFM reference, the value objective, the horizon maps), so that serving applies exactly
what training fitted (training.artefact saves and loads them).

- Churn: a booster trained on the earlier origins; on the latest origin a logistic **stacker** over its
  margin and the RFM rank is fitted (this is also the calibration, on a later time slice than the booster
  was trained on); the booster is then refit on every origin, the stacker kept.
- Value: a booster with the objective and parameters validation chose, refit on every origin; or, as a
  **hurdle** (two parts), P(any value over the label horizon) by a classifier times E[value | any] by a
  Gamma regression on the rows that had some: a classifier's probability falls as far as the evidence
  takes it, where one log-link regression of everybody's value stops at a floor (docs/training.md).
- Both answer for the label horizon h; a **horizon map** fitted at the cutoff (training.design) turns that
  into the target horizon H.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from training import metrics
from training.rfm import RfmRank
from training.treeshap import Stumps

P_EPS = 1e-6  # probabilities are kept in [eps, 1 - eps] before taking logits
VALUE_FLOOR = 0.01  # smallest value (currency units) the log-scale horizon map is applied to
ANY_VALUE = "any_value"  # the hurdle's classifier label: some positive value over the label horizon
SPEND_OBJECTIVE = "reg:gamma"  # the hurdle's E[value | any]: positive, skewed amounts


@dataclass
class Encoder:
    """Column order and the category levels of text columns, learned from training rows."""

    columns: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: list[str]) -> Encoder:
        cats = {
            c: sorted(str(v) for v in frame[c].dropna().unique())
            for c in columns
            if frame[c].dtype == object or isinstance(frame[c].dtype, pd.StringDtype)
        }
        return cls(list(columns), cats)

    def matrix(self, frame: pd.DataFrame) -> xgb.DMatrix:
        if self.categories:
            return xgb.DMatrix(self.frame(frame), enable_categorical=True, nthread=1)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"rows lack model columns {missing}")
        try:  # all numeric: straight to a float matrix (a per-column pandas frame costs ~5 ms a call)
            values = frame[self.columns].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model columns must be numbers: {exc}") from None
        return xgb.DMatrix(values, feature_names=self.columns, nthread=1)

    def frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Model inputs: the training columns in training order, floats and fixed-level categoricals."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"rows lack model columns {missing}")
        out = {}
        for c in self.columns:
            if c in self.categories:
                out[c] = pd.Categorical(frame[c].astype("object"), categories=self.categories[c])
            else:
                out[c] = pd.to_numeric(frame[c], errors="raise").astype("float64")
        return pd.DataFrame(out, index=frame.index)


@dataclass
class ChurnModel:
    """P(churn): booster margin and RFM rank, stacked on a later time slice, mapped to the target horizon."""

    booster: xgb.Booster
    encoder: Encoder
    rfm: RfmRank
    stack: tuple[float, float, float]  # p_h = sigmoid(w_margin * margin + w_rfm * rfm_rank + b)
    horizon_map: tuple[float, float] = (0.0, 1.0)  # logit p_H = a + b * logit p_h
    label_days: int | None = None  # the labels it learned when not the artefact's h (a churn model at H)

    def predict_label_horizon(self, frame: pd.DataFrame, dm: xgb.DMatrix | None = None) -> np.ndarray:
        margin = self.booster.predict(dm or self.encoder.matrix(frame), output_margin=True)
        return self.stacked(margin, self.rfm.score(frame))

    def predict(self, frame: pd.DataFrame, dm: xgb.DMatrix | None = None) -> np.ndarray:
        margin = self.booster.predict(dm or self.encoder.matrix(frame), output_margin=True)
        return self.from_parts(margin, self.rfm.score(frame))

    def stacked(self, margin: np.ndarray, rfm_rank: np.ndarray) -> np.ndarray:
        """P(churn) over the label horizon from the booster margin and the RFM rank of the same rows."""
        w_margin, w_rfm, b = self.stack
        return expit(w_margin * margin + w_rfm * rfm_rank + b)

    def from_parts(self, margin: np.ndarray, rfm_rank: np.ndarray) -> np.ndarray:
        """`predict` from its parts, for callers that hold the margin and the rank already (the online path
        keeps each snapshot row's rank in memory)."""
        a, b = self.horizon_map
        return expit(a + b * logit(np.clip(self.stacked(margin, rfm_rank), P_EPS, 1 - P_EPS)))

    def contributions(self, frame: pd.DataFrame, dm: xgb.DMatrix | None = None) -> np.ndarray:
        """Per-feature contributions to the booster's margin (last column: bias), XGBoost's pred_contribs."""
        return self.booster.predict(dm or self.encoder.matrix(frame), pred_contribs=True)

    def shap(self, frame: pd.DataFrame, dm: xgb.DMatrix | None = None) -> np.ndarray:
        """(rows, columns) each input's exact TreeSHAP contribution to the margin, bias left out: computed
        in numpy for a booster of stumps (training.treeshap: XGBoost's numbers, bit for bit), else by
        XGBoost's pred_contribs."""
        if self.stumps is not None:
            return self.stumps.contributions(self.encoder.frame(frame).to_numpy(dtype=np.float64))
        return self.contributions(frame, dm)[:, :-1]

    def shap_of(self, x: np.ndarray) -> np.ndarray:
        """`shap` of rows given as the encoder's float matrix (numeric inputs, in `encoder.columns` order)."""
        if self.stumps is not None:
            return self.stumps.contributions(x)
        dm = xgb.DMatrix(x, feature_names=self.encoder.columns, nthread=1)
        return np.asarray(self.booster.predict(dm, pred_contribs=True))[:, :-1]

    @cached_property
    def stumps(self) -> Stumps | None:
        """The booster as stumps (training.treeshap), or None: deeper trees, or categorical inputs."""
        return None if self.encoder.categories else Stumps.of(self.booster)


@dataclass
class ValueModel:
    """Expected value: booster for the label horizon with the chosen objective, mapped to the target; with a
    `buyer`, the booster is E[value | any value] and the buyer P(any value): their product is the value."""

    booster: xgb.Booster
    encoder: Encoder
    objective: str
    horizon_map: tuple[float, float] = (0.0, 1.0)  # value_H = exp(a) * value_h ** b
    buyer: xgb.Booster | None = None  # the hurdle's P(any positive value over the label horizon)

    def raw(self, dm: xgb.DMatrix) -> np.ndarray:
        """The boosters' expected value over the label horizon, before the map (squared error: maybe < 0)."""
        v = self.booster.predict(dm)
        return v if self.buyer is None else v * self.buyer.predict(dm)

    def raw_of(self, x: np.ndarray) -> np.ndarray:
        """`raw` of rows given as a float matrix in the encoder's column order (`inplace_predict`)."""
        v = self.booster.inplace_predict(x)
        return v if self.buyer is None else v * self.buyer.inplace_predict(x)

    def predict_label_horizon(self, frame: pd.DataFrame, dm: xgb.DMatrix | None = None) -> np.ndarray:
        return np.maximum(self.raw(dm or self.encoder.matrix(frame)), 0.0)

    def predict(self, frame: pd.DataFrame, dm: xgb.DMatrix | None = None) -> np.ndarray:
        return self.from_raw(self.raw(dm or self.encoder.matrix(frame)))

    @property
    def kind(self) -> str:
        """'hurdle' (two boosters) or 'single': the run tag and the service's model description."""
        return "single" if self.buyer is None else "hurdle"

    def describe(self) -> str:
        """The model's form in words (the CLI, the run parameters)."""
        if self.buyer is None:
            return f"objective {self.objective}"
        return f"P(any value) x E[value | any] ({self.objective})"

    def from_raw(self, raw: np.ndarray) -> np.ndarray:
        """`predict` from the booster's own prediction of the same rows (e.g. from `inplace_predict`)."""
        a, b = self.horizon_map
        v = np.maximum(raw, 0.0)
        return np.where(v > 0, np.exp(a) * np.maximum(v, VALUE_FLOOR) ** b, 0.0)


def booster_params(objective: str, params: dict[str, Any], seed: int, n_jobs: int) -> dict[str, Any]:
    """XGBoost training parameters (everything but the number of rounds)."""
    out = {k: v for k, v in params.items() if k not in ("n_estimators", "objective")}
    out["eta"] = out.pop("learning_rate", 0.1)
    out.update(objective=objective, seed=seed, nthread=n_jobs, tree_method="hist")
    if objective == "reg:tweedie":
        out.setdefault("tweedie_variance_power", 1.5)
    return out


def train_booster(
    frame: pd.DataFrame,
    label: str,
    encoder: Encoder,
    objective: str,
    params: dict[str, Any],
    seed: int,
    n_jobs: int,
) -> xgb.Booster:
    dm = encoder.matrix(frame)
    y = frame[label].to_numpy(dtype=np.float64)
    dm.set_label(np.clip(y, 0.0, None) if label == "future_value" else y)
    rounds = int(params.get("n_estimators", 300))
    return xgb.train(booster_params(objective, params, seed, n_jobs), dm, num_boost_round=rounds)


def split_latest(frame: pd.DataFrame, horizon_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation rows (the latest origin) and the rows that may train for them: origins whose label
    window (c, c + h] ends by the latest origin, so no training label shares a day with the validation
    labels, and the gap between training and validation is the one between the final model and T."""
    latest = frame["cutoff"].max()
    ends = frame["cutoff"] + pd.Timedelta(days=horizon_days)
    early, late = frame[ends <= latest], frame[frame["cutoff"] == latest]
    if early.empty or late.empty:
        raise ValueError(
            f"time-based validation needs an origin at least {horizon_days} days before the latest one "
            f"({latest:%Y-%m-%d}); use more origins (training.yaml) or a later cutoff"
        )
    return early, late


def churn_validation_loss(
    early: pd.DataFrame,
    late: pd.DataFrame,
    encoder: Encoder,
    params: dict[str, Any],
    seed: int,
    n_jobs: int,
    label: str = "churned",
) -> float:
    """Log loss on the later slice of a booster trained on the earlier one (what tuning minimises); `label`
    names the 0/1 column (the hurdle's classifier learns ANY_VALUE)."""
    booster = train_booster(early, label, encoder, "binary:logistic", params, seed, n_jobs)
    return metrics.logloss(late[label], booster.predict(encoder.matrix(late)))


def value_validation_loss(
    early: pd.DataFrame, late: pd.DataFrame, encoder: Encoder, params: dict[str, Any], seed: int, n_jobs: int
) -> float:
    """Poisson deviance on the later slice of a booster trained on the earlier one."""
    booster = train_booster(early, "future_value", encoder, params["objective"], params, seed, n_jobs)
    predicted = np.maximum(booster.predict(encoder.matrix(late)), 0.0)
    return metrics.poisson_deviance(late["future_value"].clip(lower=0.0), predicted)


def fit_churn(
    frame: pd.DataFrame, horizon_days: int, columns: list[str], params: dict[str, Any], seed: int, n_jobs: int
) -> tuple[ChurnModel, np.ndarray]:
    """Booster on earlier origins, stacker on the latest, booster refit on all. Also returns the
    validation-stage probabilities on the latest origin (in-sample for the stacker's three coefficients)."""
    early, late = split_latest(frame, horizon_days)
    encoder = Encoder.fit(frame, columns)
    first = train_booster(early, "churned", encoder, "binary:logistic", params, seed, n_jobs)
    rfm = RfmRank.fit(late)
    inputs = np.c_[first.predict(encoder.matrix(late), output_margin=True), rfm.score(late)]
    y = late["churned"].to_numpy()
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(inputs, y)
    stack = (float(lr.coef_[0][0]), float(lr.coef_[0][1]), float(lr.intercept_[0]))
    validated = ChurnModel(first, encoder, rfm, stack).predict_label_horizon(late)
    final = train_booster(frame, "churned", encoder, "binary:logistic", params, seed, n_jobs)
    return ChurnModel(final, encoder, rfm, stack), validated


def fit_value(
    frame: pd.DataFrame,
    horizon_days: int,
    columns: list[str],
    params: dict[str, Any],
    seed: int,
    n_jobs: int,
    buyer_params: dict[str, Any] | None = None,
) -> tuple[ValueModel, np.ndarray]:
    """Refit the chosen objective and parameters on all origins (with `buyer_params`, as a hurdle: the
    classifier on every row, `params` on the rows with some value). Also returns the validation-stage
    predictions on the latest origin (boosters trained on the earlier origins)."""
    early, late = split_latest(frame, horizon_days)
    encoder = Encoder.fit(frame, columns)
    objective = params["objective"]

    def fitted(rows: pd.DataFrame) -> ValueModel:
        if buyer_params is None:
            booster = train_booster(rows, "future_value", encoder, objective, params, seed, n_jobs)
            return ValueModel(booster, encoder, objective)
        labelled = with_any_value(rows)
        buyer = train_booster(labelled, ANY_VALUE, encoder, "binary:logistic", buyer_params, seed, n_jobs)
        spend = train_booster(
            rows[labelled[ANY_VALUE] == 1], "future_value", encoder, objective, params, seed, n_jobs
        )
        return ValueModel(spend, encoder, objective, buyer=buyer)

    validated = fitted(early).predict_label_horizon(late)
    return fitted(frame), validated


def with_any_value(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the hurdle's classifier label: 1 where the label window holds some positive value."""
    return frame.assign(**{ANY_VALUE: (frame["future_value"] > 0).astype(np.int8)})


def hurdle_fits(frame: pd.DataFrame, horizon_days: int, min_rows: int = 20) -> bool:
    """Whether a hurdle can be validated on `frame`: the earlier origins and the latest each hold at least
    `min_rows` rows with some value and some without (else the single model is fitted)."""
    early, late = split_latest(frame, horizon_days)
    some = [(len(part), int((part["future_value"] > 0).sum())) for part in (early, late)]
    return all(n >= min_rows and rows - n >= min_rows for rows, n in some)
