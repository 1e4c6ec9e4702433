"""One POST /score request answered: customers given by id are scored from the latest batch snapshot,
customers sent with their history inline are featurised by the same `features/` code as of `as_of`, and the
results come back in request order. Plain Python over the served champion and a snapshot reader, so it is
tested without a server; serving.service only turns `RequestError` into a 400."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pandas as pd

from features.build import end_of, parse_cutoff
from features.history import History, HistoryError, history_from_frames
from serving import scoring
from serving.api import Customer, Score, ScoreResponse
from serving.champion import Served
from serving.config import ServingConfig

Snapshot = Callable[[list[str]], pd.DataFrame]  # customer ids -> their snapshot rows (absent ids left out)
NOT_IN_SNAPSHOT = "not in the latest batch snapshot: send its history inline"
NO_PURCHASE = "no purchase at or before as_of: nothing to score"


class RequestError(ValueError):
    """A request that cannot be scored as sent; the message names the field (a 400 in the service)."""


def score_customers(
    served: Served,
    customers: list[Customer],
    as_of: str | None,
    snapshot: Snapshot,
    config: ServingConfig,
) -> ScoreResponse:
    """Every customer scored with `served`: by id from `snapshot`, or inline as of `as_of` (default: the
    latest inline event). Unknown ids and inline customers with no purchase by `as_of` come back
    `found: false` with the reason. Raises RequestError for too many customers, a bad `as_of` or an
    invalid inline history."""
    _check(customers, config.max_customers)
    if as_of is not None:
        try:
            parse_cutoff(as_of)
        except ValueError as exc:
            raise RequestError(f"as_of: {exc}") from None
    art, top, cold = served.artefact, config.reasons, config.cold_start_min_purchase_days
    results: dict[str, Score] = {}
    ids = [c.customer_id for c in customers if not c.inline]
    rows = snapshot(ids)
    records = scoring.score_records(art, rows, top, cold, served.rfm)
    for record, row in zip(records, rows.itertuples(), strict=True):
        results[record["customer_id"]] = Score(
            found=True, source="snapshot", as_of=str(row.as_of), model_version=served.version, **record
        )
    for cid in ids:
        results.setdefault(cid, Score(customer_id=cid, found=False, error=NOT_IN_SNAPSHOT))
    inline = [c for c in customers if c.inline]
    if inline:
        history, t = _inline_history(inline, as_of)
        rows = scoring.complete_rows(art, art.feature_rows(history, t))
        for record in scoring.score_records(art, rows, top, cold, served.rfm):
            results[record["customer_id"]] = Score(
                found=True, source="inline", as_of=t.isoformat(), model_version=served.version, **record
            )
        for cid in (c.customer_id for c in inline):
            results.setdefault(cid, Score(customer_id=cid, found=False, error=NO_PURCHASE))
    return ScoreResponse(
        model_version=served.version,
        feature_set=art.feature_set,
        horizon_days=art.horizon_days,
        scores=[results[c.customer_id] for c in customers],
    )


def _check(customers: list[Customer], limit: int) -> None:
    """The configured cap, when serving.yaml sets one below the documented limit (ScoreRequest checks the
    rest: at least one customer, each id once)."""
    if len(customers) > limit:
        raise RequestError(f"customers: {len(customers)} given, at most {limit} per request")


def _inline_history(customers: list[Customer], as_of: str | None) -> tuple[History, datetime]:
    """The inline events as a history, validated like files; as_of defaults to the latest event."""
    tx = [{"customer_id": c.customer_id, **t.model_dump()} for c in customers for t in c.transactions or []]
    it = [{"customer_id": c.customer_id, **i.model_dump()} for c in customers for i in c.interactions or []]
    cn = [{"customer_id": c.customer_id, "timestamp": t} for c in customers for t in c.cancellations or []]
    attrs = [{"customer_id": c.customer_id, **(c.attributes or {})} for c in customers if c.attributes]
    frames = {
        "transactions": pd.DataFrame(tx).dropna(axis=1, how="all"),
        "interactions": pd.DataFrame(it).dropna(axis=1, how="all") if it else None,
        "cancellations": pd.DataFrame(cn) if cn else None,
        "customers": pd.DataFrame(attrs) if attrs else None,
    }
    try:
        t = parse_cutoff(as_of) if as_of else None
    except ValueError as exc:
        raise RequestError(f"as_of: {exc}") from None
    try:  # timestamps go in as sent (offsets kept): the history contract's time rules apply as to files
        history = history_from_frames(
            frames["transactions"],
            frames["customers"],
            frames["interactions"],
            frames["cancellations"],
            as_of=t,
        )
    except HistoryError as exc:
        raise RequestError(f"customers[] inline history: {exc}") from None
    return history, t or end_of(history)
