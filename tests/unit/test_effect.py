"""Outcomes, control assignment and the effect table as pure functions on hand-built frames, every expected
value worked out by hand (the store side is tests/integration/test_effect.py)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from core.config import ConfigError
from serving.config import ServingConfig
from serving.control import drawn, unit
from serving.effect import newcombe, playbook_costs, report, wilson
from serving.outcomes import compute
from tests.helpers.effect import load_serving
from tests.helpers.frames import ALERTS_YAML, T0, alert_config
from training.tiers import DEFAULT_TIERS

D = timedelta(days=1)
END = datetime(2024, 7, 15)  # the history's end: T0 + 44 days


def _episodes(*rows: tuple[str, datetime]) -> pd.DataFrame:
    return pd.DataFrame(
        {"customer_id": [r[0] for r in rows], "opened_at": [r[1] for r in rows], "horizon_days": 30}
    )


def _tx(*rows: tuple[str, datetime, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])


# --- outcomes -----------------------------------------------------------------------------------------------


def test_outcomes_by_silence_saved_at_the_first_purchase_lost_when_the_window_ran_out_else_pending() -> None:
    late = T0 + 19 * D  # window to T0 + 49 d, past the history's end
    eps = _episodes(("a", T0), ("b", T0), ("c", late), ("d", late), ("e", T0), ("f", datetime(2024, 8, 1)))
    tx = _tx(
        ("a", T0 + 10 * D, 50.0),  # the first purchase: saved after 10 days
        ("a", T0 + 19 * D, -10.0),  # a refund counts in the value, not as a purchase
        ("a", T0 + 34 * D, 999.0),  # after the window (T0 + 30 d): not counted
        ("b", T0 + 4 * D, -20.0),  # only a refund: no purchase in the window, lost at T0 + 30 d
        ("d", T0 + 39 * D, 30.0),  # 20 days after its alert: saved though the window is not complete
        ("e", T0, 100.0),  # at the alert's own time: before it, not after
        ("e", T0 + 30 * D, 5.0),  # on the window's last instant: inside
        ("f", datetime(2024, 8, 2), 70.0),  # after the history's end: not seen
    )
    got = compute(eps, tx, END).set_index("customer_id")
    assert got["outcome"].to_dict() == {
        "a": "saved", "b": "lost", "c": "pending", "d": "saved", "e": "saved", "f": "pending"
    }  # fmt: skip
    assert got["days_to_outcome"].to_dict() == pytest.approx(
        {"a": 10.0, "b": 30.0, "c": math.nan, "d": 20.0, "e": 30.0, "f": math.nan}, nan_ok=True
    )
    assert got["value_after"].to_dict() == {"a": 40.0, "b": -20.0, "c": 0.0, "d": 30.0, "e": 5.0, "f": 0.0}
    assert got["mature"].to_dict() == {"a": True, "b": True, "c": False, "d": False, "e": True, "f": False}
    assert got.loc["b", "outcome_at"] == T0 + 30 * D and got.loc["a", "outcome_at"] == T0 + 10 * D
    assert got.loc["c", "observed_until"] == END and got.loc["f", "observed_until"] == datetime(2024, 8, 1)
    assert pd.isna(got.loc["c", "outcome_at"])


def test_outcomes_by_cancellation_lost_at_the_first_one_saved_when_the_window_ran_out() -> None:
    eps = _episodes(("g", T0), ("h", T0), ("i", T0 + 19 * D), ("k", T0))
    cx = pd.DataFrame({"customer_id": ["g", "g", "k"], "timestamp": [T0 + 14 * D, T0 + 20 * D, T0 + 31 * D]})
    tx = _tx(("h", T0 + 5 * D, 12.0), ("k", T0 + 2 * D, 8.0))
    got = compute(eps, tx, END, cx, contract={"g", "h", "i"}).set_index("customer_id")
    # k is judged by silence (not a contract customer): its purchase saves it, the later cancellation is
    # outside its window anyway
    assert got["outcome"].to_dict() == {"g": "lost", "h": "saved", "i": "pending", "k": "saved"}
    assert got["days_to_outcome"].to_dict() == pytest.approx(
        {"g": 14.0, "h": 30.0, "i": math.nan, "k": 2.0}, nan_ok=True
    )
    assert got["value_after"].to_dict() == {"g": 0.0, "h": 12.0, "i": 0.0, "k": 8.0}


def test_a_history_that_does_not_reach_past_the_alerts_says_pending_never_lost() -> None:
    eps = _episodes(("a", T0), ("b", T0), ("c", T0 + 5 * D))
    for end in (T0 - 3 * D, T0, T0 + 29 * D):  # before the alerts, at them, a day short of the window's end
        got = compute(eps, _tx(("a", T0 - D, 10.0)), end)
        assert set(got["outcome"]) == {"pending"}, end
        assert not got["mature"].any() and (got["value_after"] == 0.0).all()
        cont = compute(eps, _tx(), end, pd.DataFrame(columns=["customer_id", "timestamp"]), {"a", "b", "c"})
        assert set(cont["outcome"]) == {"pending"}, end


# --- control assignment -------------------------------------------------------------------------------------


def test_assignment_numbers_are_fixed_values_of_customer_rule_and_opening_run() -> None:
    # pinned: a change to the hash would reshuffle every stored arm
    assert unit("a", "at-risk", T0) == pytest.approx(0.48168763758717087, abs=1e-15)
    assert unit("b", "at-risk", T0) == pytest.approx(0.026920544381393186, abs=1e-15)
    assert unit("h", "at-risk", T0) == pytest.approx(0.010701579416804002, abs=1e-15)
    assert unit("a", "at-risk", T0) == unit("a", "at-risk", T0)  # the same run again: the same number
    assert unit("a", "at-risk", T0 + D) != unit("a", "at-risk", T0)
    assert unit("a", "tier-drop", T0) != unit("a", "at-risk", T0)
    ids = pd.Series(list("abcdefgh"))
    # units a .482, b .027, c .328, d .125, e .536, f .864, g .138, h .011: below 0.13 are b, d and h
    held = drawn(ids, pd.Series(["at-risk"] * 8), T0, np.full(8, 0.13))
    assert list(ids[held]) == ["b", "d", "h"]
    assert not drawn(ids, pd.Series(["at-risk"] * 8), T0, np.zeros(8)).any()


def test_control_shares_per_rule_and_tier_with_the_section_default() -> None:
    config = alert_config(
        {"kind": "at-risk", "min_tier": "gold", "control_share": {"diamond": 0.05}},
        {"kind": "drop", "tier_drop": 2, "control_share": 0.2},
        {"kind": "top", "top_k_value_at_risk": 5},
        control_share=0.1,
    )
    shares = config.control_shares()
    assert shares[("at-risk", "diamond")] == 0.05 and shares[("at-risk", "gold")] == 0.1
    assert shares[("drop", "bronze")] == 0.2 and shares[("top", "silver")] == 0.1
    assert set(alert_config().control_shares().values()) == {0.0}  # off unless configured


def test_a_bad_control_share_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"rules\.0\.control_share\.platinum"):
        alert_config({"kind": "x", "min_tier": "gold", "control_share": {"platinum": 0.1}})
    with pytest.raises(ValidationError, match="control_share"):
        alert_config(control_share=1.0)  # everyone held out: nobody would ever be alerted


# --- costs --------------------------------------------------------------------------------------------------


def _serving(tmp_path: Path, costs: dict[str, object]) -> ServingConfig:
    alerts = yaml.safe_load(ALERTS_YAML)["alerts"]
    for tier, cost in costs.items():
        alerts["playbooks"][tier]["cost"] = cost
    return load_serving(tmp_path, alerts)


def test_a_negative_playbook_cost_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"alerts\.playbooks\.gold\.cost"):
        _serving(tmp_path, {"diamond": 40, "gold": -5, "silver": 1})


def test_a_missing_playbook_cost_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = _serving(tmp_path, {"diamond": 40, "gold": 8})
    assert config.alerts is not None
    with pytest.raises(ConfigError, match=r"alerts\.playbooks\.silver\.cost: missing"):
        playbook_costs(config.alerts, DEFAULT_TIERS)
    full = _serving(tmp_path, {"diamond": 40, "gold": 8, "silver": 0.5}).alerts
    assert full is not None
    assert playbook_costs(full, DEFAULT_TIERS) == {"diamond": 40.0, "gold": 8.0, "silver": 0.5, "bronze": 0.0}


# --- the effect table ---------------------------------------------------------------------------------------


def test_wilson_and_newcombe_match_the_published_values() -> None:
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    # Newcombe (1998), Statistics in Medicine 17, table II, method 10
    assert newcombe(56, 70, 48, 80) == pytest.approx((0.2, 0.0524, 0.3339), abs=1e-4)
    assert newcombe(9, 10, 3, 10) == pytest.approx((0.6, 0.1705, 0.8090), abs=1e-4)
    assert newcombe(5, 56, 0, 29) == pytest.approx((0.0893, -0.0381, 0.1926), abs=1e-4)
    assert all(math.isnan(x) for x in newcombe(1, 2, 0, 0))


def _outcomes(*rows: tuple[str, str, str, str, float, bool, datetime]) -> pd.DataFrame:
    """(arm, customer, tier, outcome, value_after, mature, opened_at) -> stored outcome rows, kind at-risk."""
    return pd.DataFrame(
        {
            "arm": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "tier": [r[2] for r in rows],
            "kind": "at-risk",
            "playbook": [{"gold": "email", "diamond": "call"}[r[2]] for r in rows],
            "outcome": [r[3] for r in rows],
            "value_after": [r[4] for r in rows],
            "mature": [r[5] for r in rows],
            "opened_at": [r[6] for r in rows],
        }
    )


SECOND = T0 + 30 * D
CASE = _outcomes(
    # run 1, gold: treated 3 saved of 4 (values 100, 50, 80, 0); control 1 of 2 (60, 0)
    ("treated", "t1", "gold", "saved", 100.0, True, T0),
    ("treated", "t2", "gold", "saved", 50.0, True, T0),
    ("treated", "t3", "gold", "saved", 80.0, True, T0),
    ("treated", "t4", "gold", "lost", 0.0, True, T0),
    ("control", "c1", "gold", "saved", 60.0, True, T0),
    ("control", "c2", "gold", "lost", 0.0, True, T0),
    # run 1, diamond: treated 1 of 1 (200), no control
    ("treated", "t5", "diamond", "saved", 200.0, True, T0),
    # run 2, gold: treated 1 of 2 (40, 0); control 0 of 1; one treated still pending (not compared)
    ("treated", "t6", "gold", "saved", 40.0, True, SECOND),
    ("treated", "t7", "gold", "lost", 0.0, True, SECOND),
    ("control", "c3", "gold", "lost", 0.0, True, SECOND),
    ("treated", "t8", "gold", "saved", 30.0, False, SECOND),
)
COSTS = {"diamond": 50.0, "gold": 10.0, "silver": 1.0, "bronze": 0.0}


def test_the_effect_table_on_a_hand_built_case() -> None:
    table = report(CASE, COSTS)
    row = table.set_index(["scope", "run", "tier"])
    gold = row.loc[("run", T0, "gold")]
    assert (gold["treated"], gold["treated_saved"], gold["control"], gold["control_saved"]) == (4, 3, 2, 1)
    assert (gold["treated_rate"], gold["control_rate"], gold["difference"]) == pytest.approx(
        (0.75, 0.5, 0.25)
    )
    assert (gold["difference_low"], gold["difference_high"]) == pytest.approx(newcombe(3, 4, 1, 2)[1:])
    assert gold["incremental_saved"] == pytest.approx(1.0)  # 0.25 * 4
    # mean value: treated 230 / 4 = 57.5, control 60 / 2 = 30: 27.5 * 4 = 110; cost 4 * 10 = 40
    assert gold["incremental_value"] == pytest.approx(110.0)
    # sd: treated var = ((42.5² + 7.5² + 22.5² + 57.5²) / 3) = 5675 / 3; control var = 1800
    se = math.sqrt(5675 / 3 / 4 + 1800 / 2)
    assert gold["incremental_value_low"] == pytest.approx(110.0 - 1.959963984540054 * se * 4)
    assert (gold["cost"], gold["roi"]) == pytest.approx((40.0, 1.75))  # (110 - 40) / 40
    diamond = row.loc[("run", T0, "diamond")]  # no control: no comparison, the cost is still counted
    assert diamond["treated"] == 1 and diamond["control"] == 0 and math.isnan(diamond["difference"])
    assert diamond["cost"] == 50.0 and math.isnan(diamond["roi"])

    second = row.loc[("run", SECOND, "gold")]
    assert (second["treated"], second["treated_saved"], second["control"], second["pending"]) == (2, 1, 1, 1)
    assert second["incremental_value"] == pytest.approx(40.0)  # (20 - 0) * 2
    # cumulative gold: treated 4 of 6 saved (270), control 1 of 3 (60): (2/3 - 1/3) * 6 = 2 saved; value
    # (45 - 20) * 6 = 150; cost 60; ROI 1.5
    total = table[(table["scope"] == "cumulative") & (table["tier"] == "gold")].iloc[0]
    assert (total["treated"], total["treated_saved"], total["control"], total["control_saved"]) == (
        6,
        4,
        3,
        1,
    )
    assert total["incremental_saved"] == pytest.approx(2.0)
    assert (total["incremental_value"], total["cost"], total["roi"]) == pytest.approx((150.0, 60.0, 1.5))
    through = table[(table["scope"] == "through") & (table["run"] == SECOND) & (table["tier"] == "gold")]
    assert through.iloc[0]["treated"] == 6  # through the second run: both runs
    everything = table[(table["scope"] == "cumulative") & (table["tier"] == "(all)")].iloc[0]
    # all tiers: treated 5 of 7 (470), control 1 of 3 (60): (5/7 - 1/3) * 7 = 8/3; value (470/7 - 20) * 7
    assert everything["incremental_saved"] == pytest.approx(8 / 3)
    assert everything["incremental_value"] == pytest.approx(470.0 - 140.0)
    assert (everything["cost"], everything["pending"]) == (110.0, 1)


def test_the_effect_table_refuses_a_tier_without_a_cost() -> None:
    with pytest.raises(ConfigError, match="diamond"):
        report(CASE, {"gold": 10.0})
    assert report(CASE.iloc[:0], COSTS).empty
