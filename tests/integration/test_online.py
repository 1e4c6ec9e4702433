"""serving.online: one POST /score request answered without a server, on hand-built inputs: a small model
fitted here on 300 CDNOW customers, a snapshot frame built from the same history, and requests written out
in the test."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from features.build import parse_cutoff
from features.datasets import cdnow
from features.history import history_from_frames
from serving.api import Customer
from serving.champion import Served
from serving.config import ServingConfig
from serving.online import NO_PURCHASE, NOT_IN_SNAPSHOT, RequestError, score_customers
from training.config import TrainingConfig
from training.pipeline import fit
from training.rfm import RfmReference

CUTOFF = "1997-09-30"
SMALL = {"n_estimators": 50, "learning_rate": 0.2, "max_depth": 2, "min_child_weight": 5}


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    """The first 300 CDNOW customers' purchases (the bundled file), timestamps as naive UTC."""
    tx = pd.read_csv(cdnow.BUNDLED, dtype={"customer_id": str, "order_id": str})
    tx = tx[tx["customer_id"].isin(sorted(tx["customer_id"].unique())[:300])]
    return tx.assign(timestamp=pd.to_datetime(tx["timestamp"]))


@pytest.fixture(scope="module")
def served(transactions: pd.DataFrame) -> Served:
    history = history_from_frames(transactions, as_of=parse_cutoff(cdnow.AS_OF))
    config = TrainingConfig(trials=1, origins=2, xgboost=SMALL)
    artefact = fit(history, CUTOFF, config).artefact
    return Served(artefact, "7", "2024-01-01T00:00:00+00:00", RfmReference.from_rank(artefact.churn.rfm))


@pytest.fixture(scope="module")
def snapshot(served: Served, transactions: pd.DataFrame) -> pd.DataFrame:
    """What `diamond score` would leave in the store at CUTOFF: feature rows with their as_of."""
    t = parse_cutoff(CUTOFF)
    history = history_from_frames(transactions[transactions["timestamp"] <= t], as_of=t)
    rows = served.artefact.feature_rows(history, t)
    return rows.drop(columns=["cutoff"]).assign(as_of=t)


class Reader:
    """The snapshot reader the service passes: rows for the ids asked, absent ids left out; calls kept."""

    def __init__(self, rows: pd.DataFrame) -> None:
        self.rows, self.asked = rows, []

    def __call__(self, ids: list[str]) -> pd.DataFrame:
        self.asked.append(list(ids))
        return self.rows[self.rows["customer_id"].isin(ids)]


def _inline(cid: str, tx: pd.DataFrame, **more: object) -> Customer:
    events = [
        {"timestamp": t.isoformat(), "amount": a} for t, a in zip(tx["timestamp"], tx["amount"], strict=True)
    ]
    return Customer.model_validate({"customer_id": cid, "transactions": events, **more})


def test_by_id_found_and_unknown_keep_the_request_order(served: Served, snapshot: pd.DataFrame) -> None:
    first, second = snapshot["customer_id"].iloc[[5, 0]]
    customers = [Customer(customer_id=c) for c in (first, "nobody", second)]
    reader = Reader(snapshot)
    answer = score_customers(served, customers, None, reader, ServingConfig())
    assert reader.asked == [[first, "nobody", second]]
    assert [s.customer_id for s in answer.scores] == [first, "nobody", second]
    found, unknown, other = answer.scores
    assert found.found and other.found and found.source == other.source == "snapshot"
    assert found.as_of == str(parse_cutoff(CUTOFF)) and found.model_version == "7"
    assert 0 < found.churn_probability < 1 and found.tier in served.artefact.tiers
    assert found.horizon_days == served.artefact.horizon_days and 1 <= len(found.reasons) <= 3
    assert not unknown.found and unknown.error == NOT_IN_SNAPSHOT and unknown.churn_probability is None
    assert (answer.model_version, answer.feature_set) == ("7", served.artefact.feature_set)
    assert answer.horizon_days == served.artefact.horizon_days


