"""What the retention dashboard stands on, as pure functions: each customer's recent events, the SVG charts
(sessions and CSRF tokens: tests/unit/test_webauth.py, tests/integration/test_sessions.py). The dashboard
itself is tested in tests/e2e/test_dashboard.py."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from features.history import history_from_frames
from serving import charts, store


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
    events = store.last_events(history, n=3)
    a = events[events["customer_id"] == "a"]
    assert a["timestamp"].tolist() == [t("2024-01-09"), t("2024-01-07"), t("2024-01-05")]
    assert a["kind"].tolist() == ["purchase", "interaction", "purchase"]
    assert a["amount"].tolist()[::2] == [30.0, 20.0] and pd.isna(a["amount"].iloc[1])
    assert a["detail"].iloc[1] == "support call"
    assert events[events["customer_id"] == "b"]["amount"].tolist() == [5.0]


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
