"""Tier hysteresis, tier config and RFM segments: pure rules on hand-built frames, hand-computed results."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from core.config import ConfigError, parse
from serving.config import ServingConfig, TierConfig
from serving.hysteresis import apply_hysteresis
from tests.helpers.frames import TIERS, by_id, raw_tiers
from training.rfm import RfmRank, RfmReference, rfm_segment, rfm_segments

# --- hysteresis -------------------------------------------------------------------------------------------


def test_promotion_is_immediate_and_resets_the_counter() -> None:
    previous = pd.DataFrame({"customer_id": ["a", "b"], "tier": ["silver", "gold"], "runs_below": [0, 1]})
    out = by_id(apply_hysteresis(previous, raw_tiers(a="gold", b="diamond"), TIERS, demote_after=2))
    assert out["a"] == {
        "customer_id": "a",
        "tier": "gold",
        "tier_raw": "gold",
        "runs_below": 0,
        "changed": True,
        "previous_tier": "silver",
    }
    assert (out["b"]["tier"], out["b"]["runs_below"], out["b"]["changed"]) == ("diamond", 0, True)


def test_demotion_waits_for_k_consecutive_runs_below_then_takes_the_latest_raw_tier() -> None:
    state = pd.DataFrame({"customer_id": ["a"], "tier": ["gold"], "runs_below": [0]})
    first = apply_hysteresis(state, raw_tiers(a="silver"), TIERS, demote_after=2)
    assert first.loc[0, ["tier", "runs_below", "changed"]].tolist() == ["gold", 1, False]
    second = apply_hysteresis(first, raw_tiers(a="bronze"), TIERS, demote_after=2)  # 2nd run below: demote
    assert second.loc[0, ["tier", "tier_raw", "runs_below", "changed", "previous_tier"]].tolist() == [
        "bronze",
        "bronze",
        0,
        True,
        "gold",
    ]
    now = apply_hysteresis(state, raw_tiers(a="silver"), TIERS, demote_after=1)  # K = 1: demote at once
    assert now.loc[0, ["tier", "runs_below", "changed"]].tolist() == ["silver", 0, True]


def test_a_run_at_the_current_tier_resets_the_counter() -> None:
    state = pd.DataFrame({"customer_id": ["a"], "tier": ["gold"], "runs_below": [0]})
    below = apply_hysteresis(state, raw_tiers(a="silver"), TIERS, demote_after=2)
    back = apply_hysteresis(below, raw_tiers(a="gold"), TIERS, demote_after=2)
    assert back.loc[0, ["tier", "runs_below", "changed"]].tolist() == ["gold", 0, False]
    again = apply_hysteresis(back, raw_tiers(a="silver"), TIERS, demote_after=2)  # counting starts over
    assert again.loc[0, ["tier", "runs_below"]].tolist() == ["gold", 1]


def test_new_customers_take_their_raw_tier_and_absent_ones_are_not_returned() -> None:
    state = pd.DataFrame({"customer_id": ["gone"], "tier": ["gold"], "runs_below": [1]})
    out = apply_hysteresis(state, raw_tiers(n="silver"), TIERS, demote_after=3)
    assert out.to_dict("records") == [
        {
            "customer_id": "n",
            "tier": "silver",
            "tier_raw": "silver",
            "runs_below": 0,
            "changed": False,
            "previous_tier": None,
        }
    ]
    assert apply_hysteresis(None, raw_tiers(n="bronze"), TIERS, 3)["tier"].tolist() == ["bronze"]


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="platinum"):
        apply_hysteresis(None, raw_tiers(a="platinum"), TIERS, 2)
    with pytest.raises(ValueError, match="repeated"):
        apply_hysteresis(None, pd.DataFrame({"customer_id": ["a", "a"], "tier_raw": ["gold"] * 2}), TIERS, 2)
    with pytest.raises(ValueError, match="demote_after"):
        apply_hysteresis(None, raw_tiers(a="gold"), TIERS, 0)


@pytest.mark.parametrize(
    "ids",
    [["a", "b", "a"], ["a", "b", "b", "c"], ["c", "b", "a", "c"], [3, "3", 3], [2, 1, 2]],
    ids=["unsorted", "sorted, one repeat", "descending", "mixed types", "numbers"],
)
def test_a_repeated_customer_is_refused_whatever_the_order_or_type_of_the_ids(ids: list[object]) -> None:
    current = pd.DataFrame({"customer_id": pd.Series(ids, dtype=object), "tier_raw": ["gold"] * len(ids)})
    with pytest.raises(ValueError, match="repeated"):
        apply_hysteresis(None, current, TIERS, 2)


def test_sorted_and_unsorted_ids_give_the_same_tiers() -> None:
    state = pd.DataFrame({"customer_id": ["b", "c"], "tier": ["diamond", "gold"], "runs_below": [1, 0]})
    ordered = raw_tiers(a="gold", b="silver", c="diamond")
    shuffled = ordered.iloc[[2, 0, 1]]
    got = apply_hysteresis(state, shuffled, TIERS, 2).set_index("customer_id").sort_index()
    assert got.equals(apply_hysteresis(state, ordered, TIERS, 2).set_index("customer_id"))
    assert got["tier"].to_dict() == {"a": "gold", "b": "silver", "c": "diamond"}
    assert got["previous_tier"].to_dict() == {"a": None, "b": "diamond", "c": "gold"}


def test_tier_config_from_yaml() -> None:
    raw = yaml.safe_load("tiers:\n  demote_after: 3\n  order: [diamond, gold, silver, bronze]\n")["tiers"]
    assert TierConfig.model_validate(raw) == TierConfig(demote_after=3, order=tuple(TIERS))
    with pytest.raises(ConfigError, match=r"serving\.yaml: unknown key\(s\) tiers\.demote_afer"):
        parse(ServingConfig, {"tiers": {"demote_afer": 3}}, "serving.yaml")


# --- RFM ----------------------------------------------------------------------------------------------------


def test_rfm_segments_against_the_medians_of_the_population() -> None:
    rows = pd.DataFrame(
        {
            "recency_days": [
                5.0,
                40.0,
                None,
                10.0,
            ],  # never bought = infinitely old: median (10 + 40) / 2 = 25
            "frequency_days": [4, 1, 0, 2],  # median 1.5
            "monetary_sum": [100.0, 300.0, 0.0, 20.0],  # median 60
        },
        index=[10, 11, 12, 13],
    )
    assert RfmReference.fit(rows) == RfmReference(25.0, 1.5, 60.0)
    out = rfm_segments(rows)
    assert out.index.tolist() == [10, 11, 12, 13]
    assert out.tolist() == ["important-value", "important-win-back", "general-win-back", "general-value"]


@pytest.mark.parametrize(
    ("recency", "frequency", "monetary", "segment"),
    [
        (10, 5, 200, "important-value"),
        (10, 1, 200, "important-develop"),
        (60, 5, 200, "important-retain"),
        (60, 1, 200, "important-win-back"),
        (10, 5, 50, "general-value"),
        (10, 1, 50, "general-develop"),
        (60, 5, 50, "general-retain"),
        (None, 0, 0, "general-win-back"),
        (30, 2, 100, "general-win-back"),  # at the median is not above it
    ],
)
def test_rfm_segment_of_one_customer(
    recency: float | None, frequency: int, monetary: float, segment: str
) -> None:
    assert rfm_segment(recency, frequency, monetary, RfmReference(30.0, 2.0, 100.0)) == segment


def test_rfm_reference_from_the_rank_a_model_ships() -> None:
    """The rank stores riskiness (frequency and spend negated, never-bought recency as the largest float):
    its medians, turned back, are the population's own."""
    rows = pd.DataFrame(
        {"recency_days": [10.0, 50.0, None], "frequency_days": [3, 1, 0], "monetary_sum": [30.0, 5.0, 0.0]}
    )
    shipped = RfmRank.from_dict(RfmRank.fit(rows).to_dict())
    assert RfmReference.from_rank(shipped) == RfmReference.fit(rows) == RfmReference(50.0, 1.0, 5.0)


