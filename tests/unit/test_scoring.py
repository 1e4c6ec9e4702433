"""The cold-start flag on hand-built customers: the feature builder counts their purchase days, and a
customer with fewer than `cold_start_min_purchase_days` of them (or none) is flagged."""

from __future__ import annotations

import pandas as pd
import pytest

from features.build import build_features, build_spine
from features.history import history_from_frames
from features.sets import FeatureSet
from serving.scoring import cold_start

T = pd.Timestamp


def _rows() -> pd.DataFrame:
    """Customers with 0, 1 and 2 purchase days at 2024-03-31: `none` only wrote to support, `one` bought
    twice on one day, `two` bought on two days (and `later` bought only after the cutoff: not eligible)."""
    history = history_from_frames(
        pd.DataFrame(
            {
                "customer_id": ["one", "one", "two", "two", "later"],
                "timestamp": [
                    T("2024-01-10 09:00"),
                    T("2024-01-10 17:00"),
                    T("2024-01-10 09:00"),
                    T("2024-02-01 12:00"),
                    T("2024-04-02 10:00"),
                ],
                "amount": [10.0, 5.0, 20.0, 7.0, 3.0],
            }
        ),
        interactions=pd.DataFrame(
            {"customer_id": ["none"], "timestamp": [T("2024-02-15")], "type": ["support_ticket"]}
        ),
    )
    spine = build_spine(history, ["2024-03-31"])
    fs = FeatureSet("cold", 1, ("recency_days", "frequency_days"))
    rows = build_features(history, spine, fs).to_pandas().set_index("customer_id")
    return rows.loc[["none", "one", "two"]]


def test_purchase_days_are_counted_once_each() -> None:
    rows = _rows()
    assert rows["frequency_days"].tolist() == [0, 1, 2]
    assert rows["recency_days"].isna().tolist() == [True, False, False]


@pytest.mark.parametrize(
    ("min_days", "flagged"),
    [(1, [True, False, False]), (2, [True, True, False]), (3, [True, True, True])],
)
def test_cold_start_flags_fewer_purchase_days_than_the_minimum(min_days: int, flagged: list[bool]) -> None:
    assert cold_start(_rows(), min_days).tolist() == flagged
