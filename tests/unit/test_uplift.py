"""Uplift learners (training/uplift.py) on a hand-built frame with a known effect, the Qini coefficient and
the AUUC on a hand-computed case, and the alert priority (serving/uplift_rank.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.uplift_rank import priority
from tests.helpers.frames import known_effect
from training import uplift


@pytest.mark.parametrize("learner", uplift.LEARNERS)
def test_both_learners_find_the_known_effect(learner: str, tmp_path: Path) -> None:
    train, later = known_effect(4000, 0), known_effect(2000, 1)
    model = uplift.fit(train, learner, rounds=60)
    assert model.columns == ["x2"] and model.levels == {"segment": ["a", "b"]}  # ids and arms never inputs
    tau = model.predict(later)
    b = (later["segment"] == "b").to_numpy()
    assert tau[b].mean() == pytest.approx(0.4, abs=0.07)
    assert tau[~b].mean() == pytest.approx(0.0, abs=0.07)
    scores = uplift.evaluate(model, later)
    # segment b first, on outcomes it never saw: a perfect ranking has Qini 0.025 here (0.1 n saves gained
    # linearly over the first half, the random line 0.1 k), random ones 0
    assert scores["qini"] > 0.01 and scores["auuc"] > 0
    # random scores find nothing
    noise = np.random.default_rng(5).random(len(later))
    assert (
        abs(uplift.qini(noise, later["treated"].to_numpy(), later["saved"].to_numpy())) < scores["qini"] / 2
    )
    # saved and loaded: the same predictions
    again = uplift.UpliftModel.load(model.save(tmp_path))
    assert np.allclose(again.predict(later), tau)


def test_fit_refuses_a_small_arm_and_an_unknown_learner() -> None:
    frame = known_effect(200, 0)
    with pytest.raises(ValueError, match="each arm needs at least 150"):
        uplift.fit(frame, "t", min_per_arm=150)
    with pytest.raises(ValueError, match="learner must be one of"):
        uplift.fit(frame, "s")
    with pytest.raises(ValueError, match="no 'saved' column"):
        uplift.fit(frame.drop(columns="saved"))


def test_qini_and_auuc_by_hand() -> None:
    """Scores .9 .8 .7 .6; arms T C T C; outcomes 1 0 0 1. Top k: q(1) = 0 (no control yet), q(2) = 1 - 0,
    q(3) = 1 - 0 * 2/1 = 1, q(4) = 1 - 1 * 2/2 = 0. Qini = sum(q(k) - k/4 * q(4)) / 4 / 4 = 2/16.
    u(k) = (Y1/N1 - Y0/N0) * k: 0, (1 - 0) * 2, (1/2 - 0) * 3, (1/2 - 1/2) * 4; AUUC = 3.5/16."""
    score = np.array([0.9, 0.8, 0.7, 0.6])
    treated = np.array([True, False, True, False])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    assert uplift.qini_curve(score, treated, y).tolist() == [0.0, 1.0, 1.0, 0.0]
    assert uplift.qini(score, treated, y) == pytest.approx(0.125)
    assert uplift.auuc(score, treated, y) == pytest.approx(3.5 / 16)
    # the order is by score, not by row: reversed rows give the same numbers
    assert uplift.qini(score[::-1], treated[::-1], y[::-1]) == pytest.approx(0.125)
    assert np.isnan(uplift.qini(np.array([]), np.array([], dtype=bool), np.array([])))


def test_the_uplift_gate_by_hand() -> None:
    ok, why = uplift.passes_gate({"qini": 0.05}, {"qini": 0.03}, 0.01)
    assert ok and "promoted" in why
    refused, why = uplift.passes_gate({"qini": 0.035}, {"qini": 0.03}, 0.01)
    assert not refused and "Qini gain over the uplift champion +0.0050 < +0.0100" in why
    _, why = uplift.passes_gate({"qini": 0.0}, {"qini": 0.01}, 0.0, "P x value")
    assert why.startswith("refused: Qini gain over P x value -0.0100")


def test_priority_is_value_at_risk_until_a_model_then_uplift_times_value_minus_cost() -> None:
    candidates = pd.DataFrame(
        {
            "customer_id": ["p", "q", "r"],
            "segment": ["a", "b", "b"],
            "x2": [0.0, 0.0, 0.0],
            "tier": ["gold", "gold", "silver"],
            "value_at_risk": [900.0, 100.0, 50.0],
            "predicted_value": [1000.0, 1000.0, 100.0],
        },
        index=[10, 11, 12],
    )
    costs = {"gold": 40.0, "silver": 5.0}
    assert priority(candidates, None, costs).to_dict() == {10: 900.0, 11: 100.0, 12: 50.0}
    model = uplift.fit(known_effect(4000, 0), "t", rounds=60)
    tau = model.predict(candidates)
    got = priority(candidates, model, costs)
    assert got.tolist() == pytest.approx([tau[0] * 1000 - 40, tau[1] * 1000 - 40, tau[2] * 100 - 5])
    assert got.idxmax() == 11  # segment b, where acting works, beats the most value at risk
    # a rule's own playbook (by alert kind, e.g. win-back) costs what it says, whatever the tier
    kinds = candidates.assign(kind=["at-risk", "win-back", "at-risk"])
    own = priority(kinds, model, costs, {"win-back": 300.0})
    assert own.tolist() == pytest.approx([tau[0] * 1000 - 40, tau[1] * 1000 - 300, tau[2] * 100 - 5])


def test_the_value_outcome_the_propensity_and_the_shrinkage_toward_p_x_value() -> None:
    """value_after = 100 x saved: a value model learns tau in currency (about 40 for segment b); the
    propensity given is the X-learner's weight; shrinkage pulls tau toward theta x churn_probability with
    weight n0 / (n + n0), theta = the average effect over the mean risk (at least MIN_THETA)."""
    train = known_effect(4000, 0)
    train = train.assign(value_after=100.0 * train["saved"], churn_probability=0.5, value_at_risk=50.0)
    later = known_effect(2000, 1).assign(churn_probability=0.5, value_at_risk=50.0)
    b = (later["segment"] == "b").to_numpy()
    value = uplift.fit(train, "t", rounds=60, outcome="value")
    assert value.outcome == "value" and value.predict(later)[b].mean() == pytest.approx(40.0, abs=7.0)
    assert uplift.fit(train, "x", rounds=5, propensity=0.3).propensity == 0.3
    plain = uplift.fit(train, "x", rounds=60)
    shrunk = uplift.fit(train, "x", rounds=60, prior_outcomes=12_000.0)
    t = train["treated"].to_numpy()
    ate = train["saved"][t].mean() - train["saved"][~t].mean()
    assert shrunk.meta["prior_weight"] == pytest.approx(0.75)
    assert shrunk.meta["prior_theta"] == pytest.approx(ate / 0.5)
    assert shrunk.predict(later) == pytest.approx(0.25 * plain.predict(later) + 0.75 * ate)
    # no evidence of an effect: the prior keeps the P x value order, never its reverse
    flat = train.assign(saved=0)
    assert uplift.prior_theta(flat) == uplift.MIN_THETA
    with pytest.raises(ValueError, match="outcome must be one of"):
        uplift.fit(train, "t", outcome="margin")
    with pytest.raises(ValueError, match="propensity must be in"):
        uplift.fit(train, "x", propensity=1.0)
    # a value model's priority is tau - cost (already in currency)
    got = priority(later.assign(tier="gold", predicted_value=1000.0), value, {"gold": 5.0})
    assert got.tolist() == pytest.approx((value.predict(later) - 5.0).tolist())


def test_the_ranker_of_a_run_reads_the_feature_rows_and_the_alert_rules_rank_by_it() -> None:
    """serving.uplift_rank.ranker joins the candidates to the run's feature rows (the inputs the score
    columns lack); alert_rules.evaluate stores its priority, and value at risk without a model."""
    from serving.alert_rules import evaluate
    from serving.config import AlertConfig
    from serving.uplift_rank import ranker

    model = uplift.fit(known_effect(4000, 0), "t", rounds=60)
    scores = pd.DataFrame(
        {
            "customer_id": ["p", "q"],
            "churn_probability": [0.9, 0.6],
            "predicted_value": [1000.0, 500.0],
            "value_at_risk": [900.0, 300.0],
            "tier": ["gold", "gold"],
        }
    )
    rows = pd.DataFrame({"customer_id": ["q", "p"], "segment": ["b", "a"], "x2": [0.0, 0.0]})
    config = AlertConfig.model_validate({"rules": [{"kind": "at-risk", "min_churn_probability": 0.5}]})
    plain = evaluate(scores, config, None, "2024-01-01")
    assert plain["customer_id"].tolist() == ["p", "q"] and plain["priority"].tolist() == [900.0, 300.0]
    ranked = evaluate(scores, config, None, "2024-01-01", ranking=ranker(model, rows, {"gold": 5.0}))
    tau = model.predict(pd.DataFrame({"segment": ["b", "a"], "x2": [0.0, 0.0]}))
    assert ranked["customer_id"].tolist() == ["q", "p"]  # segment b, where acting works, comes first
    assert ranked["priority"].tolist() == pytest.approx([tau[0] * 500 - 5, tau[1] * 1000 - 5])
    assert ranker(None, rows, {})(scores).tolist() == [900.0, 300.0]


def test_the_bgnbd_baseline_survives_a_fit_that_scored_nobody() -> None:
    """A small history (the simulation's first runs) can leave the BG/NBD fit unable to score anyone:
    training's baseline then gets 0.5 for all instead of stopping with 'predictions are NaN'."""
    from training import baselines

    some = pd.DataFrame({"btyd_p_no_purchase": [0.2, np.nan, 0.6]})
    assert baselines.btyd_churn(some).tolist() == pytest.approx([0.2, 0.4, 0.6])
    none = pd.DataFrame({"btyd_p_no_purchase": [np.nan, np.nan]})
    assert baselines.btyd_churn(none).tolist() == [0.5, 0.5]
