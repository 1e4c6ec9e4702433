"""Training configuration: `training.yaml`, shared and in git (secrets never live there)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from features.config import ConfigError, read_settings

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "training.yaml"
AGE_FEATURES = (
    "tenure_days",
    "signup_tenure_days",
    "n_purchases",
    "frequency_days",
    "monetary_sum",
    "net_amount",
    "refund_count",
    "refund_amount",
    "purchases_180d",
    "amount_180d",
    "purchases_365d",
    "amount_365d",
)


@dataclass(frozen=True)
class TrainingConfig:
    """How models are trained and validated. Every field is documented in training.yaml."""

    feature_set: str = "auto"  # auto: core_v1 if the history has more than transactions, else rfm_v1
    horizon_days: int = 273  # H: predictions answer for (T, T + H]
    label_horizon_days: int = 91  # h: the horizon models are trained on; H > h is bridged (docs)
    origins: int = 4  # training cutoffs: this many month ends whose labels end by the cutoff
    min_history_days: int = 60  # the first origin has at least this much history behind it
    exclude_features: tuple[str, ...] = AGE_FEATURES  # values that grow with customer age
    seed: int = 0
    n_jobs: int = 1  # XGBoost threads: 1 is deterministic and never stalls on a busy machine
    trials: int = 20  # Optuna trials per model
    timeout_s: float = 600.0  # Optuna time budget per model
    value_objectives: tuple[str, ...] = ("count:poisson", "reg:tweedie", "reg:squarederror")
    xgboost: dict[str, Any] = field(
        default_factory=lambda: {
            "n_estimators": 300,
            "learning_rate": 0.05,
            "max_depth": 2,
            "min_child_weight": 20,
            "subsample": 0.8,
        }
    )
    search: dict[str, tuple[float, float]] = field(default_factory=dict)  # Optuna ranges (training.tuning)
    tiers: dict[str, float | None] = field(
        default_factory=lambda: {"diamond": 0.05, "gold": 0.15, "silver": 0.30, "bronze": None}
    )
    gate: dict[str, float] = field(
        default_factory=lambda: {
            "min_churn_auc_gain": 0.0,
            "min_value_gini_gain": 0.0,
            "max_brier_increase": 0.0,
        }
    )

    retrain: dict[str, Any] = field(
        default_factory=lambda: {"every_days": 30, "on_drift": True}
    )  # when `diamond retrain` trains (training.retrain)

    def replace(self, **changes: Any) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, path: str | Path | None = None) -> TrainingConfig:
        """Read `path` (default: the project's training.yaml; built-in defaults if it is absent)."""
        file = Path(path) if path else DEFAULT_PATH
        raw = read_settings(file, bool(path), (f.name for f in fields(cls)), "training config")
        if raw is None:
            return cls()
        for name in ("value_objectives", "exclude_features"):
            if name in raw:
                raw[name] = tuple(raw[name] or ())
        config = cls(**raw)
        for name in ("horizon_days", "label_horizon_days", "origins", "trials"):
            if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
                raise ConfigError(f"{file}: {name} must be a positive whole number")
        shares = [s for s in config.tiers.values() if s]
        if len(config.tiers) < 2 or sum(shares) >= 1 or any(s < 0 for s in shares):
            raise ConfigError(
                f"{file}: tiers need two or more names and shares (best first) that sum below 1"
            )
        from training.tuning import SPACE

        bad = sorted(k for k, v in config.search.items() if k not in SPACE or len(v) != 2 or v[0] > v[1])
        if bad:
            raise ConfigError(f"{file}: search ranges {bad} must be [low, high] for one of {sorted(SPACE)}")
        unknown_gate = sorted(set(config.gate) - set(TrainingConfig().gate))
        if unknown_gate:
            raise ConfigError(f"{file}: unknown gate setting(s) {unknown_gate}")
        retrain = {**TrainingConfig().retrain, **(config.retrain or {})}
        unknown_retrain = sorted(set(retrain) - set(TrainingConfig().retrain))
        if unknown_retrain:
            raise ConfigError(f"{file}: unknown retrain setting(s) {unknown_retrain}")
        every = retrain["every_days"]
        number = isinstance(every, int | float) and not isinstance(every, bool)
        if every is not None and (not number or every <= 0):
            raise ConfigError(f"{file}: retrain.every_days must be a positive number of days or null")
        if not isinstance(retrain["on_drift"], bool):
            raise ConfigError(f"{file}: retrain.on_drift must be true or false")
        config = config.replace(retrain=retrain)
        return config
