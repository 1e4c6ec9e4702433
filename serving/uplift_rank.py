"""The priority of an alert: which ones to work first when the team cannot work them all (docs/effect.md,
Uplift ranking).

Until an uplift model is champion (training.uplift), the priority is the value at risk, P(churn) x predicted
value: who is likely to leave, weighted by what they are worth. With one, it is the expected incremental
value saved by acting: tau(x) x predicted value - the playbook's cost, where tau(x) is the change in
P(saved) the model expects from acting on this customer's alert (inputs as at the alert's opening run). A
customer who has already gone, or whom no call moves, gets a priority near minus the cost, however much is
at risk. Pure: the caller loads the model (`training.uplift.load_champion`) and the costs
(`serving.effect.playbook_costs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from training.uplift import UpliftModel


def priority(candidates: pd.DataFrame, model: UpliftModel | None, costs: Mapping[str, float]) -> pd.Series:
    """One priority per candidate alert (same index), higher first: `value_at_risk` without a model, else
    uplift x `predicted_value` - the cost of the candidate's tier (0 for a tier not in `costs`). The model
    reads its inputs from the candidate's columns (missing ones are missing values)."""
    if model is None:
        return pd.Series(candidates["value_at_risk"].to_numpy(dtype=np.float64), index=candidates.index)
    tau = model.predict(candidates)
    value = candidates["predicted_value"].to_numpy(dtype=np.float64)
    tiers = candidates["tier"] if "tier" in candidates.columns else pd.Series("", index=candidates.index)
    cost = np.array([float(costs.get(str(t), 0.0)) for t in tiers], dtype=np.float64)
    return pd.Series(tau * value - cost, index=candidates.index)
