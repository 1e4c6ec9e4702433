"""One POST /score request answered: customers given by id are scored from the latest batch snapshot,
customers sent with their history inline are featurised by the same `features/` code as of `as_of`, and the
results come back in request order. Plain Python over the served champion and a snapshot, so it is tested
without a server; serving.service only turns `RequestError` into a 400.

By id, nothing is computed per request: the snapshot is scored once per served model when it loads, as
arrays (serving.champion.ModelInputs: probabilities, values, tiers, segments, reasons' columns and effects),
and a request looks its customers up and writes their JSON straight from those arrays, without building
models to validate what it built itself. The numbers are those of serving.scoring (the batch path): the
tests compare the two to 1e-9 (tests/integration/test_online.py).

Inline histories are bounded before any work (serving.yaml `inline:` caps on attributes and events), their
timestamps go to the history contract as the text that was sent, so the rules for files apply to them too
(mixed time zones refused), and `as_of` (or, without one, the latest event) may not lie in the future.
"""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol

import numpy as np
import pandas as pd

from core.clock import utc_now
from features.build import end_of, parse_cutoff
from features.history import History, HistoryError, history_from_frames
from serving import scoring
from serving.api import Customer
from serving.champion import ModelInputs, Served
from serving.config import ServingConfig

NOT_IN_SNAPSHOT = "not in the latest batch snapshot: send its history inline"
NO_PURCHASE = "no purchase at or before as_of: nothing to score"
AHEAD = timedelta(hours=14)  # the furthest any time zone is ahead of UTC: later than now + this is the future
RAISES, LOWERS = "raises churn risk", "lowers churn risk"
PRERENDERED = 250_000  # snapshot rows whose answers are written once at load (~170 MB); beyond, per request
KEPT_REASONS = 200_000  # rendered reasons kept per model and snapshot (a few MB); beyond, rendered each time


class RequestError(ValueError):
    """A request that cannot be scored as sent; the message names the field (a 400 in the service)."""


class Snapshot(Protocol):
    """Where by-id customers come from: the snapshot's rows as the served model's inputs, held in memory
    (serving.champion.StoreSnapshot in the service)."""

    def inputs(self, served: Served) -> ModelInputs: ...


def score_customers(
    served: Served,
    customers: list[Customer],
    as_of: str | None,
    snapshot: Snapshot,
    config: ServingConfig,
) -> bytes:
    """The answer to one request as the JSON of serving.api.ScoreResponse: every customer scored with
    `served`, by id from `snapshot`, or inline as of `as_of` (default: the latest inline event). Unknown
    ids and inline customers with no purchase by `as_of` come back `found: false` with the reason. Raises
    RequestError for too many customers, attributes or events, a bad or future `as_of`, or an invalid
    inline history, before any scoring work."""
    check_limits(customers, config)
    t = _as_of(as_of) if as_of is not None else None
    art = served.artefact
    results: dict[str, str] = {}
    ids = [c.customer_id for c in customers if not c.inline]
    if ids:
        results.update(by_id(served, snapshot.inputs(served), ids, config))
    inline = [c for c in customers if c.inline]
    if inline:
        history, when = _inline_history(inline, t)
        rows = scoring.complete_rows(art, art.feature_rows(history, when))
        stamp = when.isoformat()
        for record in scoring.score_records(
            art, rows, config.reasons, config.cold_start_min_purchase_days, served.rfm
        ):
            results[record["customer_id"]] = _json(_found(record, "inline", stamp, served.version))
        for c in inline:
            if c.customer_id not in results:
                results[c.customer_id] = _json(_missing(c.customer_id, NO_PURCHASE))
    head = _json(
        {"model_version": served.version, "feature_set": art.feature_set, "horizon_days": art.horizon_days}
    )
    scores = ",".join(results[c.customer_id] for c in customers)
    return f'{head[:-1]},"scores":[{scores}]}}'.encode()


def by_id(served: Served, inputs: ModelInputs, ids: list[str], config: ServingConfig) -> dict[str, str]:
    """The answers (JSON objects) for customers by id from the snapshot scored in memory; absent ids
    `found: false`."""
    index = inputs.index
    found = [cid for cid in ids if cid in index]
    out: dict[str, str] = {}
    if found and inputs.rows is not None:  # text inputs: the frame path, per request
        rows = [index[cid] for cid in found]
        records = scoring.score_records(
            served.artefact,
            inputs.rows.iloc[rows],
            config.reasons,
            config.cold_start_min_purchase_days,
            served.rfm,
        )
        for record, row in zip(records, rows, strict=True):
            out[record["customer_id"]] = _json(_found(record, "snapshot", inputs.as_of[row], served.version))
    elif found and inputs.answers and config.reasons == inputs.top.shape[1]:
        answers = inputs.answers
        out.update((cid, answers[index[cid]]) for cid in found)
    elif found:
        rendered = _Render(served, inputs, config.reasons)([index[cid] for cid in found])
        out.update(zip(found, rendered, strict=True))
    for cid in ids:
        if cid not in out:
            out[cid] = _json(_missing(cid, NOT_IN_SNAPSHOT))
    return out


