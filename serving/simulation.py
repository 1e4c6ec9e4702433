"""The simulation's bookkeeping (docs/effect.md, Simulation): what the retention world
(features/datasets/world.py) says really happened, to check `diamond effect` and the uplift ranking against.

- `potential_outcomes`: for episodes (customer, opened_at) of runs, the outcome (serving.outcomes, by the
  same definition as the stored ones) in the world with an action at the episode's opening and in the world
  without it, every other action held as it was. Both come from the same drawn futures, so their difference
  is the episode's exact effect.
- `true_effect`: summed over the episodes that were acted on, what the estimate of `diamond effect`
  estimates (intention to treat: an alert nobody worked has no effect).
- `expected_outcomes`: the same episodes' *expected* outcomes with and without the action (the world's mean
  over everything not decided at the opening: the dropout draw, future complaints and purchases, given the
  customer's state then; features.datasets.world.World.expected). One realised draw of a saved/lost outcome
  is mostly noise at an effect of about one point; the expectation is what a ranking can be judged on.
- `top_k`, `compare`: at a capacity of k alerts, what a ranking would have saved (true incremental saves and
  value, realised and expected).

`diamond simulate` (diamond/flows.py) runs the loop: history to T -> `diamond score` -> the world acts on the
treated alerts -> history to the next T -> ...
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from features.datasets.world import ACTION_DELAY, EXPECTED_COLUMNS, World, actions_frame
from serving import outcomes

POTENTIAL_COLUMNS = ["saved_if_treated", "saved_if_not", "value_if_treated", "value_if_not"]


def action_times(opened_at: pd.Series) -> pd.Series:
    """When the action for an alert opened by a run at as_of T starts: T + ACTION_DELAY."""
    return pd.to_datetime(opened_at) + pd.Timedelta(ACTION_DELAY)


def potential_outcomes(
    world: World, actions: pd.DataFrame, episodes: pd.DataFrame, horizon_days: int
) -> pd.DataFrame:
    """`episodes` (customer_id, opened_at) with POTENTIAL_COLUMNS added: saved (0/1) and value after, over
    (T0, T0 + horizon], with an action at T0 + ACTION_DELAY and without one, the other `actions`
    (customer_id, at) held as they are. Whether the episode was acted on does not matter here."""
    out = episodes.reset_index(drop=True).copy()
    for col in POTENTIAL_COLUMNS:
        out[col] = np.nan
    if out.empty:
        return out
    acts = actions.copy() if actions is not None else actions_frame([], [])
    acts["at"] = pd.to_datetime(acts["at"])
    for t0, rows in out.groupby(pd.to_datetime(out["opened_at"])):
        when = pd.Timestamp(t0) + pd.Timedelta(ACTION_DELAY)
        ids = set(rows["customer_id"].astype(str))
        mine = acts["customer_id"].astype(str).isin(ids) & (acts["at"] == when)
        without = acts[~mine]
        with_ = pd.concat([without, actions_frame(sorted(ids), [when.to_pydatetime()] * len(ids))])
        end = pd.Timestamp(t0).to_pydatetime() + timedelta(days=horizon_days)
        ep = rows[["customer_id", "opened_at"]].assign(horizon_days=horizon_days)
        for suffix, acting in (("if_treated", with_), ("if_not", without)):
            tx = world.history(acting, end)["transactions"].select(["customer_id", "timestamp", "amount"])
            done = outcomes.compute(ep, tx.to_pandas(), end)
            out.loc[rows.index, f"saved_{suffix}"] = (done["outcome"] == "saved").to_numpy(dtype=float)
            out.loc[rows.index, f"value_{suffix}"] = done["value_after"].to_numpy(dtype=float)
    out["effect_saved"] = out["saved_if_treated"] - out["saved_if_not"]
    out["effect_value"] = out["value_if_treated"] - out["value_if_not"]
    return out


def expected_outcomes(
    world: World, actions: pd.DataFrame, episodes: pd.DataFrame, horizon_days: int
) -> pd.DataFrame:
    """`episodes` (customer_id, opened_at) with EXPECTED_COLUMNS and `expected_effect_saved`,
    `expected_effect_value` added: the world's expected outcome over (T0, T0 + horizon] with an action at
    T0 + ACTION_DELAY and without one, given each customer's state at T0 under the other `actions` (the
    actions of the episode's own run on these customers are left out; later ones do not enter the window
    when the horizon is the period)."""
    out = episodes.reset_index(drop=True).copy()
    for col in EXPECTED_COLUMNS:
        out[col] = np.nan
    if not out.empty:
        acts = actions.copy() if actions is not None else actions_frame([], [])
        acts["at"] = pd.to_datetime(acts["at"])
        for t0, rows in out.groupby(pd.to_datetime(out["opened_at"])):
            when = pd.Timestamp(t0) + pd.Timedelta(ACTION_DELAY)
            ids = rows["customer_id"].astype(str)
            mine = acts["customer_id"].astype(str).isin(set(ids)) & (acts["at"] == when)
            done = world.expected(acts[~mine], ids.tolist(), pd.Timestamp(t0).to_pydatetime(), horizon_days)
            out.loc[rows.index, EXPECTED_COLUMNS] = done.to_numpy()
    out["expected_effect_saved"] = out["expected_saved_if_treated"] - out["expected_saved_if_not"]
    out["expected_effect_value"] = out["expected_value_if_treated"] - out["expected_value_if_not"]
    return out


def true_effect(potential: pd.DataFrame, acted: pd.Series) -> dict[str, float]:
    """The true incremental saves and value of the episodes acted on (`acted`, aligned with `potential`),
    and how many there were."""
    on = acted.to_numpy(dtype=bool)
    return {
        "episodes": float(on.sum()),
        "incremental_saved": float(potential["effect_saved"].to_numpy()[on].sum()),
        "incremental_value": float(potential["effect_value"].to_numpy()[on].sum()),
    }


def top_k(potential: pd.DataFrame, priority: pd.Series, k: int) -> dict[str, float]:
    """What working the k candidates of highest `priority` (aligned with `potential`; ties in row order)
    really saves: the sum of their true effects (saves and value after, realised: `saved`, `value`; and
    expected, `expected_saved`, `expected_value`, when `potential` has them)."""
    order = np.argsort(-priority.to_numpy(dtype=np.float64), kind="stable")[: max(k, 0)]
    out = {"k": float(len(order))}
    for name, col in (
        ("saved", "effect_saved"),
        ("value", "effect_value"),
        ("expected_saved", "expected_effect_saved"),
        ("expected_value", "expected_effect_value"),
    ):
        if col in potential.columns:
            out[name] = float(potential[col].to_numpy(dtype=np.float64)[order].sum())
    return out


def compare(potential: pd.DataFrame, rankings: dict[str, pd.Series], capacities: list[int]) -> pd.DataFrame:
    """Every ranking (name -> priority aligned with `potential`) at every capacity k, the same k for all:
    one row per (k, ranking) with `top_k`'s sums."""
    rows = [
        {"k_capacity": k, "ranking": name, **top_k(potential, prio, k)}
        for k in capacities
        for name, prio in rankings.items()
    ]
    return pd.DataFrame(rows)


def within(estimate: float, low: float, high: float, truth: float) -> bool:
    """Whether the truth lies in the estimate's interval (False when the interval is missing)."""
    return bool(np.isfinite(low) and np.isfinite(high) and low <= truth <= high)


def schedule(first: datetime, periods: int, period_days: int) -> list[datetime]:
    """The as_of of each scoring run: `first`, then every `period_days`; ValueError when the last outcome
    window would end after the world does."""
    from features.datasets.world import END

    if periods < 1:
        raise ValueError(f"simulate: periods must be at least 1, got {periods}")
    times = [first + timedelta(days=period_days * i) for i in range(periods)]
    if times[-1] + timedelta(days=period_days) > END:
        raise ValueError(
            f"simulate: {periods} periods of {period_days} days from {first:%Y-%m-%d} end after the world "
            f"does ({END:%Y-%m-%d}); use fewer periods or an earlier --first"
        )
    return times
