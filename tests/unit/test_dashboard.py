"""What the retention dashboard stands on, as pure functions: each customer's recent events, the SVG charts
(sessions and CSRF tokens: tests/unit/test_webauth.py, tests/integration/test_sessions.py). The dashboard
itself is tested in tests/e2e/test_dashboard.py."""

from __future__ import annotations

import re

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import DatasetConfig
from features.history import history_from_frames
from serving import charts, store
from tests.helpers.events import last_events, stored_events


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
    frames = list(store.packed_event_batches(history, n=4, rows=2, part_rows=1))
    # customer order, 2 customers a frame, one a part; each part says its range and counts
    assert [f["part"].tolist() for f in frames] == [[0, 1], [2]]
    parts = pd.concat(frames)
    assert parts["first_key"].tolist() == parts["last_key"].tolist() == [b"a", b"b", b"c"]
    assert parts["customers"].tolist() == [1, 1, 1] and parts["n_events"].tolist() == [4, 1, 1]
    events = stored_events(parts)
    a = events[events["customer_id"] == "a"].drop(columns="customer_id").reset_index(drop=True)
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
    # the same events as last_events gives them
    pd.testing.assert_frame_equal(events, last_events(history, n=4), check_dtype=False)
    # two customers a part: the same events in fewer parts
    pd.testing.assert_frame_equal(
        stored_events(pd.concat(store.packed_event_batches(history, n=4, rows=2, part_rows=2))), events
    )
    # a long history goes in passes over a share of the customers each: the same rows
    monkeypatch.setattr(store, "PACKED_EVENTS_PER_PASS", 3)  # 8 events: 3 passes
    passes = pd.concat(list(store.packed_event_batches(history, n=4, rows=2)))
    pd.testing.assert_frame_equal(stored_events(passes), events)


def test_packed_events_leave_out_the_customers_keep_drops() -> None:
    t = pd.Timestamp
    history = history_from_frames(
        pd.DataFrame(
            {
                "customer_id": ["a", "b", "b", "c"],
                "timestamp": [t("2024-01-01"), t("2024-01-02"), t("2024-01-03"), t("2024-01-04")],
                "amount": [1.0, 2.0, 3.0, 4.0],
            }
        )
    )

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["customer_id"] != "b"]

    parts = pd.concat(store.packed_event_batches(history, keep=keep, part_rows=1))
    assert parts["first_key"].tolist() == [b"a", b"c"]
    assert stored_events(parts)["customer_id"].tolist() == ["a", "c"]
    everybody = pd.concat(store.packed_event_batches(history, keep=lambda f: f.iloc[:0]))
    assert everybody.empty and list(everybody.columns) == store.EVENT_PART_COLUMNS


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


_UNITS = {"s": 1_000_000, "ms": 1000, "us": 1}
_QUANTITIES = st.sampled_from([1.0, 10.0, 2.5, -0.0, -3.0, 0.1, 1e-07, 123456.75, 1e11, float("nan")])


@st.composite
def _event_histories(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Purchases and interactions of three customers at a few times (ties at one time and across kinds), in
    whole seconds, milliseconds or microseconds, and from before 1970 or after; the purchases' quantities
    whole, fractional, signed, tiny, large or missing (their detail text drops a whole number's '.0')."""
    unit = _UNITS[draw(st.sampled_from(sorted(_UNITS)))]
    start = pd.Timestamp(draw(st.sampled_from(["1969-12-31 23:59:50", "2024-01-01"])))
    times = st.integers(0, 5).map(lambda k: start + pd.Timedelta(microseconds=k * 7 * unit))
    event = st.tuples(st.sampled_from("abc"), times)
    bought = draw(st.lists(event, min_size=1, max_size=12))
    called = draw(st.lists(event, max_size=6))
    purchases = pd.DataFrame(
        {
            "customer_id": [c for c, _ in bought],
            "timestamp": [t for _, t in bought],
            "amount": [float(i) for i in range(len(bought))],
            "quantity": draw(st.lists(_QUANTITIES, min_size=len(bought), max_size=len(bought))),
        }
    )
    calls = pd.DataFrame(
        {"customer_id": [c for c, _ in called], "timestamp": [t for _, t in called], "type": "call"}
    )
    return purchases, calls


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=_event_histories(), compact=st.booleans())
def test_packed_events_equal_the_oracle_with_either_order_key(
    frames: tuple[pd.DataFrame, pd.DataFrame], compact: bool
) -> None:
    """The 64-bit order key (times in their coarsest unit) and the 128-bit one pack the same events as the
    oracle's window function: newest first, ties by kind, then table order."""
    purchases, calls = frames
    history = history_from_frames(
        purchases,
        interactions=calls if len(calls) else None,
        config=DatasetConfig(duplicates="keep"),  # a call repeated at one time is two calls
        as_of=pd.Timestamp("2030-01-01"),
    )
    with pytest.MonkeyPatch.context() as patch:
        if not compact:  # no room for any key in 64 bits: the 128-bit one
            patch.setattr(store, "COMPACT_KEY_BITS", 0)
        packed = stored_events(pd.concat(list(store.packed_event_batches(history, n=3, part_rows=2))))
    pd.testing.assert_frame_equal(packed, last_events(history, n=3), check_dtype=False)


def test_the_event_order_key_fits_64_bits_when_the_times_leave_room() -> None:
    con = duckdb.connect()
    events = (
        "SELECT * FROM (VALUES ({t}::TIMESTAMP, 0, 5), ({u}::TIMESTAMP, 1, 0)) AS e(timestamp, source, seq)"
    )

    def key(t: str, u: str, rows: int = 6) -> str:
        return store._event_order_key(con, events.format(t=f"'{t}'", u=f"'{u}'"), rows)

    seconds = key("2020-01-01", "2025-06-30 12:00:01")
    assert "HUGEINT" not in seconds and "// 1000000)" in seconds
    assert "// 1000)" in key("2020-01-01", "2025-06-30 12:00:01.002")
    assert "// 1)" in key("2020-01-01", "2025-06-30 12:00:01.000003")
    # fifty years in microseconds (51 bits) beside 33M rows' numbers (25 bits): 128 bits; in seconds (31): 64
    assert "HUGEINT" in key("1975-01-01", "2025-06-30 12:00:01.000003", rows=2**25)
    assert "HUGEINT" not in key("1975-01-01", "2025-06-30 12:00:01", rows=2**25)
