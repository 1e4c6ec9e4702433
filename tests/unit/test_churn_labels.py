"""The churn model's own labels (issue 16): when it learns H-day labels at its own origins
(training.design.churn_design), and how its validation window's segment metrics join the value model's
(training.pipeline.merge_churn_quality). Hand-built history and tables."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from features.sets import get_feature_set
from tests.helpers.frames import end_of_day as _end
from tests.helpers.frames import weekly_history as _history
from training.config import ParityConfig, TrainingConfig
from training.design import churn_columns, churn_design, model_columns
from training.pipeline import merge_churn_quality


def test_the_churn_model_learns_h_day_labels_at_month_ends_whose_labels_end_by_the_cutoff() -> None:
    history, t = _history(), _end(2021, 6, 30)
    got = churn_design(history, t, 91, 182, "full", 3, 60)
    assert got is not None
    days, origins = got
    assert days == 182
    # H-day labels end by T up to 2020-11-30 (2020-12-31 + 182 d = 2021-07-01 is one day late): the latest
    # three are 2020-09-30 .. 11-30; 2020-05-31 (the latest a full H before 11-30) trains for validation
    assert origins == [_end(2020, 5, 31), _end(2020, 9, 30), _end(2020, 10, 31), _end(2020, 11, 30)]
    assert all(o + timedelta(days=182) <= t for o in origins)
    # more origins than asked for are never taken; the validating one is inside the eight
    eight = churn_design(history, t, 91, 182, "full", 8, 60)
    assert eight is not None and len(eight[1]) == 8 and eight[1][-1] == _end(2020, 11, 30)


def test_short_labels_a_short_horizon_or_a_short_history_keep_the_bridge() -> None:
    history, t = _history(), _end(2021, 6, 30)
    assert churn_design(history, t, 91, 182, "short", 8, 60) is None  # the configured design before
    assert churn_design(history, t, 91, 91, "full", 8, 60) is None  # H = h: nothing to bridge
    # 273-day labels: only 2020-03-31 .. 2020-09-30 end by T, none a full H before the latest: no validation
    assert churn_design(history, t, 91, 273, "full", 8, 60) is None
    # at 2020-12-31 no 182-day label ends early enough for two origins
    assert churn_design(history, _end(2020, 12, 31), 91, 182, "full", 8, 60) is None


def test_the_default_configuration_learns_h_day_churn_labels() -> None:
    config = TrainingConfig()
    assert config.churn_labels == "full" and config.churn_origins == 8
    assert TrainingConfig.load().churn_labels == "full"  # the project's training.yaml


def _row(by: str, segment: str, **values: object) -> dict[str, object]:
    base: dict[str, object] = {
        "by": by,
        "segment": segment,
        "customers": 1000,
        "churn_rate": 0.5,
        "mean_probability": 0.5,
        "calibration_gap": 0.0,
        "churn_auc": 0.9,
        "churn_brier": 0.1,
        "actual_value": 10.0,
        "predicted_value": 10.0,
        "value_error": 0.0,
        "flags": [],
    }
    return {**base, **values}


def test_segment_tables_take_churn_from_the_churn_window_and_value_from_the_value_window() -> None:
    parity = ParityConfig(
        min_customers=200, max_auc_drop=0.05, max_calibration_gap=0.05, max_value_error=0.25
    )
    value = [
        _row("all", "all"),
        _row("region", "north", value_error=0.4, churn_auc=0.1),  # not the churn model's churn fields
        _row("region", "south"),
        _row("region", "east"),  # not in the churn window: left out
    ]
    churn = [
        _row("all", "all", customers=800, churn_auc=0.95, churn_rate=0.6, mean_probability=0.6),
        _row("region", "north", customers=300, churn_auc=0.93, churn_rate=0.4, mean_probability=0.5,
             calibration_gap=0.1),
        _row("region", "south", customers=100, churn_auc=0.7),  # too small to flag
    ]  # fmt: skip
    got = merge_churn_quality(value, churn, parity)
    keys = [(r["by"], r["segment"]) for r in got]
    assert keys == [("all", "all"), ("region", "north"), ("region", "south")]
    whole, north, south = got
    assert whole["churn_auc"] == 0.95 and whole["churn_customers"] == 800 and whole["customers"] == 1000
    assert north["churn_auc"] == 0.93 and north["calibration_gap"] == 0.1 and north["value_error"] == 0.4
    assert north["customers"] == 1000 and north["churn_customers"] == 300
    # flags recomputed on the merged row: its calibration (0.1 > 0.05) and its value (+40 % > 25 %)
    assert len(north["flags"]) == 2 and "gap +0.100" in north["flags"][0] and "+40.0%" in north["flags"][1]
    assert south["churn_auc"] == 0.7 and south["flags"] == []  # value window: 1000 customers, nothing off
    assert whole["flags"] == []


def test_a_churn_model_at_h_keeps_the_customer_age_columns_it_is_told_to_and_no_other() -> None:
    history = _history()
    fs = get_feature_set("rfm_v1")
    exclude = TrainingConfig().exclude_features
    value = model_columns(fs, history, exclude)
    churn = churn_columns(fs, history, exclude, ("tenure_days",))
    assert "tenure_days" not in value and "tenure_days" in churn
    assert [c for c in churn if c != "tenure_days"] == value  # the value columns, in the same order
    assert churn.index("tenure_days") < churn.index("monetary_mean")  # where the set has it
    # nothing kept: the value columns; a kept name that is not excluded adds nothing
    assert churn_columns(fs, history, exclude, ()) == value
    assert churn_columns(fs, history, exclude, ("recency_days",)) == value


def test_churn_keep_features_names_a_typo() -> None:
    """A name in churn_keep_features that is no feature is refused by name, not silently ignored."""
    with pytest.raises(ValidationError, match="churn_keep_features") as err:
        TrainingConfig(churn_keep_features=["tenure_days", "tenure_dayz"])
    assert "tenure_dayz" in str(err.value)
    assert TrainingConfig(exclude_features=[]).churn_keep_features == ("tenure_days", "signup_tenure_days")
