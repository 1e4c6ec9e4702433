"""Model-quality metrics against hand-computed values, and the validation design's pure parts."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy.special import expit, logit

from features.history import history_from_frames
from training import design, metrics, tuning
from training.models import split_latest
from training.rfm import RfmRank
from training.tiers import assign_tiers, tier_thresholds


def test_normalized_gini_by_hand() -> None:
    # by prediction: 1, 2, 0, 0 -> cumulative shares 1/3, 1, 1, 1; by itself: 2, 1, 0, 0 -> 2/3, 1, 1, 1
    # gini = mean(cum) - (n + 1) / 2n: 0.8333 - 0.625 and 0.9167 - 0.625; ratio 5/7
    assert metrics.normalized_gini([1, 0, 2, 0], [0.9, 0.1, 0.8, 0.2]) == pytest.approx(5 / 7)
    assert metrics.normalized_gini([1, 0, 2, 0], [1, 0, 2, 0]) == pytest.approx(1.0)


def test_aggregate_error_brier_and_auc_by_hand() -> None:
    assert metrics.aggregate_error([10, 30], [20, 30]) == pytest.approx(0.25)
    assert metrics.brier([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_decile_mape_is_the_mean_relative_error_of_bins_by_prediction() -> None:
    # two bins by prediction: {pred 4, 3 | actual 6, 2} and {pred 2, 1 | actual 3, 1}
    # |3.5 - 4| / 4 = 0.125 and |1.5 - 2| / 2 = 0.25
    assert metrics.decile_mape([1, 3, 2, 6], [1, 2, 3, 4], bins=2) == pytest.approx(0.1875)
    table = metrics.decile_table([1, 3, 2, 6], [1, 2, 3, 4], bins=2)
    assert [d["mean_actual"] for d in table] == [4.0, 2.0]


def test_poisson_deviance_by_hand() -> None:
    # a = 0: 2 * (0 - (0 - 1)) = 2; a = 2: 2 * (2 ln 2 - 1); mean = ln 4
    assert metrics.poisson_deviance([0, 2], [1, 1]) == pytest.approx(math.log(4))


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        metrics.brier([1, 0], [0.5])
    with pytest.raises(ValueError, match="NaN"):
        metrics.roc_auc([1, 0], [0.5, float("nan")])
    with pytest.raises(ValueError, match="every actual value is zero"):
        metrics.normalized_gini([0, 0], [1, 2])


def test_horizon_maps_fit_the_bgnbd_bridge_and_keep_the_ranking() -> None:
    short = pd.DataFrame({"btyd_p_no_purchase": [0.5, 0.8, 0.6], "btyd_expected_purchases": [1.0, 0.5, 2.0]})
    rows = pd.DataFrame({"btyd_p_no_purchase": [0.25, 0.4, 0.3], "btyd_expected_purchases": [3.0, 1.5, 6.0]})
    # every customer's bridge halves P(churn): logit(p/2) is not linear in logit(p), so check the fit
    p = np.array([0.6, 0.9, 0.7])
    a, b = design.churn_horizon_map(p, rows, short)
    fitted = expit(a + b * logit(p))
    np.testing.assert_allclose(fitted, p / 2, atol=0.01)
    assert b > 0  # monotone: the model's ranking is kept
    # every value ratio is 3: log value_H = log 3 + log value_h exactly
    a, b = design.value_horizon_map(np.array([10.0, 4.0, 5.0]), rows, short)
    assert (round(np.exp(a), 9), round(b, 9)) == (3.0, 1.0)
    assert design.churn_horizon_map(p, rows, None) == (0.0, 1.0)  # H == h: identity


def test_rfm_rank_by_hand_and_against_a_reference() -> None:
    rows = pd.DataFrame(
        {"recency_days": [10.0, 50.0, None], "frequency_days": [3, 1, 0], "monetary_sum": [30.0, 5.0, 0.0]}
    )
    rank = RfmRank.fit(rows)
    # recency: 10 < 50 < never (riskiest); frequency and spend: more = safer. Mid-ranks: 1/6, 3/6, 5/6
    np.testing.assert_allclose(rank.score(rows), [1 / 6, 3 / 6, 5 / 6])
    one = pd.DataFrame({"recency_days": [50.0], "frequency_days": [1], "monetary_sum": [5.0]})
    np.testing.assert_allclose(rank.score(one), [3 / 6])  # one customer ranked against the reference
    again = RfmRank.from_dict(rank.to_dict())
    np.testing.assert_allclose(again.score(rows), rank.score(rows))


def test_validation_split_leaves_a_label_horizon_gap() -> None:
    cutoffs = pd.to_datetime(["1997-03-31", "1997-04-30", "1997-05-31", "1997-06-30"])
    frame = pd.DataFrame({"cutoff": np.repeat(cutoffs, 2), "x": range(8)})
    early, late = split_latest(frame, 91)
    assert list(early["cutoff"].unique()) == [cutoffs[0]]  # Mar 31 + 91 days = Jun 30: labels end in time
    assert list(late["cutoff"].unique()) == [cutoffs[3]]
    with pytest.raises(ValueError, match="at least 120 days before"):
        split_latest(frame, 120)


def test_tier_thresholds_and_assignment() -> None:
    values = np.arange(1.0, 101.0)  # 1..100
    cuts = tier_thresholds(values, {"diamond": 0.05, "gold": 0.15, "silver": 0.30, "bronze": None})
    assert cuts == {"diamond": 95.05, "gold": 80.2, "silver": 50.5, "bronze": 0.0}
    tiers = assign_tiers(values, cuts)
    assert [int((tiers == t).sum()) for t in cuts] == [5, 15, 30, 50]
    assert list(assign_tiers(np.array([0.0, 95.05, 80.0]), cuts)) == ["bronze", "diamond", "silver"]


def test_training_origins_need_two_complete_label_windows() -> None:
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "timestamp": pd.to_datetime(["2024-01-05", "2024-02-10"]),
            "amount": [1.0, 2.0],
        }
    )
    history = history_from_frames(tx)
    with pytest.raises(ValueError, match="at least two are needed"):
        design.training_origins(history, datetime(2024, 6, 30), 91, 4, 30)
    origins = design.training_origins(history, datetime(2024, 9, 30), 91, 2, 30)
    # the two latest month ends, plus the one a full label horizon before the last (validation trains on it)
    assert [o.date().isoformat() for o in origins] == ["2024-03-31", "2024-05-31", "2024-06-30"]
    origins = design.training_origins(history, datetime(2024, 9, 30), 91, 4, 30)
    assert [o.date().isoformat() for o in origins] == ["2024-03-31", "2024-04-30", "2024-05-31", "2024-06-30"]


def test_tuning_survives_a_start_whose_loss_is_nan() -> None:
    """Optuna fails a trial whose loss is NaN and searches on: the start's loss is NaN then, not a crash."""

    def loss(params: dict[str, float]) -> float:
        return math.nan if params["x"] == 0.0 else (params["x"] - 0.5) ** 2

    def space(trial: optuna.Trial) -> dict[str, float]:
        return {"x": trial.suggest_float("x", -1.0, 1.0)}

    found = tuning._search(loss, space, {"x": 0.0}, trials=5, timeout_s=600, seed=0, metric="sq")
    assert math.isnan(found.start_loss)
    assert found.trials == 5 and math.isfinite(found.best_loss) and found.params["x"] != 0.0
