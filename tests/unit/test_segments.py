"""Quality by segment and the parity check (training.segments) on hand-built windows whose metrics are
worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.config import ParityConfig
from training.segments import flagged, mlflow_metrics, segment_labels, segment_quality

# eight customers: region n (rows 0-3) and s (rows 4-7)
Y = np.array([1, 0, 1, 0, 1, 1, 0, 0])
P = np.array([0.9, 0.2, 0.6, 0.4, 0.3, 0.8, 0.7, 0.1])
ACTUAL = np.array([10.0, 0, 0, 5, 0, 0, 20, 20])
PREDICTED = np.array([8.0, 1, 1, 5, 0, 0, 10, 10])
ROWS = pd.DataFrame(
    {
        "attr_region": ["n", "n", "n", "n", "s", "s", "s", "s"],
        "attr_is_subscriber": ["true", "True", "no", None, "1", "0", "yes", "false"],
        "attr_age": [30.0, 41, 22, 35, 50, 61, 19, 44],  # a number: not a segmentation
        "attr_email_opt_in": [True, False, True, True, False, True, True, False],
        "recency_days": [1.0, 2, 3, 4, 5, 6, 7, 8],  # not an attribute
    }
)
LOOSE = ParityConfig(min_customers=1, max_auc_drop=0.05, max_calibration_gap=0.03, max_value_error=0.25)


def _by(table: list[dict[str, object]], by: str) -> dict[object, dict[str, object]]:
    return {r["segment"]: r for r in table if r["by"] == by}


def test_every_segment_gets_hand_computed_metrics() -> None:
    labels = segment_labels(ROWS, PREDICTED, {"top": 0.25, "rest": None}, "mixed", 20)
    assert list(labels) == ["tier", "contract", "region", "is_subscriber", "email_opt_in"]
    # the top 25 % by predicted value: quantile 0.75 of [0,0,1,1,5,8,10,10] is 8 + 0.25 x 2 = 8.5
    assert labels["tier"].tolist() == ["rest"] * 6 + ["top"] * 2
    assert labels["contract"].tolist() == [
        "contractual", "contractual", "non_contractual", "non_contractual",
        "contractual", "non_contractual", "contractual", "non_contractual",
    ]  # fmt: skip
    table = segment_quality(labels, Y, P, ACTUAL, PREDICTED, LOOSE, {"tier": ["top", "rest"]})

    whole = table[0]
    assert (whole["by"], whole["segment"], whole["customers"]) == ("all", "all", 8)
    # positives .9 .6 .3 .8 against negatives .2 .4 .7 .1: 4 + 3 + 2 + 4 = 13 of 16 pairs
    assert whole["churn_auc"] == pytest.approx(13 / 16)
    assert whole["value_error"] == pytest.approx(35 / 55 - 1)

    region = _by(table, "region")
    n, s = region["n"], region["s"]
    assert n["churn_auc"] == pytest.approx(1.0)  # both churners above both stayers
    assert n["churn_rate"] == 0.5 and n["mean_probability"] == pytest.approx(0.525)
    assert n["calibration_gap"] == pytest.approx(0.025)
    assert n["churn_brier"] == pytest.approx((0.01 + 0.04 + 0.16 + 0.16) / 4)
    assert n["actual_value"] == pytest.approx(15 / 4) and n["value_error"] == pytest.approx(0.0)
    assert n["flags"] == []
    assert s["churn_auc"] == pytest.approx(3 / 4)  # .3 loses to .7; the other three pairs are won
    assert s["value_error"] == pytest.approx(20 / 40 - 1)
    assert s["flags"] == [
        "churn AUC 0.750 is 0.062 below the window's 0.812",
        "predicted value -50.0% off the realised total",
    ]

    tiers = _by(table, "tier")
    assert list(tiers) == ["top", "rest"]  # the given order, best first
    top = tiers["top"]  # rows 6, 7: nobody churned
    assert top["churn_auc"] is None and top["churn_rate"] == 0.0
    assert top["calibration_gap"] == pytest.approx(0.4)
    assert top["flags"][0] == "mean P(churn) 0.400 against a churn rate of 0.000 (gap +0.400)"
    rest = tiers["rest"]  # rows 0-5: four of six churned, mean P 3.2 / 6
    assert rest["churn_auc"] == pytest.approx(7 / 8)
    assert rest["flags"] == ["mean P(churn) 0.533 against a churn rate of 0.667 (gap -0.133)"]

    contract = _by(table, "contract")  # rows 0, 1, 4, 6 against rows 2, 3, 5, 7
    assert contract["contractual"]["flags"] == [
        "churn AUC 0.750 is 0.062 below the window's 0.812",
        "predicted value -36.7% off the realised total",  # 19 for 30
    ]
    assert contract["non_contractual"]["churn_auc"] == pytest.approx(1.0)
    assert contract["non_contractual"]["flags"] == ["predicted value -36.0% off the realised total"]
    assert "n" not in {r["segment"] for r in flagged(table)}


def test_small_segments_are_shown_but_never_flagged() -> None:
    labels = {"region": ROWS["attr_region"].to_numpy()}
    strict = ParityConfig(min_customers=5, max_auc_drop=0.0, max_calibration_gap=0.0, max_value_error=0.0)
    table = segment_quality(labels, Y, P, ACTUAL, PREDICTED, strict)
    assert [r["segment"] for r in table] == ["all", "n", "s"]
    assert flagged(table) == []  # four customers each: too few to judge
    tight = strict.model_copy(update={"min_customers": 4})
    assert {r["segment"] for r in flagged(segment_quality(labels, Y, P, ACTUAL, PREDICTED, tight))} == {
        "n",
        "s",
    }


def test_levels_beyond_the_largest_are_pooled_and_missing_is_a_level() -> None:
    rows = pd.DataFrame({"attr_channel": ["a", "a", "a", "b", "b", "c", None, "d"]})
    labels = segment_labels(rows, PREDICTED, {"top": 0.5, "rest": None}, "non_contractual", 2)
    assert "contract" not in labels  # only mixed histories have contract types
    assert labels["channel"].tolist() == ["a", "a", "a", "b", "b", "other", "other", "other"]
    table = segment_quality(labels, Y, P, ACTUAL, PREDICTED, LOOSE)
    # largest first; ties by name
    assert [r["segment"] for r in table if r["by"] == "channel"] == ["a", "other", "b"]
    one = pd.DataFrame({"attr_channel": ["a", None, "b", "b", "b", "b", "b", "b"]})
    assert segment_labels(one, PREDICTED, {"x": None}, "mixed", 5)["channel"][1] == "missing"


def test_mlflow_metric_names_are_safe_and_count_the_flags() -> None:
    labels = {"plan/type": np.array(["pro+", "pro+", "pro+", "pro+", "basic", "basic", "basic", "basic"])}
    table = segment_quality(labels, Y, P, ACTUAL, PREDICTED, LOOSE)
    got = mlflow_metrics(table, "holdout_")
    assert got["holdout_parity_flags"] == 1.0  # basic = rows 4-7 = region s
    assert got["holdout_segment/plan_type/pro_/churn_auc"] == pytest.approx(1.0)
    assert got["holdout_segment/plan_type/basic/value_error"] == pytest.approx(-0.5)
    assert got["holdout_segment/plan_type/basic/customers"] == 4.0
    assert not any("all" in k.split("/") for k in got)  # the whole window is logged as the usual metrics


def test_tiers_are_judged_on_their_levels_not_their_auc() -> None:
    # the same split as the regions: n (rows 0-3) and s (rows 4-7), whose AUC is 0.0625 below the window's
    split = ROWS["attr_region"].to_numpy()
    as_tiers = _by(segment_quality({"tier": split}, Y, P, ACTUAL, PREDICTED, LOOSE), "tier")
    as_region = _by(segment_quality({"region": split}, Y, P, ACTUAL, PREDICTED, LOOSE), "region")
    assert as_tiers["s"]["churn_auc"] == as_region["s"]["churn_auc"] == pytest.approx(0.75)
    assert as_tiers["s"]["flags"] == ["predicted value -50.0% off the realised total"]
    assert as_region["s"]["flags"][0].startswith("churn AUC 0.750")
