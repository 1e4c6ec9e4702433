"""Capacity queues, the alerts' priority and the win-back rule as pure functions on hand-built frames,
every expected value worked out by hand (the store side: tests/integration/test_effect_capacity.py)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import ConfigError
from serving.alert_rules import evaluate, priority
from serving.capacity import QUEUED, choose, loads, period
from serving.config import AlertConfig, Capacity, ServingConfig
from serving.outcomes import compute
from serving.winback import lapse_of
from tests.helpers.effect import load_serving
from tests.helpers.frames import T0, score_table

D = timedelta(days=1)
TIERS = ("diamond", "gold", "silver", "bronze")


def _capacity(**teams: dict[str, object]) -> Capacity:
    return Capacity(period_days=7, start=date(2024, 6, 3), teams=teams)  # 2024-06-03: a Monday


def _alerts(*rows: tuple[int, str, str, str, datetime | None, float]) -> pd.DataFrame:
    """(id, kind, tier, status, entered_at, priority)"""
    return pd.DataFrame(rows, columns=["id", "kind", "tier", "status", "entered_at", "priority"])


# --- periods, loads, the queue ------------------------------------------------------------------------------


def test_periods_are_counted_from_the_start_day() -> None:
    cap = _capacity(all={"budget": 1})
    # T0 = 2024-06-01 (a Saturday): the week from Monday 2024-05-27
    assert period(T0, cap) == (datetime(2024, 5, 27), datetime(2024, 6, 3))
    assert period(datetime(2024, 6, 3), cap) == (datetime(2024, 6, 3), datetime(2024, 6, 10))
    assert period(datetime(2024, 6, 9, 23, 59), cap)[0] == datetime(2024, 6, 3)
    three = Capacity(period_days=3, start=date(2024, 6, 3), teams={"all": {"budget": 1}})
    assert period(datetime(2024, 6, 8), three) == (datetime(2024, 6, 6), datetime(2024, 6, 9))


def test_the_budget_is_used_by_live_alerts_and_by_those_done_this_period() -> None:
    cap = _capacity(
        accounts={"budget": 3, "tiers": ["diamond", "gold"]}, mass={"budget": 2, "tiers": ["silver"]}
    )
    now = datetime(2024, 6, 5)  # the week of 2024-06-03
    alerts = _alerts(
        (1, "k", "diamond", "acknowledged", datetime(2024, 5, 20), 9.0),  # live, entered weeks ago: counts
        (2, "k", "gold", "resolved", datetime(2024, 6, 4), 8.0),  # entered and done this week: counts
        (3, "k", "gold", "resolved", datetime(2024, 5, 30), 7.0),  # done, entered last week: free again
        (4, "k", "gold", QUEUED, None, 6.0),
        (5, "k", "diamond", QUEUED, None, 50.0),
        (6, "k", "gold", QUEUED, None, 6.0),
        (7, "k", "silver", "open", datetime(2024, 6, 5), 1.0),
        (8, "k", "bronze", QUEUED, None, 0.5),  # no team: enters at once
    )
    got = loads(alerts, now, cap)
    assert (got["accounts"].live, got["accounts"].done, got["accounts"].queued) == (1, 1, 3)
    assert (got["accounts"].used, got["accounts"].free) == (2, 1)
    assert (got["mass"].used, got["mass"].free, got["mass"].queued) == (1, 1, 0)
    # accounts has one free: the highest priority enters (5); ties go to the oldest id; bronze has no team
    assert choose(alerts, now, cap)["id"].tolist() == [5, 8]
    # next week: only the live one counts, 2 free: 4 then 6 (equal priority, lower id first)
    left = alerts[alerts["id"] != 5]
    assert choose(left, datetime(2024, 6, 11), cap)["id"].tolist() == [4, 6, 8]
    # capacity switched off: everything queued enters
    assert choose(alerts, now, None)["id"].tolist() == [5, 4, 6, 8]


def test_a_budget_of_zero_holds_everything() -> None:
    cap = _capacity(all={"budget": 0})
    alerts = _alerts((1, "k", "gold", QUEUED, None, 5.0))
    assert choose(alerts, T0, cap).empty and loads(alerts, T0, cap)["all"].free == 0


def test_the_priority_is_value_at_risk_today() -> None:
    frame = pd.DataFrame({"value_at_risk": [3.0, 700.0]})
    assert priority(frame).tolist() == [3.0, 700.0]


# --- config -------------------------------------------------------------------------------------------------


def _load(tmp_path: Path, capacity: object) -> ServingConfig:
    return load_serving(
        tmp_path, {"rules": [{"kind": "at-risk", "min_churn_probability": 0.5}], "capacity": capacity}
    )


@pytest.mark.parametrize(
    ("capacity", "key"),
    [
        ({"teams": {"a": {"budget": -1}}}, "alerts.capacity.teams.a.budget"),
        ({"teams": {"a": {"budget": "50"}}}, "alerts.capacity.teams.a.budget"),
        ({"teams": {"a": {"budget": True}}}, "alerts.capacity.teams.a.budget"),
        ({"teams": {"a": {"budget": 1.5}}}, "alerts.capacity.teams.a.budget"),
        ({"teams": {"a": {}}}, "alerts.capacity.teams.a.budget"),
        ({"teams": {"a": {"budget": 1, "size": 3}}}, "unknown key.s. alerts.capacity.teams.a.size"),
        ({"teams": {"a": {"budget": 1}}, "period_days": 0}, "alerts.capacity.period_days"),
        ({"teams": {"a": {"budget": 1}}, "period_days": 10**9}, "alerts.capacity.period_days"),
        ({"teams": {"a": {"budget": 1}}, "start": "someday"}, "alerts.capacity.start"),
        ({"teams": {}}, "alerts.capacity.teams"),
        ({"teams": {"<script>": {"budget": 1}}}, "alerts.capacity.teams"),
        ({"teams": {"a": {"budget": 1, "tiers": []}}}, "alerts.capacity.teams.a.tiers"),
        ({"teams": {"a": {"budget": 1, "tiers": ["gold", "gold"]}}}, "alerts.capacity.teams.a.tiers"),
        ({"teams": {"a": {"budget": 1, "kinds": ["nope"]}}}, "alerts.capacity.teams.a.kinds"),
        ({"teams": {"a": {"budget": 1}, "b": {"budget": 1, "tiers": ["gold"]}}}, "alerts.capacity.teams.b"),
        ({"budget": 3}, "alerts.capacity.teams: missing"),
    ],
)
def test_hostile_capacity_settings_are_refused_naming_the_key(
    tmp_path: Path, capacity: object, key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"serving\.yaml: {key}"):
        _load(tmp_path, capacity)


def test_team_tiers_are_checked_against_the_models_tiers(tmp_path: Path) -> None:
    config = _load(tmp_path, {"teams": {"vip": {"budget": 5, "tiers": ["platinum"]}}})
    with pytest.raises(ConfigError, match=r"alerts\.capacity\.teams\.vip\.tiers.*'platinum' is not one of"):
        config.alert_rules(TIERS)
    ok = _load(tmp_path, {"period_days": 14, "teams": {"vip": {"budget": 5, "tiers": "diamond"}}})
    rules = ok.alert_rules(TIERS)
    assert rules is not None and rules.capacity is not None
    assert (
        rules.capacity.team_of("diamond", "at-risk") == "vip" and rules.capacity.team_of("gold", "x") is None
    )


# --- win-back -----------------------------------------------------------------------------------------------

WIN_BACK = {
    "kind": "win-back",
    "lapsed_days": 60,
    "min_past_value": 100,
    "playbook": {"text": "win-back call with an offer", "due_within_hours": 48, "cost": 15},
}


def test_lapse_of_a_hand_built_history() -> None:
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "c", "c"],
            "timestamp": [T0 - 100 * D, T0 - 80 * D, T0 - 10 * D, T0 - 5 * D, T0 - 90 * D, T0 + D],
            "amount": [100.0, 60.0, -20.0, 10.0, 30.0, 999.0],  # a's last is a refund; c's last is later
        }
    )
    got = lapse_of(tx, T0).set_index("customer_id")
    # a: last purchase 80 days ago (the refund is no purchase), net 140; b: 5 days, 10; c: 90 days, 30
    assert got["days_since_purchase"].to_dict() == {"a": 80.0, "b": 5.0, "c": 90.0}
    assert got["past_value"].to_dict() == {"a": 140.0, "b": 10.0, "c": 30.0}


def test_the_win_back_rule_fires_on_lapsed_customers_of_high_past_value() -> None:
    config = AlertConfig(
        rules=[WIN_BACK], playbooks={"gold": {"text": "email", "due_within_hours": 1}}
    ).for_tiers(TIERS)
    scores = score_table(
        ("a", "bronze", 0.95, 5.0),  # lapsed 80 days, 140 spent: fires
        ("b", "gold", 0.2, 300.0),  # bought 5 days ago: not lapsed
        ("c", "silver", 0.9, 10.0),  # lapsed, spent only 30
        ("d", "gold", 0.9, 10.0),  # never bought (no lapse row): not lapsed
        ("e", "silver", 0.97, 1.0),  # lapsed 61 days, spent 100: fires (at the thresholds)
    )
    lapse = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "e"],
            "days_since_purchase": [80.0, 5.0, 90.0, 60.0],
            "past_value": [140.0, 500.0, 30.0, 100.0],
            "best_tier": [None, "gold", "gold", None],
        }
    )
    out = evaluate(scores, config, None, T0, lapse)
    assert out["customer_id"].tolist() == ["a", "e"] and out["fires"].all()
    assert set(out["kind"]) == {"win-back"}
    assert set(out["playbook"]) == {"win-back call with an offer"}  # the rule's own, not the tier's
    assert set(out["due_at"]) == {T0 + 48 * timedelta(hours=1)}
    assert out["priority"].tolist() == pytest.approx([4.75, 0.97])  # value at risk, highest first
    with pytest.raises(ValueError, match="win-back rule needs each customer's lapse"):
        evaluate(scores, config, None, T0)

    by_tier = AlertConfig(rules=[{"kind": "win-back", "lapsed_days": 60, "past_min_tier": "gold"}]).for_tiers(
        TIERS
    )
    out = evaluate(scores, by_tier, None, T0, lapse)
    assert out["customer_id"].tolist() == ["c"]  # lapsed and gold at an earlier run; a and e never were


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "win-back", "min_past_value": 10}, "needs lapsed_days"),
        ({"kind": "win-back", "lapsed_days": 30}, "needs min_past_value or past_min_tier"),
        ({"kind": "at-risk", "lapsed_days": 30, "min_tier": "gold"}, "belong to the win-back rule"),
        ({"kind": "win-back", "lapsed_days": 0, "min_past_value": 1}, "lapsed_days"),
        ({"kind": "win-back", "lapsed_days": 30, "min_past_value": float("nan")}, "min_past_value"),
        (
            {
                "kind": "win-back",
                "lapsed_days": 30,
                "min_past_value": 1,
                "playbook": {"text": "x", "due_within_hours": 1, "cost": -2},
            },
            "cost",
        ),
    ],
)
def test_bad_win_back_rules_are_refused(rule: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AlertConfig(rules=[rule])


def test_a_win_back_is_saved_by_a_purchase_even_for_a_subscriber() -> None:
    episodes = pd.DataFrame(
        {
            "customer_id": ["s", "s", "t"],
            "kind": ["win-back", "at-risk", "win-back"],
            "opened_at": [T0, T0, T0],
            "horizon_days": 30,
        }
    )
    tx = pd.DataFrame({"customer_id": ["s"], "timestamp": [T0 + 4 * D], "amount": [25.0]})
    got = compute(episodes, tx, T0 + 40 * D, pd.DataFrame(columns=["customer_id", "timestamp"]), {"s", "t"})
    # s's win-back: reactivated after 4 days (saved); s's at-risk by cancellation: none, saved at 30 days;
    # t's win-back: no purchase in the window: lost at its end (for a subscriber, judged by purchase too)
    assert got["outcome"].tolist() == ["saved", "saved", "lost"]
    assert got["days_to_outcome"].tolist() == [4.0, 30.0, 30.0]
    assert np.allclose(got["value_after"], [25.0, 25.0, 0.0])


# --- the programme's indicators -----------------------------------------------------------------------------


def test_indicators_by_tier_and_run_on_a_hand_built_case() -> None:
    from serving.indicators import ALL, rates

    second = T0 + 10 * D
    tiers = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "a", "b", "d"],
            "as_of": [T0, T0, T0, second, second, second],
            "tier": ["gold", "gold", "silver", "gold", "silver", "silver"],
        }
    )
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "c", "d", "a"],
            "timestamp": [T0 + 2 * D, T0 + 3 * D, T0 + 35 * D, T0 + 5 * D, second + 25 * D, T0],
            "amount": [10.0, 10.0, 5.0, -3.0, 8.0, 99.0],  # c's is a refund; a's at T0 is before the window
        }
    )
    # horizon 30 days, history to T0 + 45 d: the first run's windows are complete, the second's are not
    got = rates(tiers, tx, T0 + 45 * D, 30, order=["gold", "silver"]).set_index(["run", "tier"])
    gold = got.loc[(T0, "gold")]
    # a bought twice in (T0, T0 + 30]: retained, a repeat buyer; b bought after the window: churned
    assert (gold["customers"], gold["mature"], gold["retained"], gold["churned"], gold["repeat_buyers"]) == (
        2,
        2,
        1,
        1,
        1,
    )
    assert (gold["retention_rate"], gold["churn_rate"], gold["repeat_rate"]) == (0.5, 0.5, 0.5)
    silver = got.loc[(T0, "silver")]  # c: only a refund, churned
    assert (silver["retained"], silver["churned"], silver["churn_rate"]) == (0, 1, 1.0)
    everyone = got.loc[(T0, ALL)]
    assert (everyone["customers"], everyone["retention_rate"]) == (3, pytest.approx(1 / 3))
    # second run (windows end at T0 + 40 d, the history reaches T0 + 45 d): mature; a no purchase in
    # (T0 + 10, T0 + 40]: churned; b bought at T0 + 35: retained; d bought at T0 + 35: retained
    late = got.loc[(second, "silver")]
    assert (late["customers"], late["retained"], late["churned"], late["pending"]) == (2, 2, 0, 0)
    assert got.loc[(second, "gold"), "churned"] == 1
    # with the history only to T0 + 20 d, the second run is pending, never churned
    early = rates(tiers, tx, T0 + 20 * D, 30).set_index(["run", "tier"])
    assert early.loc[(second, ALL), "pending"] == 3 and early.loc[(second, ALL), "churned"] == 0
    assert np.isnan(early.loc[(second, ALL), "retention_rate"])


def test_the_tier_migration_matrix_between_consecutive_runs() -> None:
    from serving.indicators import GONE, NEW, matrix, migration

    second, third = T0 + 7 * D, T0 + 14 * D
    tiers = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "a", "b", "d", "a"],
            "as_of": [T0, T0, T0, second, second, second, third],
            "tier": ["gold", "gold", "silver", "gold", "silver", "gold", "silver"],
        }
    )
    moves = migration(tiers)
    first = moves[moves["from_run"] == T0]
    got = {(r.from_tier, r.to_tier): r.customers for r in first.itertuples()}
    # a stays gold, b gold -> silver, c is no longer scored, d is new in gold
    assert got == {("gold", "gold"): 1, ("gold", "silver"): 1, ("silver", GONE): 1, (NEW, "gold"): 1}
    rows, cols, counts = matrix(first, ["gold", "silver"])
    assert rows == ["gold", "silver", NEW] and cols == ["gold", "silver", GONE]
    assert counts == [[1, 1, 0], [0, 0, 1], [1, 0, 0]]
    later = moves[moves["from_run"] == second]
    assert {(r.from_tier, r.to_tier): r.customers for r in later.itertuples()} == {
        ("gold", "silver"): 1,
        ("silver", GONE): 1,
        ("gold", GONE): 1,
    }
    assert migration(tiers[tiers["as_of"] == T0]).empty  # one run: nothing to compare


def test_the_effect_table_by_owner_and_a_rules_own_cost() -> None:
    from serving.effect import report

    frame = pd.DataFrame(
        {
            "arm": ["treated", "treated", "treated", "control", "control", "treated", "control"],
            "tier": ["gold", "gold", "gold", "gold", "gold", "silver", "silver"],
            "kind": ["k", "k", "k", "k", "k", "win-back", "win-back"],
            "playbook": "p",
            "outcome": ["saved", "saved", "lost", "saved", "lost", "saved", "lost"],
            "value_after": [10.0, 20.0, 0.0, 5.0, 0.0, 30.0, 0.0],
            "mature": True,
            "opened_at": T0,
            "owner": ["anna", "(nobody)", "anna", None, None, "anna", None],
        }
    )
    table = report(frame, {"gold": 4.0}, by_run=False, kind_costs={"win-back": 15.0})
    owners = table[table["scope"] == "owner"].set_index("owner")
    assert sorted(owners.index) == ["(nobody)", "anna"]
    anna = owners.loc["anna"]
    # anna: gold saved + lost, silver win-back saved (3 treated, 2 saved), against the controls of gold/k
    # and silver/win-back (3 controls, 1 saved); cost 2 * 4 (gold) + 15 (the win-back rule's own)
    assert (anna["treated"], anna["treated_saved"], anna["control"], anna["control_saved"]) == (3, 2, 3, 1)
    assert anna["difference"] == pytest.approx(2 / 3 - 1 / 3) and anna["cost"] == 23.0
    nobody = owners.loc["(nobody)"]
    assert (nobody["treated"], nobody["control"], nobody["cost"]) == (1, 2, 4.0)  # gold/k controls only
    everything = table[(table["scope"] == "cumulative") & (table["tier"] == "(all)")].iloc[0]
    assert everything["cost"] == 3 * 4.0 + 15.0 and everything["owner"] == "(all)"
    with pytest.raises(ConfigError, match="silver"):  # without the rule's cost, silver has none
        report(frame, {"gold": 4.0}, by_run=False)
