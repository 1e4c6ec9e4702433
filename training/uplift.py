"""Uplift: who can be kept, not only who is leaving (docs/effect.md, Uplift ranking).

From alerts (treated) and their held-out controls with a complete outcome window, an uplift model learns
tau(x) = P(saved | acted on, x) - P(saved | not acted on, x) on the inputs known when the alert opened (the
served model's features, churn probability and predicted value). Two meta-learners on XGBoost:

- T-learner: one classifier per arm, mu1 on the treated and mu0 on the controls; tau = mu1 - mu0.
- X-learner (Kuenzel et al. 2019): the same mu1, mu0, then imputed effects D1 = y - mu0(x) on the treated and
  D0 = mu1(x) - y on the controls, a regressor on each (tau1, tau0), combined with the propensity g (the
  treated share: arms are drawn at random, so g is a constant): tau = g * tau0 + (1 - g) * tau1.

Both are judged by the Qini coefficient and the AUUC on later outcomes than they learned from (`qini`,
`auuc`), logged to MLflow and registered as versions of `<registered_model>-uplift` behind the same aliases
and gate style as the churn model (`decide`): a challenger becomes champion when its Qini on the evaluation
outcomes beats the champion's, and the P x value ranking's, by at least the configured gain. Pure functions,
except `log`, `decide` and `load_champion`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xgboost as xgb

if TYPE_CHECKING:
    from training.registry import Decision
    from training.tracking import MlflowConfig

LEARNERS = ("t", "x")
MODEL_FILE = "uplift.json"
ARTIFACT_DIR = "uplift"
NOT_INPUTS = frozenset(
    {"customer_id", "cutoff", "as_of", "treated", "saved", "value_after", "arm", "episode_id", "opened_at"}
)
MAX_LEVELS = 20  # a text column with more levels is not an input (ids, free text)
PARAMS: dict[str, Any] = {"max_depth": 3, "eta": 0.1, "min_child_weight": 10, "subsample": 0.8, "lambda": 1.0}
ROUNDS = 100
OUTCOMES = {"saved": "saved", "value": "value_after"}
"""What an uplift model learns the change of: P(saved), or the value kept after the alert (value_after)."""
MIN_THETA = 0.01


def registered_name(mlcfg: MlflowConfig) -> str:
    """The registered model of the uplift versions: beside the churn model's, never in it."""
    return f"{mlcfg.registered_model}-uplift"


@dataclass
class UpliftModel:
    """A fitted uplift model: its learner, its inputs (numeric columns, text columns one-hot by level) and
    its boosters. `predict` gives tau(x), the change in P(saved) from acting on the alert."""

    learner: str
    columns: list[str]
    levels: dict[str, list[str]]
    boosters: dict[str, xgb.Booster]
    propensity: float
    outcomes: int  # how many outcomes it learned from
    meta: dict[str, Any] = field(default_factory=dict)

    def matrix(self, frame: pd.DataFrame) -> xgb.DMatrix:
        """The input matrix of `frame` (missing columns are missing values, unknown levels all zeros)."""
        return xgb.DMatrix(_design(frame, self.columns, self.levels), nthread=1)

    @property
    def outcome(self) -> str:
        """`saved` (tau is a change in P(saved)) or `value` (tau is the value kept, in currency)."""
        return str(self.meta.get("outcome", "saved"))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """tau(x) for each row of `frame`: the change in P(saved), in [-1, 1] (or in the value after, for
        outcome `value`), shrunk toward the prior when the model has one (`fit`, prior_outcomes)."""
        if frame.empty:
            return np.zeros(0)
        dm = self.matrix(frame)
        if self.learner == "t":
            tau = self.boosters["mu1"].predict(dm) - self.boosters["mu0"].predict(dm)
        else:
            g = self.propensity
            tau = g * self.boosters["tau0"].predict(dm) + (1 - g) * self.boosters["tau1"].predict(dm)
        tau = np.asarray(tau, dtype=np.float64)
        w = float(self.meta.get("prior_weight", 0.0))
        if w > 0:
            risk_col = "churn_probability" if self.outcome == "saved" else "value_at_risk"
            risk = (
                pd.to_numeric(frame[risk_col], errors="coerce").to_numpy(dtype=np.float64)
                if risk_col in frame.columns
                else np.full(len(frame), np.nan)
            )
            prior = float(self.meta.get("prior_theta", MIN_THETA)) * risk
            tau = np.where(np.isfinite(prior), (1 - w) * tau + w * prior, tau)
        return np.clip(tau, -1.0, 1.0) if self.outcome == "saved" else tau

    def save(self, folder: Path) -> Path:
        """One JSON file in `folder`: metadata and every booster as XGBoost JSON."""
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "learner": self.learner,
            "columns": self.columns,
            "levels": self.levels,
            "propensity": self.propensity,
            "outcomes": self.outcomes,
            "meta": self.meta,
            "boosters": {k: json.loads(bytes(b.save_raw("json")).decode()) for k, b in self.boosters.items()},
        }
        path = folder / MODEL_FILE
        path.write_text(json.dumps(doc), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path) -> UpliftModel:
        doc = json.loads(path.read_text(encoding="utf-8"))
        boosters = {}
        for k, raw in doc["boosters"].items():
            b = xgb.Booster()
            b.load_model(bytearray(json.dumps(raw).encode()))
            boosters[k] = b
        return cls(
            doc["learner"], doc["columns"], doc["levels"], boosters, float(doc["propensity"]),
            int(doc["outcomes"]), doc.get("meta", {}),
        )  # fmt: skip