def test_rfm_ranks_of_many_rows_look_each_value_up_once_with_the_same_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past `UNIQUE_FROM` rows, RfmRank looks each distinct value up once: the same ranks as row by row,
    ties, missing and infinite values included; and a hand-computed rank for one row."""
    import numpy as np

    from training import rfm

    rng = np.random.default_rng(3)
    n = 3_000
    rows = pd.DataFrame(
        {
            "recency_days": rng.integers(0, 400, n).astype(float),
            "frequency_days": rng.integers(1, 9, n).astype(float),
            "monetary_sum": rng.exponential(40.0, n).round(2),
        }
    )
    rows.loc[::7, "monetary_sum"] = np.nan
    rows.loc[::11, "recency_days"] = np.inf
    rank = RfmRank.fit(rows.iloc[:500])
    monkeypatch.setattr(rfm, "UNIQUE_FROM", 10**9)
    one_by_one = rank.axes(rows)
    monkeypatch.setattr(rfm, "UNIQUE_FROM", 100)
    at_once = rank.axes(rows)
    assert set(at_once) == set(one_by_one)
    for axis, values in at_once.items():
        np.testing.assert_array_equal(values, one_by_one[axis])
    small = RfmRank({"recency_days": np.array([1.0, 2.0, 2.0, 3.0])})
    # 2 sits between 1 and 3 with a tie of two: ranks 1..3 of 4, the middle (1 + 3) / 8
    assert small.axes(pd.DataFrame({"recency_days": [2.0] * 150}))["recency_days"].tolist() == [0.5] * 150
