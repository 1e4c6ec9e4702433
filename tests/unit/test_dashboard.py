"""What the retention dashboard stands on, as pure functions: each customer's recent events, the SVG charts
(sessions and CSRF tokens: tests/unit/test_webauth.py, tests/integration/test_sessions.py). The dashboard
itself is tested in tests/e2e/test_dashboard.py."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from features.history import history_from_frames
from serving import charts, store
from tests.helpers.events import last_events


def test_last_events_keep_each_customers_newest_n() -> None:
    t = pd.Timestamp
    history = history_from_frames(
        pd.DataFrame(
            {
                "customer_id": ["a", "a", "a", "b"],
                "timestamp": [t("2024-01-01"), t("2024-01-05"), t("2024-01-09"), t("2024-01-02")],
                "amount": [10.0, 20.0, 30.0, 5.0],
            }
        ),
        interactions=pd.DataFrame(
            {"customer_id": ["a"], "timestamp": [t("2024-01-07")], "type": ["support call"]}
        ),
    )
    events = last_events(history, n=3)
    a = events[events["customer_id"] == "a"]
    assert a["timestamp"].tolist() == [t("2024-01-09"), t("2024-01-07"), t("2024-01-05")]
    assert a["kind"].tolist() == ["purchase", "interaction", "purchase"]
    assert a["amount"].tolist()[::2] == [30.0, 20.0] and pd.isna(a["amount"].iloc[1])
    assert a["detail"].iloc[1] == "support call"
    assert events[events["customer_id"] == "b"]["amount"].tolist() == [5.0]


def test_packed_events_hold_each_customers_last_events_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    t = pd.Timestamp
    history = history_from_frames(
        pd.DataFrame(
            {
                "customer_id": ["a", "a", "a", "a", "b", "c"],
                "timestamp": [
                    *(t("2024-01-01"), t("2024-01-09"), t("2024-01-09"), t("2024-01-05 10:30:01.25")),
                    *(t("2024-01-02"), t("2024-01-03")),
                ],
                "amount": [10.0, 30.0, 0.1, 20.5, 5.0, 7.0],
                "quantity": [1.0, 2.0, 1.5, 1.0, 1.0, 1.0],
            }
        ),
        interactions=pd.DataFrame(
            {"customer_id": ["a"], "timestamp": [t("2024-01-09")], "type": ['said "hi"']}
        ),
        cancellations=pd.DataFrame({"customer_id": ["a"], "timestamp": [t("2024-01-07")]}),
    )
    frames = list(store.packed_event_batches(history, n=4, rows=2))
    assert [f["customer_id"].tolist() for f in frames] == [["a", "b"], ["c"]]  # customer order, 2 a frame
    a = store.unpack_events(frames[0]["events"].iloc[0])
    # newest first; at the same time by kind (interaction before purchase), then in table order
    assert a["timestamp"].tolist() == [t("2024-01-09")] * 3 + [t("2024-01-07")]
    assert a["kind"].tolist() == ["interaction", "purchase", "purchase", "cancellation"]
    assert a["amount"].tolist()[1:3] == [30.0, 0.1] and a["amount"].isna().tolist() == [
        True,
        False,
        False,
        True,
    ]
    assert a["detail"].tolist() == ['said "hi"', "quantity 2", "quantity 1.5", ""]  # as the rows had it
    # the same events, times as the per-event rows stored them, as last_events gives them
    rows = last_events(history, n=4)
    same = rows[rows["customer_id"] == "a"].drop(columns="customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, same, check_dtype=False)
    assert '"timestamp":["2024-01-02 00:00:00.000000"]' in frames[0]["events"].iloc[1]
    # a long history goes in passes over a share of the customers each: the same rows
    monkeypatch.setattr(store, "PACKED_EVENTS_PER_PASS", 3)  # 8 events: 3 passes
    passes = pd.concat(list(store.packed_event_batches(history, n=4, rows=2)))
    assert sorted(zip(passes["customer_id"], passes["events"], strict=True)) == sorted(
        zip(*(pd.concat(frames)[c] for c in ("customer_id", "events")), strict=True)
    )


def test_charts_say_their_numbers_and_escape_labels() -> None:
    svg = str(charts.bars([("gold", 30), ("<b>", 10)], "Customers & tiers"))
    assert "<title>Customers &amp; tiers</title>" in svg and "&lt;b&gt;" in svg and "<b>" not in svg
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([\d.]+)"', svg)]
    assert widths[0] == pytest.approx(3 * widths[1], abs=0.2)
    marked = str(charts.bars([("a", 0.5), ("b", 0.25), ("c", 0.1)], "PSI", fmt="{:.3f}", threshold=0.25))
    assert marked.count(f'fill="{charts.LINE}"') == 2 and marked.count(f'fill="{charts.BAR}"') == 1
    assert "threshold 0.250" in marked and "stroke-dasharray" in marked
    under = str(charts.bars([("a", 0.05)], "PSI", threshold=0.25))  # the scale reaches the threshold
    width = float(re.search(r'<rect [^>]*width="([\d.]+)"', under).group(1))
    assert width == pytest.approx((480 - 110 - 90) * 0.05 / 0.25, abs=0.1)
    line = str(charts.line([("Jan", 0.25), ("Feb", 0.75)], "P(churn)"))
    assert "0.25" in line and "0.75" in line and line.count("<circle") == 2


def test_the_customer_page_names_the_model_that_scored_the_customer() -> None:
    from serving.dashboard import churn_model

    assert churn_model({"churn_model": "contract_hazard"}) == {
        "name": "contract_hazard",
        "label": "contract: cancellation hazard",
    }
    assert churn_model({"churn_model": "purchase_silence"}) == {
        "name": "purchase_silence",
        "label": "purchase silence",
    }
    # a snapshot written before the column existed, a null, or no score at all: nothing shown
    assert churn_model({"churn_probability": 0.4}) is None
    assert churn_model({"churn_model": None}) is None
    assert churn_model(None) is None