def prerender(inputs: ModelInputs) -> None:
    """Write every snapshot row's answer once, when the snapshot loads, if they fit in PRERENDERED rows
    (~0.7 KB each); a by-id request then only joins them. Larger snapshots are written per request."""
    if inputs.rows is None and 0 < len(inputs.ids) <= PRERENDERED:
        inputs.answers.extend(
            _Render(inputs.served, inputs, inputs.top.shape[1])(list(range(len(inputs.ids))))
        )


class _Render:
    """Snapshot rows' answers as JSON text, written straight from the arrays (the fields of
    serving.api.Score in order; numbers as Python's repr, as json.dumps writes them). A reason's text and
    JSON around its contribution depend on the column, the value shown and the direction only: they are
    kept per model and snapshot, so the many customers who share them cost a dictionary lookup."""

    def __init__(self, served: Served, inputs: ModelInputs, top: int) -> None:
        art = served.artefact
        self.inputs, self.top, self.rfm = inputs, top, len(art.columns)
        self.names = scoring.reason_names(art)
        self.tail = f',"source":"snapshot","as_of":%s,"model_version":{_quote(served.version)}}}'
        self.horizon = int(art.horizon_days)
        self.reasons = inputs.cache

    def _reason(self, j: int, shown: float | None, raises: bool) -> tuple[str, str]:
        name = self.names[j]
        value = "null" if shown is None else repr(shown)
        head = (
            f'{{"feature":{_quote(name)},"value":{value},'
            f'"direction":"{RAISES if raises else LOWERS}","contribution":'
        )
        tail = f',"text":{_quote(scoring.words(name, shown, raises))}}}'
        if len(self.reasons) < KEPT_REASONS:
            self.reasons[(j, shown, raises)] = head, tail
        return head, tail

    def __call__(self, rows: list[int]) -> list[str]:
        d, r, k = self.inputs, np.asarray(rows, dtype=np.intp), self.top
        columns = zip(
            rows,
            d.churn[r].tolist(),
            d.value[r].tolist(),
            d.at_risk[r].tolist(),
            d.tier[r].tolist(),
            d.segment[r].tolist(),
            d.cold[r].tolist(),
            d.model[r].tolist(),
            d.curve[r].tolist(),
            d.top[r, :k].tolist(),
            d.effect[r, :k].tolist(),
            d.contribution[r, :k].tolist(),
            d.x[r].tolist(),
            d.rank[r].tolist(),
            strict=True,
        )
        out, known, rfm, quote, last = [], self.reasons, self.rfm, encode_basestring_ascii, self.tail
        names = {n: quote(n) for n in {*d.tier[r].tolist(), *d.segment[r].tolist()}}
        fields = [f',"{c}":' for c in scoring.CURVE_COLUMNS]
        models = {m: quote(m) for m in set(d.model[r].tolist())}
        for (
            row,
            churn,
            value,
            risk,
            tier,
            segment,
            cold,
            model,
            curve,
            top,
            effects,
            contribs,
            x,
            rank,
        ) in columns:
            why = []
            for j, effect, contribution in zip(top, effects, contribs, strict=True):
                if j < 0:
                    continue
                raw = rank if j == rfm else x[j]
                key = (j, None if raw != raw else raw, effect > 0)  # NaN: a missing input, shown as null
                head, tail = known.get(key) or self._reason(*key)
                why.append(f"{head}{contribution!r}{tail}")
            out.append(
                f'{{"customer_id":{quote(d.ids[row])},"found":true,"error":null,'
                f'"churn_probability":{churn!r},"predicted_value":{value!r},'
                f'"horizon_days":{self.horizon},"value_at_risk":{risk!r},'
                f'"tier":{names[tier]},"rfm_segment":{names[segment]},'
                f'"reasons":[{",".join(why)}],"cold_start":{"true" if cold else "false"},'
                f'"churn_model":{models[model]}'
                + "".join(f + ("null" if v != v else repr(v)) for f, v in zip(fields, curve, strict=True))
                + last % quote(d.as_of[row])
            )
        return out


def _json(value: object) -> str:
    """Compact JSON (no spaces), as the service has always written its answers."""
    return json.dumps(value, separators=(",", ":"))


def _quote(text: str) -> str:
    """A JSON string, as json.dumps writes it (ASCII, escaped)."""
    quoted: str = encode_basestring_ascii(text)
    return quoted


