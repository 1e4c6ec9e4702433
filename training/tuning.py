"""Optuna search for the XGBoost parameters of both models, on the time-based validation (earlier origins
train, the latest validates). Seeded: the same data and config give the same trials and the same choice.

Churn minimises log loss; value minimises Poisson deviance and searches the objective too (Poisson,
Tweedie, squared error: `value_objectives` in training.yaml); as a hurdle (`value_model: hurdle`) its
classifier minimises log loss and its E[value | any] part Poisson deviance on the rows with some value, with
the Gamma objective. The configured starting parameters are the first trial, so tuning never ends worse on
validation than the untuned model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd

from training.models import Encoder, churn_validation_loss, split_latest, value_validation_loss


@dataclass
class Tuned:
    """The chosen parameters and what the search saw."""

    params: dict[str, Any]
    best_loss: float
    start_loss: float  # the configured starting parameters' loss (trial 0; NaN if it had none)
    trials: int
    metric: str

    def summary(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_tuning_trials": float(self.trials),
            f"{prefix}_tuning_best_{self.metric}": self.best_loss,
            f"{prefix}_tuning_start_{self.metric}": self.start_loss,
        }


SPACE: dict[str, tuple[float, float]] = {  # defaults; training.yaml `search` overrides any of them
    "n_estimators": (50, 600),
    "learning_rate": (0.01, 0.2),
    "max_depth": (1, 3),
    "min_child_weight": (5.0, 200.0),
    "subsample": (0.5, 1.0),
    "colsample_bytree": (0.5, 1.0),
    "reg_lambda": (0.1, 20.0),
}
_LOG = {"learning_rate", "min_child_weight", "reg_lambda"}


def _space(search: dict[str, tuple[float, float]]) -> Callable[[optuna.Trial], dict[str, Any]]:
    ranges = {**SPACE, **search}

    def sample(trial: optuna.Trial) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (lo, hi) in ranges.items():
            if name == "n_estimators":
                out[name] = trial.suggest_int(name, int(lo), int(hi), step=50)
            elif name == "max_depth":
                out[name] = trial.suggest_int(name, int(lo), int(hi))
            else:
                out[name] = trial.suggest_float(name, float(lo), float(hi), log=name in _LOG)
        return out

    return sample


def _search(
    loss: Callable[[dict[str, Any]], float],
    space: Callable[[optuna.Trial], dict[str, Any]],
    start: dict[str, Any],
    trials: int,
    timeout_s: float,
    seed: int,
    metric: str,
) -> Tuned:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(start, skip_if_exists=True)
    study.optimize(lambda t: loss(space(t)), n_trials=trials, timeout=timeout_s, n_jobs=1)
    best = {**study.best_trial.params}
    first = study.trials[0].value  # None when the start's loss was NaN (Optuna fails that trial)
    start_loss = float("nan") if first is None else float(first)
    return Tuned(best, float(study.best_value), start_loss, len(study.trials), metric)


def tune_churn(
    frame: pd.DataFrame,
    horizon_days: int,
    columns: list[str],
    start: dict[str, Any],
    search: dict[str, tuple[float, float]],
    trials: int,
    timeout_s: float,
    seed: int,
    n_jobs: int = 1,
    label: str = "churned",
) -> Tuned:
    """The churn booster's search (log loss); also the value hurdle's classifier's, whose `label` is
    training.models.ANY_VALUE."""
    early, late = split_latest(frame, horizon_days)
    encoder = Encoder.fit(frame, columns)
    return _search(
        lambda p: churn_validation_loss(early, late, encoder, p, seed, n_jobs, label),
        _space(search),
        _start(start),
        trials,
        timeout_s,
        seed,
        "logloss",
    )


def tune_value(
    frame: pd.DataFrame,
    horizon_days: int,
    columns: list[str],
    start: dict[str, Any],
    search: dict[str, tuple[float, float]],
    objectives: tuple[str, ...],
    trials: int,
    timeout_s: float,
    seed: int,
    n_jobs: int = 1,
) -> Tuned:
    early, late = split_latest(frame, horizon_days)
    encoder = Encoder.fit(frame, columns)

    params = _space(search)

    def space(trial: optuna.Trial) -> dict[str, Any]:
        return {**params(trial), "objective": trial.suggest_categorical("objective", list(objectives))}

    return _search(
        lambda p: value_validation_loss(early, late, encoder, p, seed, n_jobs),
        space,
        {**_start(start), "objective": objectives[0]},
        trials,
        timeout_s,
        seed,
        "poisson_deviance",
    )


def _start(params: dict[str, Any]) -> dict[str, Any]:
    """The configured parameters as a first trial (Optuna's names; unset ones at neutral values)."""
    return {
        "n_estimators": 300,
        "learning_rate": 0.05,
        "max_depth": 2,
        "min_child_weight": 20.0,
        "subsample": 0.8,
        "colsample_bytree": 1.0,
        "reg_lambda": 1.0,
        **params,
    }
