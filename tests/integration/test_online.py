"""serving.online: one POST /score request answered without a server, on hand-built inputs: a small model
fitted here on 300 CDNOW customers, a snapshot frame built from the same history (in memory, and written to
a real SQLite store), and requests written out in the test."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core.clock import utc_now
from features.build import parse_cutoff
from features.datasets import cdnow
from features.history import history_from_frames
from serving import scoring, store
from serving.api import Customer, ScoreResponse
from serving.champion import ModelInputs, Served, StoreSnapshot
from serving.config import InlineLimits, ServingConfig
from serving.online import NO_PURCHASE, NOT_IN_SNAPSHOT, RequestError, prerender, score_customers
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


def _snapshot_at(served: Served, transactions: pd.DataFrame, cutoff: str) -> pd.DataFrame:
    t = parse_cutoff(cutoff)
    history = history_from_frames(transactions[transactions["timestamp"] <= t], as_of=t)
    rows = served.artefact.feature_rows(history, t)
    return rows.drop(columns=["cutoff"]).assign(as_of=t)


@pytest.fixture(scope="module")
def snapshot(served: Served, transactions: pd.DataFrame) -> pd.DataFrame:
    """What `diamond score` would leave in the store at CUTOFF: feature rows with their as_of."""
    return _snapshot_at(served, transactions, CUTOFF)


class Frame:
    """A snapshot held in memory from a frame, as the service holds the store's; calls kept."""

    def __init__(self, rows: pd.DataFrame) -> None:
        self.rows, self.calls = rows, 0

    def inputs(self, served: Served) -> ModelInputs:
        self.calls += 1
        config = ServingConfig()
        return ModelInputs.build(served, self.rows, None, config.cold_start_min_purchase_days, config.reasons)


def score(
    served: Served, customers: list[Customer], as_of: str | None, snap: Any, **config: Any
) -> ScoreResponse:
    """score_customers' answer, checked against the documented response model."""
    return ScoreResponse.model_validate_json(
        score_customers(served, customers, as_of, snap, ServingConfig(**config))
    )


def _busiest(transactions: pd.DataFrame) -> pd.DataFrame:
    """The purchases of the customer with the most of them."""
    return transactions[transactions["customer_id"] == transactions["customer_id"].value_counts().index[0]]


def _inline(cid: str, tx: pd.DataFrame, **more: object) -> Customer:
    events = [
        {"timestamp": t.isoformat(), "amount": a} for t, a in zip(tx["timestamp"], tx["amount"], strict=True)
    ]
    return Customer.model_validate({"customer_id": cid, "transactions": events, **more})


def _write(eng: Any, served: Served, rows: pd.DataFrame) -> None:
    """A batch run's snapshot, written as `diamond score` writes it."""
    scores = served.artefact.score(rows).assign(as_of=rows["as_of"].iloc[0], model_version=served.version)
    store.write_snapshot(eng, rows, scores, {"as_of": rows["as_of"].iloc[0], "model_version": served.version})


