"""PSI and reference binning on hand-built frames with hand-computed values; the drift judgement; the retrain
decision and its lock. The model-health alert's lifecycle in a store is in tests/integration/test_drift.py."""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import ConfigError, parse
from serving import monitoring
from serving.config import DriftConfig, ServingConfig
from training import drift, retrain
from training.config import RetrainConfig

T0 = datetime(2025, 1, 31)


def test_psi_hand_computed() -> None:
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5)
    assert drift.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert drift.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    # an empty expected bin is floored at EPSILON = 1e-4 (not renormalised):
    # (0.5 - 1) ln(0.5/1) + (0.5 - 1e-4) ln(0.5/1e-4)
    assert drift.psi([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.5 * math.log(2) + 0.4999 * math.log(5000))
    assert drift.psi([0.0, 1.0], [0.0, 1.0]) == 0.0  # both empty: no contribution
    with pytest.raises(ValueError, match="same bins"):
        drift.psi([0.5, 0.5], [1.0])


def test_reference_bins_numeric_categorical_constant_and_nulls() -> None:
    frame = pd.DataFrame(
        {
            "x": np.arange(1.0, 11.0),  # deciles at 1.9, 2.8, ..., 9.1: one value per bin
            "flag": [0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
            "k": [3.0] * 10,
            "gap": [1.0, None] * 5,
            "plan": ["a", "b", None, "a", "a", "b", "a", "a", "a", "a"],
        }
    )
    ref = drift.reference(frame, categorical=["plan"])
    assert ref["x"]["edges"] == pytest.approx([1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.2, 9.1])
    assert ref["x"]["proportions"] == pytest.approx([0.1] * 10 + [0.0])  # ten bins, then nulls
    # quantiles of a 0/1 column: 0 up to the 80 % quantile, then 0.2 and 1 (interpolated): three bins
    assert ref["flag"]["edges"] == pytest.approx([0.0, 0.2, 1.0])
    assert ref["flag"]["proportions"] == pytest.approx([0.8, 0.0, 0.2, 0.0, 0.0])
    assert ref["k"]["edges"] == [3.0] and ref["k"]["proportions"] == [1.0, 0.0, 0.0]  # constant: one bin
    assert ref["gap"]["proportions"] == pytest.approx([0.5, 0.0, 0.5])  # nulls are their own bin
    assert ref["plan"] == {
        "kind": "categorical",
        "categories": ["a", "b"],
        "proportions": pytest.approx([0.7, 0.2, 0.0, 0.1]),  # a, b, other, null
        "n": 10,
    }

    later = pd.DataFrame(
        {
            "x": np.arange(1.0, 11.0) * 3,  # 3, 6, 9 in the bins ending 3.7, 6.4, 9.1; 12..30 above 9.1
            "flag": [0] * 10,
            "k": [3.0] * 10,
            "gap": [1.0, None] * 5,
            "plan": ["a"] * 5 + ["z"] * 5,  # a category never seen at T goes to `other`
        }
    )
    assert drift.proportions(later["x"], ref["x"]) == pytest.approx([0, 0, 0.1, 0, 0, 0.1, 0, 0, 0.1, 0.7, 0])
    assert drift.proportions(later["plan"], ref["plan"]) == pytest.approx([0.5, 0.0, 0.5, 0.0])
    psi = drift.compare(ref, later)
    assert list(psi)[:2] == ["plan", "x"]  # worst first
    assert psi["k"] == 0.0 and psi["gap"] == 0.0
    # plan: a 0.7 -> 0.5, b 0.2 -> 1e-4, other 1e-4 -> 0.5, null 0.1 -> 1e-4
    expected = (
        (0.5 - 0.7) * math.log(0.5 / 0.7)
        + (1e-4 - 0.2) * math.log(1e-4 / 0.2)
        + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
        + (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    )
    assert psi["plan"] == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['x'\]"):
        drift.compare(ref, later.drop(columns=["x"]))
    with pytest.raises(ValueError, match="no rows"):
        drift.reference(frame.iloc[:0])


def test_assess_counts_watched_columns_and_any_score() -> None:
    config = DriftConfig(psi_alert=0.25, min_features=2)
    psi = {"amount_90d": 0.9, "recency_days": 0.1, "predicted_value": 0.05, "churn_probability": 0.02}
    one = monitoring.assess(psi, config)
    assert one.over == ["amount_90d"] and not one.alert  # one input over, two needed
    two = monitoring.assess({**psi, "recency_days": 0.3}, config)
    assert two.alert and two.over == ["amount_90d", "recency_days"]
    assert two.reasons[0] == "feature amount_90d: PSI 0.900 >= 0.25"
    score = monitoring.assess({**psi, "predicted_value": 0.4}, config)
    assert score.alert and "score predicted_value: PSI 0.400 >= 0.25" in score.reasons
    features_only = DriftConfig(psi_alert=0.25, watch=("features",))
    quiet = monitoring.assess({"amount_90d": 0.1, "predicted_value": 3.0}, features_only)
    assert not quiet.alert and quiet.worst == ("amount_90d", 0.1)
    with pytest.raises(ConfigError, match=r"serving\.yaml: 'drift\.watch\.0' is 'labels'; expected one of"):
        parse(ServingConfig, {"drift": {"watch": ["labels"]}}, "serving.yaml")
    with pytest.raises(ConfigError, match=r"serving\.yaml: unknown key\(s\) drift\.psi "):
        parse(ServingConfig, {"drift": {"psi": 0.2}}, "serving.yaml")


def test_retrain_reasons() -> None:
    settings = RetrainConfig(every_days=30, on_drift=True)
    drifted = {
        "alert": True,
        "model_version": "3",
        "as_of": T0,
        "max_psi": 1.2,
        "worst": "amount_90d",
        "over": 4,
        "psi_alert": 0.25,
    }
    fresh = retrain.Signals("3", "4", 2.0, None)
    assert retrain.reasons(fresh, settings) == []
    assert "no drift measured yet" in retrain.quiet_reason(fresh, settings)
    assert [k for k, _ in retrain.reasons(fresh, settings, force=True)] == ["force"]
    on_champion = retrain.Signals("3", "4", 2.0, drifted)
    ((kind, text),) = retrain.reasons(on_champion, settings)
    assert kind == "drift" and "max PSI 1.200 (amount_90d)" in text
    assert retrain.reasons(on_champion, settings.model_copy(update={"on_drift": False})) == []
    old_drift = retrain.Signals("4", "4", 2.0, drifted)  # measured on version 3; 4 is the champion now
    assert retrain.reasons(old_drift, settings) == []
    assert "not the champion" in retrain.quiet_reason(old_drift, settings)
    stale = retrain.Signals("3", "4", 30.5, None)
    assert [k for k, _ in retrain.reasons(stale, settings)] == ["schedule"]
    assert retrain.reasons(stale, settings.model_copy(update={"every_days": None})) == []
    empty = retrain.Signals(None, None, None, None)
    assert retrain.reasons(empty, settings) == [("schedule", "no champion yet")]


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    path = tmp_path / "retrain.lock"
    busy = rf"another retrain is running \(pid {os.getpid()} on .+ since "
    with retrain.exclusive(path), pytest.raises(retrain.Busy, match=busy), retrain.exclusive(path):
        pass
    with retrain.exclusive(path):  # released: free again
        pass
