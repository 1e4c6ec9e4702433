"""Training configuration: `training.yaml`, shared and in git (secrets never live there)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from features.config import ConfigError

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "training.yaml"


@dataclass(frozen=True)
class TrainingConfig:
    """How models are trained and validated. Every field is documented in training.yaml."""

    feature_set: str = "auto"  # auto: core_v1 if the history has more than transactions, else rfm_v1
    label_horizon_days: int = 91  # the horizon models are trained on; longer horizons are bridged (docs)
    origins: int = 4  # training cutoffs: this many month ends whose labels end by the cutoff
    min_history_days: int = 60  # the first origin has at least this much history behind it
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

    @classmethod
    def load(cls, path: str | Path | None = None) -> TrainingConfig:
        """Read `path` (default: the project's training.yaml; built-in defaults if it is absent)."""
        file = Path(path) if path else DEFAULT_PATH
        if not file.exists():
            if path:
                raise ConfigError(f"{file}: no such training config")
            return cls()
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: expected a mapping of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{file}: unknown setting(s) {unknown}; known: {sorted(known)}")
        if "value_objectives" in raw:
            raw["value_objectives"] = tuple(raw["value_objectives"])
        config = cls(**raw)
        for name in ("label_horizon_days", "origins", "trials"):
            if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
                raise ConfigError(f"{file}: {name} must be a positive whole number")
        return config