def _before(eng: Any, served: Served, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The by-id answers as the service computed them before it held the snapshot in memory: the rows read
    from the store per request, scored by serving.scoring (the batch path)."""
    config = ServingConfig()
    rows = store.read_rows(eng, store.FEATURES, ids)
    records = scoring.score_records(
        served.artefact, rows, config.reasons, config.cold_start_min_purchase_days, served.rfm
    )
    return {r["customer_id"]: {**r, "as_of": str(a)} for r, a in zip(records, rows["as_of"], strict=True)}


def _held(eng: Any, finish: Any = None) -> StoreSnapshot:
    config = ServingConfig()
    return StoreSnapshot(eng, config.cold_start_min_purchase_days, config.reasons, finish)


def _by_id(served: Served, ids: list[str], snap: Any) -> list[dict[str, Any]]:
    """The scores of customers by id, as the service sends them (JSON, checked against the response model)."""
    answer = score_customers(served, [Customer(customer_id=c) for c in ids], None, snap, ServingConfig())
    ScoreResponse.model_validate_json(answer)
    scores: list[dict[str, Any]] = json.loads(answer)["scores"]
    return scores


def _same(new: dict[str, Any], old: dict[str, Any]) -> None:
    for field in ("churn_probability", "predicted_value", "value_at_risk"):
        assert new[field] == pytest.approx(old[field], rel=1e-9, abs=1e-12), field
    for field in ("customer_id", "tier", "rfm_segment", "cold_start", "churn_model", "horizon_days", "as_of"):
        assert new[field] == old[field], field
    for field in scoring.CURVE_COLUMNS:  # time to churn: null exactly where the batch path has none
        assert (new[field] is None) == (old[field] is None), field
        if old[field] is not None:
            assert new[field] == pytest.approx(old[field], rel=1e-9, abs=1e-12), field
    assert len(new["reasons"]) == len(old["reasons"])
    for mine, theirs in zip(new["reasons"], old["reasons"], strict=True):
        assert {k: mine[k] for k in ("feature", "direction", "text")} == {
            k: theirs[k] for k in ("feature", "direction", "text")
        }
        assert mine["contribution"] == pytest.approx(theirs["contribution"], rel=1e-9, abs=1e-12)
        if theirs["value"] is None or isinstance(theirs["value"], str):
            assert mine["value"] == theirs["value"]
        else:
            assert mine["value"] == pytest.approx(theirs["value"], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("written", ["per request", "at load"])
def test_by_id_scores_and_reasons_equal_todays(
    served: Served, snapshot: pd.DataFrame, tmp_path: Path, written: str
) -> None:
    """The numbers do not change: every snapshot customer by id, one request each and all in one request,
    from the rows held in memory, equals the rows read from a real store and scored by serving.scoring, to
    1e-9 (scores, reasons and their values) and exactly (tiers, segments, texts, flags)."""
    eng = store.prepare(store.engine(f"sqlite:///{tmp_path / 'diamond.db'}"))
    _write(eng, served, snapshot)
    ids = snapshot["customer_id"].tolist()
    before = _before(eng, served, ids)
    assert len(before) == len(ids) > 100
    held = _held(eng, prerender if written == "at load" else None)
    assert bool(held.inputs(served).answers) == (written == "at load")
    at_once = _by_id(served, ids, held)
    for answer in at_once:
        _same(answer, before[answer["customer_id"]])
    for cid in ids[:40]:
        (answer,) = _by_id(served, [cid], held)
        _same(answer, before[cid])
        assert answer["source"] == "snapshot" and answer["model_version"] == "7" and answer["found"]


def test_a_new_snapshot_or_model_is_picked_up_by_the_next_request(
    served: Served, snapshot: pd.DataFrame, transactions: pd.DataFrame, tmp_path: Path
) -> None:
    """The rows in memory follow the store: a batch run logged after the first request is what the next
    request scores; another served model gets inputs of its own."""
    eng = store.prepare(store.engine(f"sqlite:///{tmp_path / 'diamond.db'}"))
    held = _held(eng)
    cid = snapshot["customer_id"].iloc[0]
    (nothing,) = _by_id(served, [cid], held)
    assert not nothing["found"] and nothing["error"] == NOT_IN_SNAPSHOT  # no batch run yet
    _write(eng, served, snapshot)
    _by_id(served, [cid], held)  # notices the run and loads it in the background
    held.wait()
    (first,) = _by_id(served, [cid], held)
    later = _snapshot_at(served, transactions, "1998-03-31")
    _write(eng, served, later)
    (meanwhile,) = _by_id(served, [cid], held)  # the previous snapshot answers while the new one loads
    held.wait()
    (second,) = _by_id(served, [cid], held)
    assert first["as_of"].startswith("1997-09-30") and second["as_of"].startswith("1998-03-31")
    assert meanwhile["as_of"] in (first["as_of"], second["as_of"])
    _same(second, _before(eng, served, [cid])[cid])
    assert second["churn_probability"] != first["churn_probability"]
    other = Served(served.artefact, "8", served.loaded_at, served.rfm)
    (third,) = _by_id(other, [cid], held)  # a model with nothing held: loaded before it answers
    assert third["model_version"] == "8" and held.inputs(other).served is other


def test_by_id_found_and_unknown_keep_the_request_order(served: Served, snapshot: pd.DataFrame) -> None:
    first, second = snapshot["customer_id"].iloc[[5, 0]]
    customers = [Customer(customer_id=c) for c in (first, "nobody", second)]
    answer = score(served, customers, None, Frame(snapshot))
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
    frame = Frame(snapshot)
    inline, by_id = score(served, customers, CUTOFF, frame).scores
    assert frame.calls == 1
    assert inline.customer_id == f"{cid}-inline" and inline.source == "inline" and by_id.source == "snapshot"
    assert inline.as_of == "1997-09-30T23:59:59.999999"
    for field in ("churn_probability", "predicted_value", "value_at_risk", *scoring.CURVE_COLUMNS):
        assert getattr(inline, field) == pytest.approx(getattr(by_id, field), rel=1e-9), field
    assert (inline.tier, inline.rfm_segment) == (by_id.tier, by_id.rfm_segment)
    assert inline.churn_model == by_id.churn_model == "purchase_silence"  # CDNOW: nobody under contract


def test_inline_as_of_defaults_to_the_latest_event(served: Served, transactions: pd.DataFrame) -> None:
    mine = transactions[transactions["customer_id"] == transactions["customer_id"].iloc[0]].head(3)
    frame = Frame(pd.DataFrame({"customer_id": []}))
    (found,) = score(served, [_inline("a", mine)], None, frame).scores
    assert found.found and found.as_of == mine["timestamp"].max().isoformat()
    later = score(served, [_inline("a", mine)], "1998-01-31", frame)
    assert later.scores[0].as_of == datetime(1998, 1, 31, 23, 59, 59, 999999).isoformat()
    assert later.scores[0].churn_probability != found.churn_probability  # a later as_of: longer silence
    assert frame.calls == 0  # inline customers are never looked up


def test_an_inline_customer_not_eligible_at_as_of_is_not_found(
    served: Served, transactions: pd.DataFrame
) -> None:
    """Cancelled before as_of: not eligible, so nothing to score; the other customers are still answered."""
    mine = transactions[transactions["customer_id"] == transactions["customer_id"].iloc[0]].head(2)
    gone = _inline("gone", mine, cancellations=["1997-06-01"])
    kept = _inline("kept", mine)
    scores = score(served, [gone, kept], CUTOFF, Frame(mine[:0])).scores
    assert [s.customer_id for s in scores] == ["gone", "kept"]
    assert not scores[0].found and scores[0].error == NO_PURCHASE and scores[1].found


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [("not a date", "as_of: "), ("", "as_of: ")],
)
def test_a_bad_as_of_is_a_request_error(served: Served, as_of: str, expected: str) -> None:
    with pytest.raises(RequestError, match=f"^{expected}"):
        score_customers(served, [Customer(customer_id="a")], as_of, Frame(pd.DataFrame()), ServingConfig())


def test_requests_the_model_cannot_score_name_the_field(served: Served, transactions: pd.DataFrame) -> None:
    reader = Frame(pd.DataFrame({"customer_id": []}))
    capped = ServingConfig(max_customers=2)
    three = [Customer(customer_id=c) for c in "abc"]
    with pytest.raises(RequestError, match=r"^customers: 3 given, at most 2 per request$"):
        score_customers(served, three, None, reader, capped)
    assert reader.calls == 0  # refused before the snapshot is read
    mine = transactions.head(1)
    mixed = [_inline("x", mine, attributes={"region": 1}), _inline("y", mine, attributes={"region": "north"})]
    with pytest.raises(RequestError, match=r"(?s)^customers\[\] inline history: .*mixes numbers and text"):
        score_customers(served, mixed, None, reader, ServingConfig())
    late = [_inline("z", transactions[transactions["timestamp"] > "1998-01-01"].head(1))]
    with pytest.raises(RequestError, match=r"(?s)^customers\[\] inline history: .*after the as-of date"):
        score_customers(served, late, CUTOFF, reader, ServingConfig())


def test_inline_limits_are_checked_before_any_work(served: Served, transactions: pd.DataFrame) -> None:
    """serving.yaml `inline:` caps: attributes per customer, events per customer, events per request; a
    request over any of them is refused naming the customer and the setting, before the snapshot is read."""
    mine = _busiest(transactions).head(3)
    frame = Frame(pd.DataFrame({"customer_id": []}))
    caps = InlineLimits(max_attributes=2, max_events_per_customer=4, max_events=5)
    many = _inline("a", mine, attributes={"x": 1.0, "y": 2.0, "z": 3.0})
    with pytest.raises(
        RequestError, match=r"^customers\[1\]\.attributes: 3 given, at most 2 .*max_attributes"
    ):
        score_customers(served, [Customer(customer_id="b"), many], None, frame, ServingConfig(inline=caps))
    first = mine["timestamp"].min()
    visits = [{"timestamp": (first + timedelta(hours=h)).isoformat(), "type": "visit"} for h in (1, 2)]
    busy = _inline("b", mine, interactions=visits)  # 3 purchases + 2 visits = 5 events
    with pytest.raises(RequestError, match=r"^customers\[0\]: 5 events given, at most 4 .*per_customer"):
        score_customers(served, [busy], None, frame, ServingConfig(inline=caps))
    two = [_inline("a", mine), _inline("b", mine)]
    with pytest.raises(RequestError, match=r"^customers: 6 inline events given, at most 5 .*max_events"):
        score_customers(served, two, None, frame, ServingConfig(inline=caps))
    assert frame.calls == 0
    fits = InlineLimits(max_attributes=3, max_events_per_customer=5, max_events=10)
    answer = score(served, [many, busy], None, frame, inline=fits)
    assert [s.found for s in answer.scores] == [True, True]


def test_inline_time_is_read_as_files_read_it(served: Served, transactions: pd.DataFrame) -> None:
    """Timestamps with and without a UTC offset in one request are refused as in a file; as_of, or the
    latest event when none is given, may not lie in the future (the year 9999 once was scored)."""
    mine = _busiest(transactions).head(2)
    frame = Frame(pd.DataFrame({"customer_id": []}))
    mixed = Customer.model_validate(
        {
            "customer_id": "a",
            "transactions": [
                {"timestamp": "1997-01-05T10:00:00+05:00", "amount": 3.0},
                {"timestamp": "1997-01-06T10:00:00", "amount": 4.0},
            ],
        }
    )
    with pytest.raises(RequestError, match=r"(?s)^customers\[\] inline history: .*mixes time zones"):
        score_customers(served, [mixed], CUTOFF, frame, ServingConfig())
    with pytest.raises(RequestError, match=r"^as_of: 9999-12-31 23:59:59 is in the future"):
        score_customers(served, [_inline("a", mine)], "9999-12-31", frame, ServingConfig())
    with pytest.raises(RequestError, match=r"^as_of: .* is in the future"):
        score_customers(served, [Customer(customer_id="a")], "9999-12-31", frame, ServingConfig())
    future = mine.assign(timestamp=[datetime(9999, 1, 1), datetime(9999, 1, 2)])
    with pytest.raises(RequestError, match=r"(?s)^customers\[\] inline history: .*are in the future"):
        score_customers(served, [_inline("a", future)], None, frame, ServingConfig())
    today = (utc_now() - timedelta(hours=1)).date().isoformat()
    (now,) = score(served, [_inline("a", mine)], today, frame).scores
    assert now.found and now.as_of.startswith(today)  # today is not the future
    offsets = Customer.model_validate(
        {
            "customer_id": "a",
            "transactions": [
                {"timestamp": "1997-01-05T23:00:00-02:00", "amount": 3.0},
                {"timestamp": "1997-01-06T10:00:00Z", "amount": 4.0},
            ],
        }
    )
    (utc,) = score(served, [offsets], None, frame).scores
    assert utc.found and utc.as_of == "1997-01-06T10:00:00"  # every offset converted to UTC, as in files


def test_every_answer_has_its_time_to_churn(served: Served, snapshot: pd.DataFrame) -> None:
    """By id and at load alike: P(churned by 30, 60, 90, 180 days) non-decreasing, below P(churn over H),
    each one either 0 or P(H) for a purchase-silence model (training.curve), and the days to churn H - R."""
    art = served.artefact
    assert art.curve is not None and art.horizon_days == 273
    inputs = Frame(snapshot).inputs(served)
    prerender(inputs)
    ids = snapshot["customer_id"].tolist()
    answer = score(served, [Customer(customer_id=c) for c in ids], None, Frame(snapshot))
    recency = dict(zip(snapshot["customer_id"], snapshot["recency_days"], strict=True))
    lapsing = 0
    for s in answer.scores:
        curve = [s.churn_30d, s.churn_60d, s.churn_90d, s.churn_180d]
        assert all(c is not None for c in curve) and curve == sorted(curve), s.customer_id
        assert all(c in (0.0, s.churn_probability) for c in curve)
        r = float(recency[s.customer_id])
        assert s.days_to_churn == max(273.0 - r, 0.0)
        assert (s.churn_180d == s.churn_probability) == (r >= 273 - 180)
        lapsing += s.churn_30d == s.churn_probability
    assert 0 < lapsing < len(ids)  # some lapse within 30 days, not everyone
    assert json.loads(inputs.answers[0])["churn_30d"] is not None


def test_a_model_without_a_curve_still_scores_with_null_curves(
    served: Served, snapshot: pd.DataFrame, transactions: pd.DataFrame, tmp_path: Path
) -> None:
    """A model trained before the curve (no `curve` in scoring.json) loads and scores the same numbers; its
    time-to-churn fields are null, by id and inline. One trained while a cold-start model shipped (a
    `cold_start` key) loads too: the key is ignored."""
    import dataclasses

    from training.artefact import ScoringArtefact

    folder = served.artefact.save(tmp_path / "model")
    loaded = ScoringArtefact.load(folder)
    assert loaded.curve == served.artefact.curve
    spec = json.loads((folder / "scoring.json").read_text(encoding="utf-8"))
    del spec["curve"]
    spec["cold_start"] = {"inputs": ["recency_days"], "mean": [1.0], "scale": [1.0], "coef": [1.0]}
    (folder / "scoring.json").write_text(json.dumps(spec), encoding="utf-8")
    old_art = ScoringArtefact.load(folder)
    assert old_art.curve is None
    old = dataclasses.replace(served, artefact=old_art, version="6")
    cid = snapshot["customer_id"].iloc[3]
    mine = transactions[(transactions["customer_id"] == cid) & (transactions["timestamp"] <= CUTOFF)]
    (new_by_id,) = score(served, [Customer(customer_id=cid)], None, Frame(snapshot)).scores
    both = [Customer(customer_id=cid), _inline("x", mine)]
    by_id, inline = score(old, both, CUTOFF, Frame(snapshot)).scores
    for s in (by_id, inline):
        assert s.found and s.churn_probability == pytest.approx(new_by_id.churn_probability, rel=1e-12)
        assert all(getattr(s, c) is None for c in scoring.CURVE_COLUMNS)
    frame, _ = scoring.score_frame(old_art, snapshot, 3, 2)
    assert frame[scoring.CURVE_COLUMNS].isna().all().all() and len(frame) == len(snapshot)
