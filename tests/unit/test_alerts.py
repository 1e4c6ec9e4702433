"""Retention alert rules on hand-built score tables: which customers fire, hold or are left alone, with what
playbook and due time. The alert store (de-duplication, notification, people's actions) is tested in
tests/integration/test_alerts.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.alert_rules import evaluate
from serving.config import Playbook, Rule
from tests.helpers.frames import AT_RISK, SCORES, T0, H, alert_config


def _fired(candidates: pd.DataFrame) -> list[str]:
    return candidates.loc[candidates["fires"], "customer_id"].tolist()


# --- config and rules ---------------------------------------------------------------------------------------


def test_config_from_yaml() -> None:
    assert AT_RISK.rules == (Rule(kind="at-risk", min_tier="gold", min_churn_probability=0.6),)
    assert AT_RISK.playbooks["diamond"] == Playbook(text="account manager call", due_within_hours=24.0)
    assert AT_RISK.playbooks["bronze"] is None
    assert (AT_RISK.cooldown_hours, AT_RISK.renotify_margin, AT_RISK.resolve_margin) == (48.0, 0.25, 0.05)
    with pytest.raises(ValueError, match="platinum"):
        alert_config({"kind": "x", "min_tier": "platinum"})
    with pytest.raises(ValueError, match="no condition"):
        alert_config({"kind": "x"})
    with pytest.raises(ValueError, match="min_churn"):
        alert_config({"kind": "x", "min_churn": 0.5})
    with pytest.raises(ValueError, match="distinct"):
        alert_config({"kind": "x", "tier_drop": 1}, {"kind": "x", "tier_drop": 2})


def test_min_tier_and_churn_fire_together_and_near_misses_only_hold() -> None:
    out = evaluate(SCORES, AT_RISK, None, T0)
    assert _fired(out) == ["a", "e"]  # c churns most but is silver; b is 0.01 short
    assert out["customer_id"].tolist() == ["a", "b", "e"]  # b holds within the resolve margin (>= 0.55)
    a = out.iloc[0].to_dict()
    assert a == {
        "customer_id": "a",
        "kind": "at-risk",
        "tier": "diamond",
        "churn_probability": 0.7,
        "predicted_value": 1000.0,
        "value_at_risk": pytest.approx(700.0),
        "reasons": ["reason of a"],
        "playbook": "account manager call",
        "due_at": T0 + 24 * H,
        "fires": True,
        "priority": pytest.approx(700.0),  # the rank: value at risk (alert_rules.priority)
    }
    assert out.iloc[2]["due_at"] == T0 + 72 * H  # gold


def test_churn_threshold_alone() -> None:
    out = evaluate(SCORES, alert_config({"kind": "churn", "min_churn_probability": 0.85}), None, T0)
    assert out["customer_id"].tolist() == ["c"]
    assert out.loc[0, "playbook"] == "automated win-back campaign"
    assert out.loc[0, "due_at"] == T0 + 168 * H


def test_tier_drop_compares_with_the_last_run() -> None:
    config = alert_config({"kind": "drop", "tier_drop": 2})
    before = {"a": "diamond", "b": "diamond", "c": "diamond", "d": "silver"}  # e has no previous tier
    out = evaluate(SCORES, config, before, T0)
    assert _fired(out) == ["c"]  # diamond -> silver: 2 levels; b and d dropped 1
    promoted = evaluate(SCORES, config, {"a": "gold", "c": "diamond"}, T0)
    assert "a" not in promoted["customer_id"].tolist()  # promoted since: a drop alert would resolve
    assert evaluate(SCORES, config, None, T0)["fires"].sum() == 0


def test_top_k_value_at_risk_ranks_the_whole_run() -> None:
    out = evaluate(SCORES, alert_config({"kind": "top", "top_k_value_at_risk": 2}), None, T0)
    assert out["customer_id"].tolist() == ["a", "b"]
    both = evaluate(
        SCORES, alert_config({"kind": "top", "top_k_value_at_risk": 3, "min_tier": "gold"}), None, T0
    )
    assert _fired(both) == ["a", "b", "e"]  # e is 3rd; c (4th) is silver anyway
    tight = evaluate(
        SCORES, alert_config({"kind": "top", "top_k_value_at_risk": 2, "min_tier": "silver"}), None, T0
    )
    assert _fired(tight) == ["a", "b"]


def test_bronze_alerts_have_no_playbook() -> None:
    out = evaluate(SCORES, alert_config({"kind": "all-churn", "min_churn_probability": 0.1}), None, T0)
    d = out.set_index("customer_id").loc["d"]
    assert pd.isna(d["playbook"]) and pd.isna(d["due_at"])
    assert out["customer_id"].tolist() == ["a", "b", "e", "c", "d"]  # ranked by value at risk


def test_scores_with_only_raw_tiers_and_unknown_tiers() -> None:
    raw = SCORES.rename(columns={"tier": "tier_raw"})
    assert _fired(evaluate(raw, AT_RISK, None, T0)) == ["a", "e"]
    bad = SCORES.assign(tier=["diamond", "gold", "silver", "bronze", "platinum"])
    with pytest.raises(ValueError, match="platinum"):
        evaluate(bad, AT_RISK, None, T0)


def test_places_by_value_at_risk_are_exact_for_the_top_k_only() -> None:
    """Largest value at risk first, ties by customer_id, missing last; places past k are all k."""
    from serving.alert_rules import _places

    s = pd.DataFrame(
        {
            "customer_id": ["d", "b", "a", "c", "e", "f"],
            "value_at_risk": [5.0, 7.0, 5.0, np.nan, 5.0, 1.0],
        }
    )
    # by value: b 7; then a, d, e at 5 (by id); f 1; c missing
    assert _places(s, 3).tolist() == [2, 0, 1, 3, 3, 3]
    assert _places(s, 6).tolist() == [2, 0, 1, 5, 3, 4]
    assert _places(s, 10).tolist() == [2, 0, 1, 5, 3, 4]
    assert _places(s, 0).tolist() == [0] * 6


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "Z", "ä", "a1"]), min_size=1, max_size=6, unique=True),
    st.lists(
        st.tuples(
            st.integers(0, 5), st.sampled_from(["x", "y"]), st.sampled_from([1.0, 0.5, -0.0, 0.0, np.nan])
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_candidates_are_ordered_as_a_stable_sort_on_priority_customer_and_kind(
    ids: list[str], picks: list[tuple[int, str, float]], sort_ids: bool
) -> None:
    """`candidate_order` (lexsort on each candidate's row where the score ids are sorted) orders as pandas'
    stable sort on (priority descending, missing last; customer_id; kind) does, sorted ids or not."""
    from serving.alert_rules import candidate_order

    score_ids = pd.Series(sorted(ids) if sort_ids else ids, dtype=object)
    seen = {(i % len(ids), kind): p for i, kind, p in picks}  # one candidate per (customer, kind)
    rows = [r for r, _ in seen]
    out = pd.DataFrame(
        {
            "customer_id": pd.Series(score_ids.to_numpy()[rows], dtype=object),
            "kind": [k for _, k in seen],
            "priority": list(seen.values()),
            "_row": np.array(rows, dtype=np.int64),
        }
    )
    expected = out.sort_values(
        ["priority", "customer_id", "kind"], ascending=[False, True, True], kind="stable"
    ).index.to_numpy()
    assert candidate_order(out, score_ids).tolist() == expected.tolist()


def test_candidates_repeating_a_customer_and_kind_are_refused_by_name() -> None:
    """One alert per (customer, kind): the same customer under two kinds is fine, twice under one is not."""
    from serving.alert_rules import CANDIDATE_COLUMNS, check_candidates

    rows = pd.DataFrame({c: [None] * 4 for c in CANDIDATE_COLUMNS})
    rows["customer_id"] = ["a", "a", "b", "c"]
    rows["kind"] = ["churn_risk", "tier_drop", "churn_risk", "churn_risk"]
    check_candidates(rows)  # no repeat
    rows.loc[3, "customer_id"] = "a"
    rows.loc[3, "kind"] = "tier_drop"
    with pytest.raises(ValueError, match=r"repeat \(customer_id, kind\), e\.g\. \['a', 'tier_drop'\]"):
        check_candidates(rows)


def test_each_candidate_knows_its_row_in_the_score_table() -> None:
    """`evaluate_at` gives the candidates `evaluate` gives and, for each, its row in the scores by position:
    the row holding the same customer (a batch run finds the reasons there)."""
    from serving.alert_rules import evaluate_at

    rules = alert_config(
        {"kind": "churn", "min_churn_probability": 0.5}, {"kind": "top", "top_k_value_at_risk": 2}
    )
    out, rows = evaluate_at(SCORES, rules, None, T0)
    pd.testing.assert_frame_equal(out, evaluate(SCORES, rules, None, T0))
    assert len(rows) == len(out) and len(set(out["kind"])) == 2
    assert SCORES["customer_id"].to_numpy()[rows].tolist() == out["customer_id"].tolist()


def test_new_alert_ids_are_found_by_customer_and_kind_and_merged_by_position() -> None:
    from serving.alert_store import _ids_of, _in_order

    stored = [(7, "a", "churn"), (8, "a", "top"), (9, "b", "churn")]
    ids = _ids_of(stored, pd.Series(["b", "a", "a"]), pd.Series(["churn", "churn", "top"]))
    assert ids.tolist() == [9, 7, 8]
    with pytest.raises(KeyError, match="'c', 'churn'"):
        _ids_of(stored, pd.Series(["a", "c"]), pd.Series(["top", "churn"]))
    renotify = [(1, 3, 2), (4, 5, 3)]  # (position, id, version) of live alerts notified again
    merged = _in_order(renotify, np.array([0, 2, 3]), ids)
    assert merged == sorted([*renotify, (0, 9, 1), (2, 7, 1), (3, 8, 1)])
    assert _in_order([], np.array([1, 0]), np.array([5, 6])) == [(0, 6, 1), (1, 5, 1)]
    assert _in_order(renotify, np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == renotify


def test_reasons_are_written_as_json_dumps_writes_them() -> None:
    import json

    from serving.alert_rules import reason_texts
    from serving.alert_store import reasons_json

    cells = [["a", 'b"c', "é \u2028 \x01 \\ / tab\t"], [], None, np.nan, "one", ("x", 3)]
    assert reasons_json(pd.Series(cells, dtype=object)) == [json.dumps(reason_texts(c)) for c in cells]


def test_as_text_keeps_texts_and_converts_anything_else_as_astype_str() -> None:
    from serving.alert_rules import as_text

    texts = pd.Series(["a", "b"], dtype=object, index=[3, 5])
    assert as_text(texts) is texts
    mixed = pd.Series(["a", 7, 2.5], dtype=object, index=[1, 2, 3])
    out = as_text(mixed)
    assert out.tolist() == ["a", "7", "2.5"] and out.index.tolist() == [1, 2, 3] and out.dtype == object
    assert as_text(pd.Series([1, 2])).tolist() == ["1", "2"]
    text_dtype = pd.Series(["a", None, "b"], dtype="str", index=[4, 6, 8])
    out = as_text(text_dtype)  # pandas' text dtype: the same values astype(str) gives, as Python texts
    assert out.dtype == object and out.index.tolist() == [4, 6, 8]
    assert out.tolist()[::2] == ["a", "b"] and pd.isna(out.iloc[1])
    assert out.tolist()[::2] == text_dtype.astype(str).to_numpy(dtype=object).tolist()[::2]
