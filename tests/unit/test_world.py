"""The retention world (features/datasets/world.py) and the simulation's truth (serving/simulation.py) on
hand-built customers whose dropout times and potential outcomes are computed by hand, and on a drawn world:
an action never changes what happened at or before it (common random numbers)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

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


def test_the_schedule_must_fit_in_the_world() -> None:
    assert simulation.schedule(datetime(2024, 1, 1), 3, 91)[-1] == datetime(2024, 1, 1) + timedelta(days=182)
    with pytest.raises(ValueError, match="end after the world"):
        simulation.schedule(datetime(2026, 6, 1), 4, 91)
    with pytest.raises(ValueError, match="at least 1"):
        simulation.schedule(datetime(2024, 1, 1), 0, 91)
