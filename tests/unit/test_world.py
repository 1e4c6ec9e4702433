"""The retention world (features/datasets/world.py) and the simulation's truth (serving/simulation.py) on
hand-built customers whose dropout times and potential outcomes are computed by hand, and on a drawn world:
an action never changes what happened at or before it (common random numbers)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from features.datasets import synthetic
from features.datasets.world import ACTION_DELAY, COMPLAINT_FACTOR, START, World, actions_frame
from serving import simulation

DAY = 86_400.0


def hand_world() -> World:
    """Three customers signed up at START:
    A: hazard 0.01/day, E 0.5 -> leaves at day 50; an action removes half its hazard (effect 0.5);
    B: hazard 0.05/day, E 0.5 -> leaves at day 10, before any action; effect 0.75;
    C: like A but effect 0 (nothing moves it).
    Candidate purchases: A and C at days 10 (20.0), 60 (30.0), 100 (40.0); B at day 5 (50.0) and 40 (60.0).
    """
    buys = [(0, 10, 20.0), (0, 60, 30.0), (0, 100, 40.0), (1, 5, 50.0), (1, 40, 60.0)]
    buys += [(2, 10, 20.0), (2, 60, 30.0), (2, 100, 40.0)]
    return World(
        n_customers=3,
        seed=0,
        ids=np.array(["A", "B", "C"], dtype=object),
        business=np.array([True, True, False]),
        engaged=np.array([True, False, False]),
        region=np.array([0, 1, 2]),
        signup=np.zeros(3),
        hazard=np.array([0.01, 0.05, 0.01]),
        exposure=np.array([0.5, 0.5, 0.5]),
        effect=np.array([0.5, 0.75, 0.0]),
        purchase_rate=np.full(3, 0.03),
        mean_spend=np.full(3, 30.0),
        buy_c=np.array([c for c, _, _ in buys]),
        buy_t=np.array([d * DAY for _, d, _ in buys], dtype=np.float64),
        buy_amount=np.array([a for _, _, a in buys]),
        visit_c=np.array([0, 0]),
        visit_t=np.array([20 * DAY, 55 * DAY]),
    )


def at(days: float) -> datetime:
    return START + timedelta(days=days)


def test_dropout_inverts_the_cumulative_hazard_and_an_action_stretches_what_is_left() -> None:
    w = hand_world()
    assert w.dropout() / DAY == pytest.approx([50.0, 10.0, 50.0])
    # an action at day 30: A has spent 0.3 of 0.5; the last 0.2 at 0.005/day takes 40 days -> day 70.
    # B left at day 10: not brought back. C: effect 0, unchanged.
    one = actions_frame(["A", "B", "C"], [at(30)] * 3)
    assert w.dropout(one) / DAY == pytest.approx([70.0, 10.0, 50.0])
    # two actions compose: at day 30 (0.2 left, rate 0.005), at day 40 (0.15 left, rate 0.0025) -> day 100
    two = actions_frame(["A", "A"], [at(40), at(30)])  # any order
    assert w.dropout(two)[0] / DAY == pytest.approx(100.0)
    # an action after the customer left does nothing
    assert w.dropout(actions_frame(["A"], [at(60)]))[0] / DAY == pytest.approx(50.0)


def test_a_complaint_multiplies_the_hazard_and_only_while_the_customer_is_there() -> None:
    """A complains at day 10 (hazard 0.01 -> 0.15): 0.1 spent, the last 0.4 takes 8/3 days -> day 12 2/3.
    An action at day 11 (effect 0.5): 0.25 spent by then, the last 0.25 at 0.075/day -> day 14 1/3. A
    second complaint at day 30 comes after A left: never made, never shown; nor is the visit at day 20."""
    assert COMPLAINT_FACTOR == 15.0
    w = replace(hand_world(), complaint_c=np.array([0, 0]), complaint_t=np.array([10 * DAY, 30 * DAY]))
    assert w.dropout()[0] / DAY == pytest.approx(10 + 8 / 3)
    assert w.dropout(actions_frame(["A"], [at(11)]))[0] / DAY == pytest.approx(11 + 10 / 3)
    seen = w.history(None, at(120))["interactions"].to_pandas()
    assert seen[seen["type"] == "complaint"]["timestamp"].tolist() == [pd.Timestamp(at(10))]
    assert seen[seen["type"] == "visit"]["timestamp"].tolist() == []


def test_the_history_keeps_the_purchases_before_the_dropout() -> None:
    w = hand_world()
    tx = w.history(None, at(120))["transactions"].to_pandas()
    assert tx.groupby("customer_id")["amount"].apply(list).to_dict() == {
        "A": [20.0], "B": [50.0], "C": [20.0],
    }  # fmt: skip
    acted = w.history(actions_frame(["A"], [at(30)]), at(120))["transactions"].to_pandas()
    assert acted[acted["customer_id"] == "A"]["amount"].tolist() == [20.0, 30.0]  # day 60 < day 70
    # the same purchase keeps the same order id in both futures
    assert set(tx["order_id"]) <= set(acted["order_id"])
    visits = w.history(actions_frame(["A"], [at(30)]), at(120))["interactions"].to_pandas()
    assert visits["type"].tolist() == ["visit", "visit"]  # day 55 < day 70: the second visit happens now
    assert len(w.history(None, at(120))["interactions"]) == 1
    with pytest.raises(ValueError, match="not a customer of this world"):
        w.dropout(actions_frame(["Z"], [at(1)]))


def test_potential_outcomes_by_hand() -> None:
    """Episodes opened at day 30 over 60 days, (30, 90]: A is saved only if acted on (the day-60 purchase,
    30.0); B left at day 10: lost either way; C: nothing moves it, lost either way."""
    w = hand_world()
    episodes = pd.DataFrame({"customer_id": ["A", "B", "C"], "opened_at": [at(30)] * 3})
    pot = simulation.potential_outcomes(w, actions_frame([], []), episodes, horizon_days=60)
    assert pot["saved_if_treated"].tolist() == [1.0, 0.0, 0.0]
    assert pot["saved_if_not"].tolist() == [0.0, 0.0, 0.0]
    assert pot["value_if_treated"].tolist() == [30.0, 0.0, 0.0]
    assert pot["effect_saved"].tolist() == [1.0, 0.0, 0.0]
    assert pot["effect_value"].tolist() == [30.0, 0.0, 0.0]
    # the episode's own action, already among the actions, is what "without" removes
    acted = actions_frame(["A"], [at(30) + ACTION_DELAY])
    again = simulation.potential_outcomes(w, acted, episodes, horizon_days=60)
    assert again[simulation.POTENTIAL_COLUMNS].equals(pot[simulation.POTENTIAL_COLUMNS])
    assert simulation.true_effect(pot, pd.Series([True, True, False])) == {
        "episodes": 2.0, "incremental_saved": 1.0, "incremental_value": 30.0,
    }  # fmt: skip
    # at a capacity of 1: ranking A first saves 30.0, ranking B first saves nothing
    assert simulation.top_k(pot, pd.Series([1.0, 2.0, 0.0]), 1) == {"k": 1.0, "saved": 0.0, "value": 0.0}
    assert simulation.top_k(pot, pd.Series([3.0, 2.0, 0.0]), 1) == {"k": 1.0, "saved": 1.0, "value": 30.0}


def test_an_action_never_changes_the_past_of_a_drawn_world() -> None:
    w = World.draw(400, seed=3)
    again = World.draw(400, seed=3)
    assert np.array_equal(w.buy_t, again.buy_t) and np.array_equal(w.exposure, again.exposure)
    t = datetime(2024, 4, 1)
    acts = actions_frame(list(w.ids), [t + ACTION_DELAY] * len(w.ids))
    before = w.history(None, t)
    after = w.history(acts, t)
    for name in ("transactions", "customers", "interactions"):
        assert before[name].equals(after[name]), name
    # and later it does: somebody stays longer
    later, now = w.dropout(acts), w.dropout()
    assert (later >= now - 1e-3).all() and (later > now + DAY).any()
    assert (w.effect[~w.business & ~w.engaged] == 0).all()


def test_the_world_writes_the_contract_tables_with_the_synthetic_history_s_columns() -> None:
    """One source of truth (features/datasets/tables.py): each world table has the synthetic history's
    columns and types, the world's customers a subset of the synthetic history's attributes."""
    w = World.draw(50, seed=1).history(None, datetime(2024, 6, 30))
    assert w["transactions"].schema == synthetic.TRANSACTIONS_SCHEMA
    assert w["interactions"].schema == synthetic.INTERACTIONS_SCHEMA
    customers = w["customers"].schema
    assert customers.names == ["customer_id", "signup_date", "segment", "region"]
    for field in customers:
        assert synthetic.CUSTOMERS_SCHEMA.field(field.name).type == field.type, field.name


def test_the_schedule_must_fit_in_the_world() -> None:
    assert simulation.schedule(datetime(2024, 1, 1), 3, 91)[-1] == datetime(2024, 1, 1) + timedelta(days=182)
    with pytest.raises(ValueError, match="end after the world"):
        simulation.schedule(datetime(2026, 6, 1), 4, 91)
    with pytest.raises(ValueError, match="at least 1"):
        simulation.schedule(datetime(2024, 1, 1), 0, 91)


def test_the_survival_integrals_by_hand_and_against_a_fine_grid() -> None:
    """Without complaints S(s) = e^(-r s): int_0^H S = (1 - e^(-rH)) / r and P(a purchase first) =
    lam / (lam + r) (1 - e^(-(lam + r) H)). With complaints (rate c, hazard x15 each), against the ODE
    dp_j/ds = -(r 15^j + c) p_j + c p_(j-1) stepped exactly per level on a fine grid."""
    from features.datasets.world import _survival_integrals

    r, lam, h = np.array([0.01, 0.002]), np.array([0.03, 0.05]), 60.0
    saved, exposure = _survival_integrals(r, 0.0, 15.0, lam, h)
    assert exposure == pytest.approx((1 - np.exp(-r * h)) / r)
    assert saved == pytest.approx(lam / (lam + r) * (1 - np.exp(-(lam + r) * h)))
    c, steps = 1 / 250, 40_000
    saved, exposure = _survival_integrals(r, c, 15.0, lam, h)
    ds = h / steps
    for i in range(2):
        rates = r[i] * 15.0 ** np.arange(5) + c
        p = np.zeros(5)
        p[0] = 1.0
        s_int = first = 0.0
        for k in range(steps):
            alive = p.sum()
            s_int += alive * ds
            first += lam[i] * np.exp(-lam[i] * (k + 0.5) * ds) * alive * ds
            inflow = np.concatenate(([0.0], c * p[:-1]))
            p = p * np.exp(-rates * ds) + inflow * ds
        assert exposure[i] == pytest.approx(s_int, rel=2e-3)
        assert saved[i] == pytest.approx(first, rel=2e-3)


def test_expected_outcomes_by_hand() -> None:
    """At day 30 (window 60 days): A is there at hazard 0.01, effect 0.5; B left at day 10: 0 in both
    futures; C is there, effect 0: the same with and without. A's with the call are A's at hazard 0.005."""
    from features.datasets.world import _COMPLAINT_RATE, _survival_integrals

    w = hand_world()
    episodes = pd.DataFrame({"customer_id": ["A", "B", "C"], "opened_at": [at(30)] * 3})
    exp = simulation.expected_outcomes(w, actions_frame([], []), episodes, horizon_days=60)
    s1, e1 = _survival_integrals(np.array([0.005]), _COMPLAINT_RATE, 15.0, np.array([0.03]), 60.0)
    s0, e0 = _survival_integrals(np.array([0.01]), _COMPLAINT_RATE, 15.0, np.array([0.03]), 60.0)
    assert exp["expected_saved_if_treated"].tolist() == pytest.approx([s1[0], 0.0, s0[0]])
    assert exp["expected_saved_if_not"].tolist() == pytest.approx([s0[0], 0.0, s0[0]])
    assert exp["expected_value_if_treated"].tolist() == pytest.approx(
        [0.03 * 30 * e1[0], 0.0, 0.03 * 30 * e0[0]]
    )
    assert exp["expected_effect_value"].tolist() == pytest.approx([0.03 * 30 * (e1[0] - e0[0]), 0.0, 0.0])
    assert exp["expected_effect_saved"].iloc[0] > 0
    # the episode's own action is left out, an earlier one is kept: A called at day 20 is at 0.005 by day 30
    same = simulation.expected_outcomes(w, actions_frame(["A"], [at(30) + ACTION_DELAY]), episodes, 60)
    assert same[exp.columns[2:]].equals(exp[exp.columns[2:]])
    earlier = simulation.expected_outcomes(w, actions_frame(["A"], [at(20)]), episodes, 60)
    assert earlier["expected_saved_if_not"].iloc[0] == pytest.approx(s1[0])
    # a complaint before the run multiplies the hazard the run sees: A complains at day 10 -> 0.15 at day 11
    moaned = replace(w, complaint_c=np.array([0]), complaint_t=np.array([10 * DAY]))
    alive, rate = moaned.state(None, at(11))
    assert alive.tolist() == [True, False, True] and rate[0] == pytest.approx(0.15)
    # at a capacity of 1, the expected value ranks too
    got = simulation.top_k(exp.assign(effect_saved=0.0, effect_value=0.0), pd.Series([3.0, 2.0, 1.0]), 1)
    assert got["expected_value"] == pytest.approx(0.03 * 30 * (e1[0] - e0[0]))


def test_the_expected_outcomes_agree_with_the_realised_ones_on_average() -> None:
    """On a drawn world, the sum over customers of the expected P(saved) and value without the call is the
    realised sum within a few standard errors (each realised outcome is one draw of what is expected)."""
    w = World.draw(3000, seed=5)
    t = datetime(2024, 4, 1)
    there = w.state(None, t)[0]
    episodes = pd.DataFrame({"customer_id": w.ids[there], "opened_at": [t] * int(there.sum())})
    exp = simulation.expected_outcomes(w, actions_frame([], []), episodes, horizon_days=91)
    pot = simulation.potential_outcomes(w, actions_frame([], []), episodes, horizon_days=91)
    p = exp["expected_saved_if_not"].to_numpy()
    se = np.sqrt((p * (1 - p)).sum())
    assert abs(pot["saved_if_not"].sum() - p.sum()) < 4 * se
    # and the call helps in expectation as it does in the realised sum
    assert exp["expected_effect_saved"].min() >= 0 and exp["expected_effect_saved"].sum() > 0
