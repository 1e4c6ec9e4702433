"""The feature builder on hand-built frames: feature sets, absent families, cutoffs and horizons, the spine.
The CLI and CDNOW runs are in tests/integration/test_features_build.py."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from features.build import (
    build_spine,
    build_training_set,
    check_columns,
    parse_cutoff,
    parse_horizon,
    resolve_columns,
)
from features.history import history_from_frames
from features.sets import FEATURE_SETS, FeatureSetError, _check_registry, get_feature_set


def test_missing_families_are_absent_not_zero() -> None:
    tx = pd.DataFrame({"customer_id": ["a"], "timestamp": [datetime(2024, 1, 5)], "amount": [3.0]})
    history = history_from_frames(tx)
    columns = resolve_columns("core_v1", history)
    assert "recency_days" in columns and "btyd_p_alive" in columns
    assert not any(c.startswith(("complaint_", "days_since_", "attr_")) for c in columns)
    assert "n_categories" not in columns and "signup_tenure_days" not in columns


def test_scoring_refuses_rows_of_another_feature_set() -> None:
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "a"],
            "timestamp": pd.to_datetime(["2024-01-05", "2024-02-05"]),
            "amount": [3.0, 4.0],
        }
    )
    history = history_from_frames(tx)
    rows = build_training_set(history, ["2024-01-31"], "3d", "rfm_v1")
    check_columns(resolve_columns("rfm_v1", history), rows, "rfm_v1")  # same set: accepted
    with pytest.raises(FeatureSetError, match="do not match feature set core_v1"):
        check_columns([*resolve_columns("rfm_v1", history), "complaint_30d"], rows, "core_v1")


def test_feature_sets_name_registered_features() -> None:
    _check_registry()
    assert get_feature_set("core_v1").key == "core_v1"
    known = "known: core_v1, core_v2, core_v3, rfm_v1"
    with pytest.raises(FeatureSetError, match=f"unknown feature set 'core_v9'; {known}"):
        get_feature_set("core_v9")
    assert set(FEATURE_SETS["rfm_v1"].features) < set(FEATURE_SETS["core_v1"].features)
    assert set(FEATURE_SETS["core_v1"].features) < set(FEATURE_SETS["core_v2"].features)
    assert set(FEATURE_SETS["core_v2"].features) < set(FEATURE_SETS["core_v3"].features)


def test_cutoff_and_horizon_parsing() -> None:
    assert parse_cutoff("1997-09-30") == datetime(1997, 9, 30, 23, 59, 59, 999999)
    assert parse_cutoff("1997-09-30T12:00:00") == datetime(1997, 9, 30, 12)
    assert parse_horizon("273d") == 273 and parse_horizon("13w") == 91 and parse_horizon(5) == 5
    with pytest.raises(ValueError, match="expected days like '90d'"):
        parse_horizon("3 months")


def test_an_event_recorded_after_the_cutoff_does_not_make_a_customer_eligible() -> None:
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "timestamp": pd.to_datetime(["2024-01-05", "2024-01-06"]),
            "amount": [3.0, 4.0],
            "recorded_at": pd.to_datetime(["2024-01-05", "2024-02-10"]),  # b's purchase reached the CRM late
        }
    )
    spine = build_spine(history_from_frames(tx), ["2024-01-31", "2024-02-29"]).to_pylist()
    assert [(r["customer_id"], r["cutoff"].month) for r in spine] == [("a", 1), ("a", 2), ("b", 2)]
