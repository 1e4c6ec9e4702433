"""Rolling backtests: the classic backtest (training.pipeline.backtest) repeated over several cutoffs and
horizons, so a model's quality is known at more than one point in time.

Pure planning and summaries; `diamond.flows.rolling_backtest` runs the backtests and logs them.

- **Cutoffs**: a given list, or every month end whose month is a multiple of `rolling.every_months`
  (3: quarter ends) with complete labels over (T, T + H] and enough training origins before T.
- **Horizons**: given, or `rolling.horizons_days` from training.yaml.
- **Summary**: one row per (horizon, cutoff) with the holdout metrics of the model (nothing for a cutoff
  whose labels are not complete yet), and the worst value of each metric over the scored rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from features.build import end_of, monthly_cutoffs, parse_cutoffs
from features.history import History
from training import design
from training.config import TrainingConfig

SUMMARY_METRICS = (
    "churn_auc",
    "churn_brier",
    "churn_rate",
    "churn_mean_probability",
    "value_gini",
    "value_aggregate_error",
    "value_decile_mape",
)
# metric -> how its worst value is found: lowest, highest, or largest in absolute value
WORST = {
    "churn_auc": "min",
    "churn_brier": "max",
    "value_gini": "min",
    "value_aggregate_error": "abs",
    "value_decile_mape": "max",
}


def feasible(history: History, cutoff: datetime, horizon_days: int, config: TrainingConfig) -> bool:
    """Whether a backtest at `cutoff` has the training origins it needs (training.design)."""
    h = min(config.label_horizon_days, horizon_days)
    try:
        design.training_origins(history, cutoff, h, config.origins, config.min_history_days)
    except ValueError:
        return False
    return True


def default_cutoffs(history: History, horizon_days: int, config: TrainingConfig) -> list[datetime]:
    """Month ends every `rolling.every_months` months whose labels over (T, T + H] are complete and which
    have enough training origins before them, oldest first."""
    every = config.rolling.every_months
    ends = monthly_cutoffs(history, horizon_days, config.min_history_days)
    return [t for t in ends if t.month % every == 0 and feasible(history, t, horizon_days, config)]


def plan(
    history: History,
    cutoffs: Sequence[str | datetime] | None,
    horizons_days: Sequence[int] | None,
    config: TrainingConfig,
) -> list[tuple[int, datetime]]:
    """The (horizon, cutoff) pairs to backtest, by horizon then cutoff. Given cutoffs are used as they are
    (one whose labels are not complete is predicted, not scored); the default ones are `default_cutoffs`."""
    horizons = sorted(set(horizons_days or config.rolling.horizons_days))
    given = parse_cutoffs(cutoffs) if cutoffs else None
    pairs = [(h, t) for h in horizons for t in (given or default_cutoffs(history, h, config))]
    if not pairs:
        raise ValueError(
            f"no cutoff to backtest: no month end every {config.rolling.every_months} months has complete "
            f"labels for horizons {', '.join(f'{h}d' for h in horizons)} in a history ending "
            f"{end_of(history):%Y-%m-%d} and enough history before it; give cutoffs or shorter horizons"
        )
    return pairs


def summary_row(
    horizon_days: int,
    cutoff: datetime,
    customers: int,
    model: dict[str, float | None] | None,
    parity_flags: int | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """One row of the summary: the model's holdout metrics (NaN when the labels are not complete) and how
    many segments the parity check flagged there (training.segments)."""
    row: dict[str, Any] = {"horizon_days": horizon_days, "cutoff": cutoff, "customers": customers}
    row["scored"] = model is not None
    for m in SUMMARY_METRICS:
        value = (model or {}).get(m)
        row[m] = float("nan") if value is None else float(value)
    row["parity_flags"] = parity_flags
    row["run_id"] = run_id
    return row


def summarise(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The summary table, by horizon then cutoff."""
    columns = ["horizon_days", "cutoff", "customers", "scored", *SUMMARY_METRICS, "parity_flags", "run_id"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["horizon_days", "cutoff"], kind="stable").reset_index(drop=True)


def worst(summary: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """For each metric of `WORST`, its worst value over the scored rows and where it happened
    ({metric: {value, horizon_days, cutoff}}); empty when nothing was scored."""
    scored = summary[summary["scored"]]
    out: dict[str, dict[str, Any]] = {}
    for metric, how in WORST.items():
        values = scored[metric].to_numpy(dtype=np.float64)
        if not np.isfinite(values).any():
            continue
        key = np.abs(values) if how == "abs" else values
        i = int(np.nanargmin(key) if how == "min" else np.nanargmax(key))
        row = scored.iloc[i]
        out[metric] = {
            "value": float(values[i]),
            "horizon_days": int(row["horizon_days"]),
            "cutoff": row["cutoff"],
        }
    return out
