"""Training configuration: `training.yaml`, shared and in git (secrets never live there)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import SettingsConfigDict

from core.config import FileSettings, OrEmpty, Section, invalid, load
from features.value import ValueTarget
from training.tiers import DEFAULT_SHARES

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


def _tuple(value: Any) -> Any:
    """null is an empty list."""
    return () if value is None else value


Names = Annotated[tuple[str, ...], BeforeValidator(_tuple)]
Range = tuple[float, float]


class XGBoostStart(Section):
    """`xgboost:` the starting parameters, Optuna's first trial (training.tuning); it searches around them."""

    n_estimators: Annotated[int, Field(ge=1)] = 300
    learning_rate: Annotated[float, Field(gt=0)] = 0.05
    max_depth: Annotated[int, Field(ge=1)] = 2
    min_child_weight: Annotated[float, Field(ge=0)] = 20.0
    subsample: Annotated[float, Field(gt=0, le=1)] = 0.8
    colsample_bytree: Annotated[float, Field(gt=0, le=1)] | None = None  # None: 1.0 (training.tuning)
    reg_lambda: Annotated[float, Field(ge=0)] | None = None  # None: 1.0 (training.tuning)

    def params(self) -> dict[str, Any]:
        """The parameters set, by XGBoost's names."""
        return self.model_dump(exclude_none=True)


class GateConfig(Section):
    """`gate:` what a challenger must gain over the champion to be promoted (training.registry)."""

    min_churn_auc_gain: float = 0.0
    min_value_gini_gain: float = 0.0
    max_brier_increase: float = 0.0


class RetrainConfig(Section):
    """`retrain:` when `diamond retrain` trains (training.retrain)."""

    every_days: Annotated[float, Field(gt=0)] | None = 30.0  # the newest version's age; None: no schedule
    on_drift: bool = True  # the latest batch run raised a model-health alert on the champion

    @field_validator("every_days", mode="before")
    @classmethod
    def _not_a_flag(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a positive number of days or null")
        return value


class RollingConfig(Section):
    """`rolling:` what `diamond backtest --rolling` runs when no --cutoff / --horizon is given
    (training.rolling)."""

    horizons_days: Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1)] = (91, 182, 273)
    every_months: Annotated[int, Field(ge=1, le=12)] = 3  # month ends whose month is a multiple of this


class ParityConfig(Section):
    """`parity:` when the model report flags a segment (training.segments)."""

    min_customers: Annotated[int, Field(ge=1)] = 200  # smaller segments are shown, never flagged
    max_auc_drop: Annotated[float, Field(ge=0)] = 0.05  # churn ROC-AUC below the window's by more than this
    max_calibration_gap: Annotated[float, Field(ge=0)] = 0.05  # |mean P(churn) - churn rate| above this
    max_value_error: Annotated[float, Field(ge=0)] = 0.25  # |predicted total / realised total - 1| above
    max_levels: Annotated[int, Field(ge=1)] = 20  # per attribute: the largest levels; the rest is "other"


class ContractConfig(Section):
    """`contract:` the cancellation hazard of customers under contract (training.contract)."""

    enabled: bool = True  # false: subscribers are scored by purchase silence like everybody else
    periods: Annotated[int, Field(ge=1)] = 12  # month ends stacked as 30-day person-periods
    # auto: when the churn booster learns H-day labels (churn_labels: full), their labels for customers under
    # contract are their cancellations, so it scores them too, with a level of their own; hazard: always the
    # hazard model
    scorer: Literal["auto", "hazard"] = "auto"


class LevelsConfig(Section):
    """`levels:` which complete window recalibrates the churn and value levels (training.levels)."""

    window: Literal["seasonal", "seasonal_or_latest", "latest", "none"] = "seasonal"
    # subscribers scored by the churn booster (contract.scorer: auto): their own shift is fitted on their rows
    # pooled over the latest this many complete H-windows and the levels' window (1: that window alone)
    contract_windows: Annotated[int, Field(ge=1)] = 12


Cost = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ValueConfig(Section):
    """`value:` what the value model predicts (features.value): revenue, or margin minus cost-to-serve."""

    target: Literal["revenue", "margin"] = "revenue"
    cost_to_serve: Annotated[dict[str, Cost], OrEmpty] = Field(default_factory=dict)  # per interaction type

    def spec(self) -> ValueTarget:
        """The target as the labels and the artefact take it."""
        return ValueTarget(self.target, dict(self.cost_to_serve))