def _found(record: dict[str, Any], source: str, as_of: str, version: str) -> dict[str, Any]:
    """A found customer's answer, with every field of serving.api.Score in its order."""
    return {
        "customer_id": record["customer_id"],
        "found": True,
        "error": None,
        "churn_probability": record["churn_probability"],
        "predicted_value": record["predicted_value"],
        "horizon_days": record["horizon_days"],
        "value_at_risk": record["value_at_risk"],
        "tier": record["tier"],
        "rfm_segment": record["rfm_segment"],
        "reasons": record["reasons"],
        "cold_start": record["cold_start"],
        "churn_model": record["churn_model"],
        **{c: record[c] for c in scoring.CURVE_COLUMNS},
        "source": source,
        "as_of": as_of,
        "model_version": version,
    }


def _missing(cid: str, error: str) -> dict[str, Any]:
    return {
        "customer_id": cid,
        "found": False,
        "error": error,
        "churn_probability": None,
        "predicted_value": None,
        "horizon_days": None,
        "value_at_risk": None,
        "tier": None,
        "rfm_segment": None,
        "reasons": [],
        "cold_start": None,
        "churn_model": None,
        **dict.fromkeys(scoring.CURVE_COLUMNS),
        "source": None,
        "as_of": None,
        "model_version": None,
    }


def check_limits(customers: list[Customer], config: ServingConfig) -> None:
    """The configured caps, checked before any work: customers per request (serving.yaml may lower the
    documented limit; ScoreRequest checks the rest), and for inline customers attributes per customer,
    events per customer and events per request (serving.yaml `inline:`)."""
    if len(customers) > config.max_customers:
        raise RequestError(f"customers: {len(customers)} given, at most {config.max_customers} per request")
    caps = config.inline
    total = 0
    for i, c in enumerate(customers):
        if not c.inline:
            continue
        if c.attributes and len(c.attributes) > caps.max_attributes:
            raise RequestError(
                f"customers[{i}].attributes: {len(c.attributes):,} given, at most {caps.max_attributes:,} "
                "per customer (serving.yaml inline.max_attributes)"
            )
        events = len(c.transactions or ()) + len(c.interactions or ()) + len(c.cancellations or ())
        if events > caps.max_events_per_customer:
            raise RequestError(
                f"customers[{i}]: {events:,} events given, at most {caps.max_events_per_customer:,} per "
                "customer (serving.yaml inline.max_events_per_customer)"
            )
        total += events
    if total > caps.max_events:
        raise RequestError(
            f"customers: {total:,} inline events given, at most {caps.max_events:,} per request "
            "(serving.yaml inline.max_events): send fewer customers per request"
        )


def _as_of(text: str) -> datetime:
    try:
        t = parse_cutoff(text)
    except ValueError as exc:
        raise RequestError(f"as_of: {exc}") from None
    _not_future(t, "as_of")
    return t


def _not_future(t: datetime, what: str) -> None:
    """Nothing is scored as of a time no clock has reached yet (a history file's events may not lie in the
    future either, features.history). A bare date (the end of that day) counts from the day's start: today
    is not the future."""
    day_end = t.time() == time(23, 59, 59, 999999)
    if (t.replace(hour=0, minute=0, second=0, microsecond=0) if day_end else t) > utc_now() + AHEAD:
        raise RequestError(
            f"{what}: {t:%Y-%m-%d %H:%M:%S} is in the future; inline histories are scored as of a time "
            "that has passed"
        )


def _inline_history(customers: list[Customer], as_of: datetime | None) -> tuple[History, datetime]:
    """The inline events as a history, validated like files (timestamps as the text sent, no event in the
    future); as_of defaults to the latest event."""
    tx = [{"customer_id": c.customer_id, **t.model_dump()} for c in customers for t in c.transactions or []]
    it = [{"customer_id": c.customer_id, **i.model_dump()} for c in customers for i in c.interactions or []]
    cn = [{"customer_id": c.customer_id, "timestamp": t} for c in customers for t in c.cancellations or []]
    # every inline customer is listed once any has attributes (the contract refuses events of customers
    # missing from a customers table)
    attrs = [{**(c.attributes or {}), "customer_id": c.customer_id} for c in customers]
    attrs = attrs if any(c.attributes for c in customers) else []
    transactions = pd.DataFrame(tx).dropna(axis=1, how="all")
    try:  # timestamps go in as sent (offsets kept): the history contract's time rules apply as to files
        history = history_from_frames(
            transactions,
            pd.DataFrame(attrs) if attrs else None,
            pd.DataFrame(it).dropna(axis=1, how="all") if it else None,
            pd.DataFrame(cn) if cn else None,
            as_of=as_of,
        )
    except HistoryError as exc:
        raise RequestError(f"customers[] inline history: {exc}") from None
    return history, as_of or end_of(history)
