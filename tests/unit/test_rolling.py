"""Which cutoffs a rolling backtest runs (training.rolling.plan) and how it summarises them, on a hand-built
history and hand-built summaries."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.frames import end_of_day as _end
from tests.helpers.frames import weekly_history as _history
from training.config import TrainingConfig
from training.rolling import default_cutoffs, plan, summarise, summary_row, worst

CONFIG = TrainingConfig(label_horizon_days=91, origins=2, min_history_days=60)


def test_quarter_ends_with_complete_labels_and_enough_origins() -> None:
    history = _history()
    # labels (T, T + 91 d] end by 2021-06-30 up to 2021-03-31; 2020-03-31 and 2020-06-30 have fewer than
    # two origins whose 91-day labels end by them (the first month end with 60 days of history: 2020-03-31)
    assert default_cutoffs(history, 91, CONFIG) == [_end(2020, 9, 30), _end(2020, 12, 31), _end(2021, 3, 31)]
    # 182 days: 2020-12-31 + 182 d is 2021-07-01, after the end
    assert default_cutoffs(history, 182, CONFIG) == [_end(2020, 9, 30)]
    monthly = CONFIG.model_copy(update={"rolling": CONFIG.rolling.model_copy(update={"every_months": 1})})
    # 2020-07-31 and 08-31 have two origins but none a full label horizon before the latest to validate
    assert default_cutoffs(history, 91, monthly)[0] == _end(2020, 9, 30)
    assert len(default_cutoffs(history, 91, monthly)) == 7  # 2020-09-30 .. 2021-03-31
    assert plan(history, None, [182, 91], CONFIG) == [
        (91, _end(2020, 9, 30)),
        (91, _end(2020, 12, 31)),
        (91, _end(2021, 3, 31)),
        (182, _end(2020, 9, 30)),
    ]


def test_given_cutoffs_are_kept_even_without_labels_and_an_empty_plan_is_an_error() -> None:
    history = _history()
    got = plan(history, ["2021-05-31", "2020-09-30", "2020-09-30"], [91], CONFIG)
    assert got == [(91, _end(2020, 9, 30)), (91, _end(2021, 5, 31))]  # sorted, distinct; May: predicted only
    with pytest.raises(ValueError, match=r"no cutoff to backtest.*365d"):
        plan(history, None, [365], CONFIG)


def test_the_summary_shows_every_row_and_the_worst_where_it_happened() -> None:
    t1, t2, t3 = _end(2020, 9, 30), _end(2020, 12, 31), _end(2021, 3, 31)
    base = {"churn_brier": 0.2, "churn_rate": 0.5, "churn_mean_probability": 0.5, "value_decile_mape": 0.1}
    rows = [
        summary_row(
            182, t1, 90, {**base, "churn_auc": 0.80, "value_gini": 0.7, "value_aggregate_error": 0.05}
        ),
        summary_row(
            91, t2, 100, {**base, "churn_auc": 0.70, "value_gini": 0.6, "value_aggregate_error": -0.2}, 3
        ),
        summary_row(
            91, t1, 80, {**base, "churn_auc": 0.75, "value_gini": 0.5, "value_aggregate_error": 0.1}, 0
        ),
        summary_row(91, t3, 120, None, None, "run-3"),  # labels not complete: predicted only
    ]
    rows[0]["churn_brier"] = 0.3
    summary = summarise(rows)
    assert list(zip(summary["horizon_days"], summary["cutoff"], strict=True)) == [
        (91, t1), (91, t2), (91, t3), (182, t1)
    ]  # fmt: skip
    assert summary["scored"].tolist() == [True, True, False, True]
    assert np.isnan(summary.loc[2, "churn_auc"]) and summary.loc[2, "run_id"] == "run-3"
    w = worst(summary)
    assert w["churn_auc"] == {"value": 0.70, "horizon_days": 91, "cutoff": t2}
    assert w["value_gini"] == {"value": 0.5, "horizon_days": 91, "cutoff": t1}
    assert w["value_aggregate_error"] == {"value": -0.2, "horizon_days": 91, "cutoff": t2}  # largest |error|
    assert w["churn_brier"] == {"value": 0.3, "horizon_days": 182, "cutoff": t1}
    assert worst(summarise([rows[3]])) == {}