class TrainingConfig(FileSettings):
    """How models are trained and validated. Every key is documented in training.yaml."""

    model_config = SettingsConfigDict(env_prefix="DIAMOND_TRAINING_")

    feature_set: str = "auto"  # auto: core_v1 if the history has more than transactions, else rfm_v1
    horizon_days: Annotated[int, Field(ge=1)] = 273  # H: predictions answer for (T, T + H]
    label_horizon_days: Annotated[int, Field(ge=1)] = 91  # h: the horizon models are trained on (docs)
    origins: Annotated[int, Field(ge=1)] = 4  # training cutoffs: month ends whose labels end by the cutoff
    # churn labels: full = H-day labels when the history holds `churn_origins` month ends whose H-day labels
    # end by T (else short); short = h-day labels bridged to H by BG/NBD (the design before issue 16)
    churn_labels: Literal["full", "short"] = "full"
    churn_origins: Annotated[int, Field(ge=1)] = 8  # month ends stacked for full-horizon churn labels
    # value labels: full = where the churn model learns H-day labels itself, the value model learns them too,
    # at the same origins and on the same columns (the customer's age included); short = h-day labels at the
    # `origins` month ends, mapped to H by BG/NBD
    value_labels: Literal["full", "short"] = "full"
    # value model: hurdle = P(any value over the label horizon) x E[value | any] (two boosters), single = one
    # booster of everybody's value with an objective from `value_objectives` (docs/training.md)
    value_model: Literal["hurdle", "single"] = "hurdle"
    min_history_days: int = 60  # the first origin has at least this much history behind it
    exclude_features: Names = AGE_FEATURES  # values that grow with customer age
    # excluded features the churn model (and a value model on its labels) keeps where it learns H-day labels
    # itself (docs/training.md)
    churn_keep_features: Names = ("tenure_days", "signup_tenure_days")
    seed: int = 0
    n_jobs: int = 1  # XGBoost threads: 1 is deterministic and never stalls on a busy machine
    trials: Annotated[int, Field(ge=1)] = 20  # Optuna trials per model
    timeout_s: float = 600.0  # Optuna time budget per model
    value_objectives: Annotated[Names, Field(min_length=1)] = (
        "count:poisson",
        "reg:tweedie",
        "reg:squarederror",
    )
    xgboost: Annotated[XGBoostStart, OrEmpty] = XGBoostStart()
    search: Annotated[dict[str, Range], OrEmpty] = Field(default_factory=dict)  # Optuna's ranges (tuning)
    tiers: dict[str, Annotated[float, Field(ge=0)] | None] = Field(
        default_factory=lambda: dict(DEFAULT_SHARES)  # training.tiers
    )
    gate: Annotated[GateConfig, OrEmpty] = GateConfig()
    retrain: Annotated[RetrainConfig, OrEmpty] = RetrainConfig()
    rolling: Annotated[RollingConfig, OrEmpty] = RollingConfig()
    parity: Annotated[ParityConfig, OrEmpty] = ParityConfig()
    contract: Annotated[ContractConfig, OrEmpty] = ContractConfig()
    levels: Annotated[LevelsConfig, OrEmpty] = LevelsConfig()
    value: Annotated[ValueConfig, OrEmpty] = ValueConfig()

    @field_validator("churn_keep_features")
    @classmethod
    def _known_features(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from features.definitions import REGISTRY  # every feature a set can hold

        unknown = [n for n in names if n not in REGISTRY]
        if unknown:  # a typo would otherwise keep nothing, silently
            raise ValueError(f"not features: {', '.join(unknown)}")
        return names

    @field_validator("tiers")
    @classmethod
    def _shares(cls, tiers: dict[str, float | None]) -> dict[str, float | None]:
        if len(tiers) < 2 or sum(s or 0.0 for s in tiers.values()) >= 1:
            raise ValueError("need two or more names and shares (best first) that sum below 1")
        return tiers

    @field_validator("search")
    @classmethod
    def _in_space(cls, search: dict[str, Range]) -> dict[str, Range]:
        from training.tuning import SPACE  # Optuna's search space, with its default ranges

        invalid(
            TrainingConfig,
            [
                ((name,), f"not one of the searched parameters {', '.join(SPACE)}", name)
                for name in search
                if name not in SPACE
            ]
            + [
                ((name,), f"must be [low, high] with low <= high, got {list(r)}", list(r))
                for name, r in search.items()
                if r[0] > r[1]
            ],
        )
        return search

    @classmethod
    def load(cls, path: str | Path | None = None) -> TrainingConfig:
        """Read `path` (default: the project's training.yaml; built-in defaults if it is absent), the
        environment on top."""
        return load(cls, path, default=DEFAULT_PATH, what="training config")
