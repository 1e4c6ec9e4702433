"""The priority of an alert: which ones to work first when the team cannot work them all (docs/effect.md,
Uplift ranking). The one place alerts are ranked: `serving.alert_rules.evaluate` (every `diamond score`
run), the capacity queues, the alert list and export, and `diamond simulate` all take this number.

Until an uplift model is champion (training.uplift), the priority is the value at risk, P(churn) x predicted
value: who is likely to leave, weighted by what they are worth. With one, it is the expected incremental
value saved by acting: tau(x) x predicted value - the playbook's cost, where tau(x) is the change in
P(saved) the model expects from acting on this customer's alert (inputs as at the alert's opening run); for
a model of the value kept (outcome `value`), tau(x) is already in currency: tau(x) - cost. A customer who
has already gone, or whom no call moves, gets a priority near minus the cost, however much is at risk.
`priority` is pure; `ranker` loads the champion for a scoring run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from training.tracking import MlflowConfig
    from training.uplift import UpliftModel

Ranker = Callable[[pd.DataFrame], np.ndarray]
"""Candidate alerts -> their priority (same order)."""


def priority(
    candidates: pd.DataFrame,
    model: UpliftModel | None = None,
    costs: Mapping[str, float] | None = None,
    kind_costs: Mapping[str, float] | None = None,
) -> pd.Series:
    """One priority per candidate alert (same index), higher first: `value_at_risk` without a model, else
    uplift x `predicted_value` (uplift alone for a value model) - the cost of the candidate's playbook: its
    rule's own (`kind_costs`, by alert kind, e.g. win-back), else its tier's (`costs`; 0 for a tier not in
    it). The model reads its inputs from the candidate's columns (missing ones are missing values)."""
    if model is None:
        return pd.Series(
            candidates["value_at_risk"].to_numpy(dtype=np.float64, na_value=np.nan), index=candidates.index
        )
    tau = model.predict(candidates)
    value = candidates["predicted_value"].to_numpy(dtype=np.float64, na_value=np.nan)
    gain = tau if model.outcome == "value" else tau * value
    tiers = candidates["tier"] if "tier" in candidates.columns else pd.Series("", index=candidates.index)
    cost = np.array([float((costs or {}).get(str(t), 0.0)) for t in tiers], dtype=np.float64)
    if kind_costs and "kind" in candidates.columns:  # a rule's own playbook costs what it says
        own = candidates["kind"].map(lambda k: kind_costs.get(str(k), np.nan)).to_numpy(dtype=np.float64)
        cost = np.where(np.isnan(own), cost, own)
    return pd.Series(gain - cost, index=candidates.index)


def ranker(
    model: UpliftModel | None,
    inputs: pd.DataFrame,
    costs: Mapping[str, float],
    kind_costs: Mapping[str, float] | None = None,
) -> Ranker:
    """The ranking of one scoring run: `priority` with `model` (None: value at risk), the candidates joined
    by customer_id to `inputs` (the run's feature rows) for the model's inputs the score columns lack."""

    def rank(candidates: pd.DataFrame) -> np.ndarray:
        if model is None or candidates.empty:
            return priority(candidates).to_numpy()
        shared = [c for c in inputs.columns if c in candidates.columns and c != "customer_id"]
        extra = inputs.drop(columns=shared).drop_duplicates("customer_id")
        joined = candidates.merge(extra, on="customer_id", how="left")  # one row per candidate, in order
        return priority(joined.set_axis(candidates.index), model, costs, kind_costs).to_numpy()

    return rank


def champion_ranker(
    mlcfg: MlflowConfig | None,
    inputs: pd.DataFrame,
    costs: Mapping[str, float],
    kind_costs: Mapping[str, float] | None = None,
) -> tuple[str | None, Ranker]:
    """(the uplift champion's version or None, the run's ranker): uplift x value - cost when a gated uplift
    model is at the `champion` alias of `<registered_model>-uplift`, else value at risk."""
    if mlcfg is None:
        return None, ranker(None, inputs, costs, kind_costs)
    from training import uplift

    found = uplift.load_champion(mlcfg)
    if found is None:
        return None, ranker(None, inputs, costs, kind_costs)
    return found[0], ranker(found[1], inputs, costs, kind_costs)