def test_inline_history_gives_the_snapshot_numbers(
    served: Served, snapshot: pd.DataFrame, transactions: pd.DataFrame
) -> None:
    """The same customer and cutoff: the same numbers inline as from the snapshot; as_of a bare date is the
    end of that day; inline customers are never looked up in the snapshot."""
    cid = snapshot["customer_id"].iloc[3]
    mine = transactions[(transactions["customer_id"] == cid) & (transactions["timestamp"] <= CUTOFF)]
    customers = [_inline(f"{cid}-inline", mine), Customer(customer_id=cid)]
    reader = Reader(snapshot)
    inline, by_id = score_customers(served, customers, CUTOFF, reader, ServingConfig()).scores
    assert reader.asked == [[cid]]
    assert inline.customer_id == f"{cid}-inline" and inline.source == "inline" and by_id.source == "snapshot"
    assert inline.as_of == "1997-09-30T23:59:59.999999"
    for field in ("churn_probability", "predicted_value", "value_at_risk"):
        assert getattr(inline, field) == pytest.approx(getattr(by_id, field), rel=1e-9), field
    assert (inline.tier, inline.rfm_segment) == (by_id.tier, by_id.rfm_segment)


def test_inline_as_of_defaults_to_the_latest_event(served: Served, transactions: pd.DataFrame) -> None:
    mine = transactions[transactions["customer_id"] == transactions["customer_id"].iloc[0]].head(3)
    (score,) = score_customers(served, [_inline("a", mine)], None, Reader(mine[:0]), ServingConfig()).scores
    assert score.found and score.as_of == mine["timestamp"].max().isoformat()
    later = score_customers(served, [_inline("a", mine)], "1998-01-31", Reader(mine[:0]), ServingConfig())
    assert later.scores[0].as_of == datetime(1998, 1, 31, 23, 59, 59, 999999).isoformat()
    assert later.scores[0].churn_probability != score.churn_probability  # a later as_of: longer silence


def test_an_inline_customer_not_eligible_at_as_of_is_not_found(
    served: Served, transactions: pd.DataFrame
) -> None:
    """Cancelled before as_of: not eligible, so nothing to score; the other customers are still answered."""
    mine = transactions[transactions["customer_id"] == transactions["customer_id"].iloc[0]].head(2)
    gone = _inline("gone", mine, cancellations=["1997-06-01"])
    kept = _inline("kept", mine)
    scores = score_customers(served, [gone, kept], CUTOFF, Reader(mine[:0]), ServingConfig()).scores
    assert [s.customer_id for s in scores] == ["gone", "kept"]
    assert not scores[0].found and scores[0].error == NO_PURCHASE and scores[1].found


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [("not a date", "as_of: "), ("", "as_of: ")],
)
def test_a_bad_as_of_is_a_request_error(served: Served, as_of: str, expected: str) -> None:
    with pytest.raises(RequestError, match=f"^{expected}"):
        score_customers(served, [Customer(customer_id="a")], as_of, Reader(pd.DataFrame()), ServingConfig())


def test_requests_the_model_cannot_score_name_the_field(served: Served, transactions: pd.DataFrame) -> None:
    reader = Reader(pd.DataFrame({"customer_id": []}))
    capped = ServingConfig(max_customers=2)
    three = [Customer(customer_id=c) for c in "abc"]
    with pytest.raises(RequestError, match=r"^customers: 3 given, at most 2 per request$"):
        score_customers(served, three, None, reader, capped)
    assert reader.asked == []  # refused before the snapshot is read
    mine = transactions.head(1)
    mixed = [_inline("x", mine, attributes={"region": 1}), _inline("y", mine, attributes={"region": "north"})]
    with pytest.raises(RequestError, match=r"(?s)^customers\[\] inline history: .*mixes numbers and text"):
        score_customers(served, mixed, None, reader, ServingConfig())
    late = [_inline("z", transactions[transactions["timestamp"] > "1998-01-01"].head(1))]
    with pytest.raises(RequestError, match=r"(?s)^customers\[\] inline history: .*after the as-of date"):
        score_customers(served, late, CUTOFF, reader, ServingConfig())
