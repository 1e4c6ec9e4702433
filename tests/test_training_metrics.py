"""Model-quality metrics against hand-computed values, and the validation design's pure parts."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from features.history import history_from_frames
from training import design, metrics


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


def test_bridge_stretches_with_bgnbd_ratios_and_keeps_unscored_customers() -> None:
    short = pd.DataFrame(
        {"btyd_p_no_purchase": [0.5, 0.8, None], "btyd_expected_purchases": [1.0, 0.5, None]}
    )
    long = pd.DataFrame(
        {"btyd_p_no_purchase": [0.25, 0.4, None], "btyd_expected_purchases": [3.0, 1.0, None]}
    )
    p, v = design.bridge(np.array([0.6, 0.9, 0.7]), np.array([10.0, 4.0, 5.0]), short, long)
    np.testing.assert_allclose(p, [0.3, 0.45, 0.7])  # x P(silent for the rest | silent so far)
    np.testing.assert_allclose(v, [30.0, 8.0, 5.0])  # x expected purchases ratio; unscored: unchanged
    same_p, same_v = design.bridge(np.array([0.6]), np.array([1.0]), short.iloc[:1], None)
    assert same_p[0] == 0.6 and same_v[0] == 1.0


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
    assert [o.date().isoformat() for o in origins] == ["2024-05-31", "2024-06-30"]
