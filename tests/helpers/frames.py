"""Hand-built tables shared by a module's pure tests (tests/unit) and its store tests (tests/integration)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.history import History, history_from_frames
from serving.config import AlertConfig
from training.tiers import DEFAULT_TIERS

T0 = datetime(2024, 6, 1)
H = timedelta(hours=1)

# --- alerts -------------------------------------------------------------------------------------------------

ALERTS_YAML = """
alerts:
  cooldown_hours: 48          # re-notify a live alert at most every 48 h...
  renotify_margin: 0.25       # ...unless its value at risk grew by 25 % since it was last notified
  resolve_margin: 0.05        # stay open until churn probability < threshold - 0.05
  rules:
    - kind: at-risk
      min_tier: gold
      min_churn_probability: 0.6
  playbooks:
    diamond: {text: account manager call, due_within_hours: 24}
    gold: {text: personal email with offer, due_within_hours: 72}
    silver: {text: automated win-back campaign, due_within_hours: 168}
    bronze: null
"""


def alert_config(*rules: dict[str, Any], **settings_: Any) -> AlertConfig:
    """ALERTS_YAML, with other rules and settings."""
    raw = yaml.safe_load(ALERTS_YAML)["alerts"]
    if rules:
        raw["rules"] = list(rules)
    raw.update(settings_)
    return AlertConfig.model_validate(raw).for_tiers(DEFAULT_TIERS)


AT_RISK = alert_config()


def score_table(*rows: tuple[str, str, float, float]) -> pd.DataFrame:
    """(customer_id, tier, churn_probability, predicted_value) -> a score table."""
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "tier": [r[1] for r in rows],
            "churn_probability": [r[2] for r in rows],
            "predicted_value": [r[3] for r in rows],
            "value_at_risk": [r[2] * r[3] for r in rows],
            "reasons": [[f"reason of {r[0]}"] for r in rows],
        }
    )


# var: a 700, b 295, e 195, c 180, d 10
SCORES = score_table(
    ("a", "diamond", 0.7, 1000.0),
    ("b", "gold", 0.59, 500.0),
    ("c", "silver", 0.9, 200.0),
    ("d", "bronze", 0.2, 50.0),
    ("e", "gold", 0.65, 300.0),
)


# --- tiers --------------------------------------------------------------------------------------------------

TIERS = ["diamond", "gold", "silver", "bronze"]


def raw_tiers(**tiers: str) -> pd.DataFrame:
    """customer_id=raw tier, ... -> the raw tiers of one scoring run."""
    return pd.DataFrame({"customer_id": list(tiers), "tier_raw": list(tiers.values())})


def by_id(frame: pd.DataFrame) -> dict[str, dict[str, object]]:
    return {r["customer_id"]: r for r in frame.to_dict("records")}


# --- histories ----------------------------------------------------------------------------------------------


def end_of_day(y: int, m: int, d: int) -> datetime:
    """The last instant of a day: month-end cutoffs as training spells them."""
    return datetime(y, m, d, 23, 59, 59, 999999)


def weekly_history() -> History:
    """One customer, one purchase a week, 2020-01-01 to 2021-06-30 (the declared end)."""
    days = pd.date_range("2020-01-01", "2021-06-30", freq="7D")
    tx = pd.DataFrame({"customer_id": "a", "timestamp": days, "amount": 10.0})
    return history_from_frames(tx, as_of=end_of_day(2021, 6, 30))


# --- uplift -------------------------------------------------------------------------------------------------


def known_effect(n: int, seed: int, effect: float = 0.4, value: bool = True) -> pd.DataFrame:
    """Outcomes with a known uplift: half treated at random; P(saved) = 0.3 for everyone untreated, 0.3 +
    `effect` for treated customers of segment "b" (and x2 = noise): the true uplift is `effect` for segment
    b and 0 for segment a. With `value`, value_after is noise (drawn last: the other columns are the same)."""
    rng = np.random.default_rng(seed)
    seg = np.where(rng.random(n) < 0.5, "a", "b")
    treated = rng.random(n) < 0.5
    p = 0.3 + effect * (treated & (seg == "b"))
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "segment": seg,
            "x2": rng.normal(size=n),
            "treated": treated,
            "saved": (rng.random(n) < p).astype(int),
        }
    )
    return frame.assign(value_after=rng.random(n)) if value else frame