def inputs(frame: pd.DataFrame) -> tuple[list[str], dict[str, list[str]]]:
    """The input columns of an episode frame: numbers and booleans, and text columns of at most MAX_LEVELS
    levels (one-hot); identifiers, arms and outcomes are never inputs."""
    columns, levels = [], {}
    for name in frame.columns:
        if name in NOT_INPUTS:
            continue
        col = frame[name]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            columns.append(str(name))
        elif not pd.api.types.is_datetime64_any_dtype(col) and not pd.api.types.is_timedelta64_dtype(col):
            seen = sorted({str(v) for v in col.dropna()})
            if 0 < len(seen) <= MAX_LEVELS:
                levels[str(name)] = seen
    return columns, levels


def fit(
    frame: pd.DataFrame,
    learner: str = "x",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    rounds: int = ROUNDS,
    min_per_arm: int = 10,
    *,
    outcome: str = "saved",
    propensity: float | None = None,
    prior_outcomes: float = 0.0,
) -> UpliftModel:
    """Fit an uplift model on episodes with a known outcome: columns `treated` (bool), the outcome (`saved`
    0/1, or `value_after` for `outcome="value"`: the value kept, tau then in currency) and the inputs
    (`inputs`). `propensity`: P(treated) of the arms' draw (1 - the control share; default the treated
    share seen). `prior_outcomes` n0 > 0 shrinks tau toward a prior that the effect is proportional to the
    risk, tau_prior = theta x churn_probability (x value_at_risk for value), with weight n0 / (n + n0):
    with few outcomes the ranking stays close to P x value (`prior_theta`). ValueError when an arm has
    fewer than `min_per_arm` rows, or the learner or outcome is unknown."""
    if learner not in LEARNERS:
        raise ValueError(f"uplift learner must be one of {LEARNERS}, got {learner!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"uplift outcome must be one of {OUTCOMES}, got {outcome!r}")
    target = OUTCOMES[outcome]
    for col in ("treated", target):
        if col not in frame.columns:
            raise ValueError(f"uplift: the outcomes have no {col!r} column")
    if propensity is not None and not 0.0 < propensity < 1.0:
        raise ValueError(f"uplift: propensity must be in (0, 1), got {propensity}")
    if prior_outcomes < 0:
        raise ValueError(f"uplift: prior_outcomes must be at least 0, got {prior_outcomes}")
    treated = frame["treated"].to_numpy(dtype=bool)
    y = frame[target].to_numpy(dtype=np.float64)
    n1, n0 = int(treated.sum()), int((~treated).sum())
    if min(n1, n0) < min_per_arm:
        raise ValueError(
            f"uplift: {n1} treated and {n0} control outcomes; each arm needs at least {min_per_arm}"
        )
    columns, levels = inputs(frame)
    x = _design(frame, columns, levels)
    base = {**PARAMS, **(params or {}), "seed": seed, "nthread": 1}
    first = "binary:logistic" if outcome == "saved" else "reg:squarederror"

    def train(rows: np.ndarray, label: np.ndarray, objective: str) -> xgb.Booster:
        dm = xgb.DMatrix(x[rows], label=label, nthread=1)
        return xgb.train({**base, "objective": objective}, dm, num_boost_round=rounds)

    mu1 = train(treated, y[treated], first)
    mu0 = train(~treated, y[~treated], first)
    g = float(propensity) if propensity is not None else n1 / (n1 + n0)
    boosters = {"mu1": mu1, "mu0": mu0}
    if learner == "x":
        d1 = y[treated] - mu0.predict(xgb.DMatrix(x[treated], nthread=1))
        d0 = mu1.predict(xgb.DMatrix(x[~treated], nthread=1)) - y[~treated]
        boosters["tau1"] = train(treated, d1, "reg:squarederror")
        boosters["tau0"] = train(~treated, d0, "reg:squarederror")
    meta: dict[str, Any] = {"outcome": outcome, "prior_weight": 0.0, "prior_theta": 0.0}
    if prior_outcomes > 0:
        meta.update(prior_weight=prior_outcomes / (len(frame) + prior_outcomes),
                    prior_theta=prior_theta(frame, outcome))  # fmt: skip
    return UpliftModel(learner, columns, levels, boosters, g, len(frame), meta)


def prior_theta(frame: pd.DataFrame, outcome: str = "saved") -> float:
    """The prior's slope: the average effect (treated mean minus control mean of the outcome) over the mean
    risk (churn_probability, or value_at_risk for value), at least MIN_THETA (so that with no evidence the
    ranking is P x value, never its reverse)."""
    risk_col = "churn_probability" if outcome == "saved" else "value_at_risk"
    if risk_col not in frame.columns:
        return MIN_THETA
    t = frame["treated"].to_numpy(dtype=bool)
    y = frame[OUTCOMES[outcome]].to_numpy(dtype=np.float64)
    risk = float(np.nanmean(frame[risk_col].to_numpy(dtype=np.float64)))
    ate = float(np.mean(y[t]) - np.mean(y[~t])) if t.any() and (~t).any() else 0.0
    theta = ate / risk if np.isfinite(risk) and risk > 0 else 0.0
    return float(max(theta, MIN_THETA)) if np.isfinite(theta) else MIN_THETA


# --- evaluation -------------------------------------------------------------------------------------------


def qini_curve(score: np.ndarray, treated: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The Qini curve: for the k rows with the highest `score` (ties in input order), k = 1..n,
    q(k) = Y1(k) - Y0(k) * N1(k) / N0(k): the outcome gained in the treated of the top k beyond what their
    number of controls would have had (0 while the top k hold no control or no treated row)."""
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    t = np.asarray(treated, dtype=bool)[order]
    v = np.asarray(y, dtype=np.float64)[order]
    n1, n0 = np.cumsum(t), np.cumsum(~t)
    y1, y0 = np.cumsum(np.where(t, v, 0.0)), np.cumsum(np.where(t, 0.0, v))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where((n0 > 0) & (n1 > 0), y1 - y0 * n1 / np.maximum(n0, 1), 0.0)
    return np.asarray(q, dtype=np.float64)


def qini(score: np.ndarray, treated: np.ndarray, y: np.ndarray) -> float:
    """The Qini coefficient: the mean gap between the Qini curve and the random-targeting line from 0 to
    q(n), both divided by n (per customer of the population): (1/n) * sum_k (q(k) - k/n * q(n)) / n. Above 0:
    the ranking finds the responsive customers earlier than chance. nan on an empty frame."""
    q = qini_curve(score, treated, y)
    n = len(q)
    if n == 0:
        return float("nan")
    k = np.arange(1, n + 1)
    return float(np.sum(q - k / n * q[-1]) / n / n)


def auuc(score: np.ndarray, treated: np.ndarray, y: np.ndarray) -> float:
    """The area under the uplift curve, per customer: (1/n) * sum_k u(k) / n with
    u(k) = (Y1(k)/N1(k) - Y0(k)/N0(k)) * k (0 while an arm is empty in the top k)."""
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    t = np.asarray(treated, dtype=bool)[order]
    v = np.asarray(y, dtype=np.float64)[order]
    n = len(t)
    if n == 0:
        return float("nan")
    n1, n0 = np.cumsum(t), np.cumsum(~t)
    y1, y0 = np.cumsum(np.where(t, v, 0.0)), np.cumsum(np.where(t, 0.0, v))
    ok = (n1 > 0) & (n0 > 0)
    u = np.where(ok, (y1 / np.maximum(n1, 1) - y0 / np.maximum(n0, 1)) * np.arange(1, n + 1), 0.0)
    return float(np.sum(u) / n / n)


def evaluate(model: UpliftModel, frame: pd.DataFrame) -> dict[str, float]:
    """Qini and AUUC of `model` on later outcomes (`treated`, `saved`, and `value_after` when present:
    then also the value-weighted Qini)."""
    tau = model.predict(frame)
    t = frame["treated"].to_numpy(dtype=bool)
    out = {
        "qini": qini(tau, t, frame["saved"].to_numpy(dtype=np.float64)),
        "auuc": auuc(tau, t, frame["saved"].to_numpy(dtype=np.float64)),
        "rows": float(len(frame)),
    }
    if "value_after" in frame.columns:
        out["qini_value"] = qini(tau, t, frame["value_after"].to_numpy(dtype=np.float64))
    return out


# --- MLflow: log, register, gate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    run_id: str
    version: str


def log(mlcfg: MlflowConfig, model: UpliftModel, metrics: dict[str, float], tags: dict[str, str]) -> Logged:
    """One run in `<experiment>-uplift`: the model's parameters, `metrics`, the model file (artifact
    `uplift/uplift.json`), registered as a new version of `registered_name` and pointed at by `challenger`."""
    client = mlcfg.client()
    run = client.create_run(
        mlcfg.experiment_id(client, f"{mlcfg.experiment}-uplift"),
        run_name=f"uplift {model.learner}-learner {datetime.now(UTC):%Y-%m-%d %H:%M}",
        tags=tags,
    )
    rid = run.info.run_id
    for k, v in {
        "learner": model.learner,
        "outcomes": model.outcomes,
        "propensity": model.propensity,
    }.items():
        client.log_param(rid, k, v)
    for k, v in metrics.items():
        if np.isfinite(v):
            client.log_metric(rid, k, float(v))
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp))
        client.log_artifacts(rid, tmp, ARTIFACT_DIR)
    client.set_terminated(rid)
    name = registered_name(mlcfg)
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Diamond's uplift ranking models (training/uplift.py)"
        )
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/{ARTIFACT_DIR}", run_id=rid)
    from training.registry import CHALLENGER

    client.set_registered_model_alias(name, CHALLENGER, str(mv.version))
    return Logged(rid, str(mv.version))


def load_version(mlcfg: MlflowConfig, version: str) -> UpliftModel:
    """The uplift model of a registered version."""
    import mlflow.artifacts

    mv = mlcfg.client().get_model_version(registered_name(mlcfg), version)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=ARTIFACT_DIR, dst_path=tmp, tracking_uri=mlcfg.tracking_uri
        )
        return UpliftModel.load(Path(local) / MODEL_FILE)


def load_champion(mlcfg: MlflowConfig) -> tuple[str, UpliftModel] | None:
    """The uplift champion (version and model), or None while there is none (rank by P x value then)."""
    from training.registry import CHAMPION, alias_version

    version = alias_version(mlcfg, registered_name(mlcfg), CHAMPION)
    return None if version is None else (version, load_version(mlcfg, version))


def passes_gate(
    challenger: dict[str, float],
    champion: dict[str, float],
    min_gain: float,
    against: str = "the uplift champion",
) -> tuple[bool, str]:
    """Pure: does the challenger's Qini on the evaluation outcomes beat `against`'s by `min_gain`?"""
    gain = challenger["qini"] - champion["qini"]
    summary = f"Qini {challenger['qini']:.4f} vs {champion['qini']:.4f} ({gain:+.4f})"
    if not np.isfinite(gain) or gain < min_gain:
        return False, f"refused: Qini gain over {against} {gain:+.4f} < {min_gain:+.4f} ({summary})"
    return True, f"promoted: beats {against} on the later outcomes ({summary})"


def baseline(evaluation: pd.DataFrame) -> dict[str, float] | None:
    """Qini and AUUC of ranking the evaluation outcomes by value at risk (P x value: what an uplift model
    replaces); None when the frame has no `value_at_risk`."""
    if "value_at_risk" not in evaluation.columns:
        return None
    score = evaluation["value_at_risk"].to_numpy(dtype=np.float64)
    t = evaluation["treated"].to_numpy(dtype=bool)
    y = evaluation["saved"].to_numpy(dtype=np.float64)
    return {"qini": qini(score, t, y), "auuc": auuc(score, t, y)}


def decide(mlcfg: MlflowConfig, version: str, evaluation: pd.DataFrame, min_gain: float) -> Decision:
    """The gate for an uplift version, as training.registry.decide does for the churn model: scored on the
    same later outcomes (`evaluation`) as what it would replace, and promoted on a Qini gain of at least
    `min_gain` over the uplift champion (when there is one) and over the P x value ranking (when the frame
    has `value_at_risk`): a model that ranks later outcomes no better than value at risk does not replace
    it. The aliases move, the version is tagged, the decision is a run in `<experiment>-promotions`."""
    from training.registry import CHALLENGER, CHAMPION, Decision, _who, alias_version, log_decision

    client = mlcfg.client()
    name = registered_name(mlcfg)
    champion = alias_version(mlcfg, name, CHAMPION)
    decision = Decision(False, version, champion, "", who=_who(), when=datetime.now(UTC).isoformat())
    if champion == version:
        decision.reason = f"uplift version {version} is already the champion"
    else:
        mine = evaluate(load_version(mlcfg, version), evaluation)
        decision.scores = {f"challenger_{k}": v for k, v in mine.items()}
        checks = []
        if champion is not None:
            theirs = evaluate(load_version(mlcfg, champion), evaluation)
            decision.scores.update({f"champion_{k}": v for k, v in theirs.items()})
            checks.append(passes_gate(mine, theirs, min_gain))
        base = baseline(evaluation)
        if base is not None:
            decision.scores.update({f"p_x_value_{k}": v for k, v in base.items()})
            checks.append(passes_gate(mine, base, min_gain, "P x value"))
        if not checks:
            decision.promoted, decision.reason = True, "promoted: there was no uplift champion"
        else:
            failed = [why for ok, why in checks if not ok]
            decision.promoted = not failed
            decision.reason = failed[0] if failed else "; ".join(why for _, why in checks)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        if alias_version(mlcfg, name, CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "gate", "promoted" if decision.promoted else "refused")
    log_decision(mlcfg, decision, f"{name} version {version}")
    return decision


# --- helpers ------------------------------------------------------------------------------------------


def _design(frame: pd.DataFrame, columns: list[str], levels: dict[str, list[str]]) -> np.ndarray:
    parts = []
    for name in columns:
        col = frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index)
        parts.append(pd.to_numeric(col, errors="coerce").astype(np.float64).to_numpy())
    for name, seen in levels.items():
        col = (
            frame[name].astype(object).astype(str)
            if name in frame.columns
            else pd.Series("", index=frame.index)
        )
        for level in seen:
            parts.append((col == level).to_numpy(dtype=np.float64))
    if not parts:
        return np.zeros((len(frame), 0))
    return np.column_stack(parts)
