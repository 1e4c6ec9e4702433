"""Bad input to the API, case by case: what Diamond answers. Each case below is a test in this file; bad
history folders are in tests/integration/test_bad_input.py.

API: POST /score on a running `diamond serve` answers 4xx with a body naming the field path or the
problem, never 5xx (statuses 400 unless said):

- wrong types: a number as `customer_id`, an object as `customers`, text as `amount`, `yesterday` as a
  `timestamp`, a number as `as_of` → the field path and `Input should be a valid …`
- wrong types: `true` as an amount or quantity, `0` as a timestamp → the field path (amounts are strict
  numbers; timestamps are ISO 8601 text)
- missing fields (`customers`, `customer_id`, `amount`, `timestamp`, an interaction's `type`) → the field
  path and `Field required`
- unknown fields in a customer or a transaction → the field name and `Extra inputs are not permitted`
- an unknown top-level field → its name and `Extra inputs are not permitted`
- NaN, Infinity and 1e999 amounts (JSON literals) → `Input should be a finite number`; `"NaN"` as text, a
  NaN quantity, an infinite interaction value as text → the field path and `Input should be a valid number`
- an amount beyond ±1e12 (e.g. 3.5e38, which float32 model inputs would turn into inf) → `less than or equal`
- an empty id, a 201-character id → `customer_id` and the length rule; a blank inline id → `customer_id`
  and `at least 1 character` (ids are trimmed)
- duplicate ids → `duplicate customer_id`; 1,001 customers → `customers`, `at most 1000 items`; none →
  `at least 1 item`; an inline customer with no transaction → `customers.0.transactions`, `at least 1 item`
- an unknown customer → 200, `found: false`, `send its history inline`
- events or cancellations after `as_of` → `after the as-of date`
- an invalid `as_of`, with inline customers or by id → `as_of: … is not an ISO date`
- an attribute with an empty name → `have no name`; one attribute a number for one customer and text for
  another → `column 'plan': mixes numbers and text` (both found by the fuzzer: they were 500s)
- non-UTF-8 bytes, truncated JSON → `Invalid JSON`; an empty body → `customers`, `Field
  required`; a JSON array or null → `Input should be an object`; arrays nested 10,000 deep → `recursion
  limit exceeded`; objects nested inside an attribute → `attributes`
- content types other than application/json (XML, the pickle type, text/plain, multipart/form-data) → 415
  `send application/json`
- no key, a wrong key → 401 `missing or wrong API key`
- a 4.5 MB body (60,000 transactions of one customer) → answered 200, and the server stays ready; a 17 MB
  body, with a content-length or chunked → 413 `larger than 16 MB` (serving.yaml `max_body_mb`)
- ids that differ only by spaces → trimmed, as the history contract trims them: ` a ` is scored as `a`,
  and `a` next to `a ` is a duplicate id
- error bodies are a JSON object with a string `error` and a string `detail` (`path: message` per field),
  for pydantic's errors and the service's own alike

After all of it, GET /readyz still answers 200: a running service keeps serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.helpers import AUTH, CUTOFF

# --- the API ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(http_server: tuple[str, int]) -> str:
    return http_server[0]


def tx(timestamp: str | int = "1997-01-05", amount: Any = 3.0, **extra: Any) -> dict[str, Any]:
    return {"timestamp": timestamp, "amount": amount, **extra}


def inline(customer_id: str = "a", *transactions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "transactions": list(transactions) or [tx()], **extra}


def body(*customers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"customers": list(customers), **extra}


@dataclass(frozen=True)
class Call:
    """A POST /score: a JSON body (or raw bytes), its content type and key; the status and what the body
    must say. `status` None: any 4xx."""

    payload: Any = None
    raw: bytes | None = None
    content_type: str = "application/json"
    authorization: str | None = AUTH["Authorization"]
    status: int | None = None
    expected: tuple[str, ...] = field(default=())


def with_amount(literal: str) -> bytes:
    """A body whose one amount is a raw JSON literal (NaN, Infinity, 1e999: not writable by json.dumps)."""
    event = '{"timestamp": "1997-01-05", "amount": ' + literal + "}"
    return ('{"customers": [{"customer_id": "a", "transactions": [' + event + "]}]}").encode()


NESTED = b'{"customers": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
CALLS: list[Any] = [
    pytest.param(
        Call(body({"customer_id": 5}), expected=("customer_id", "Input should be a valid string")),
        id="wrong-type-customer-id",
    ),
    pytest.param(
        Call({"customers": {"customer_id": "a"}}, expected=("customers", "Input should be a valid array")),
        id="wrong-type-customers",
    ),
    pytest.param(
        Call(body(inline("a", tx(amount="12 USD"))), expected=("amount", "Input should be a valid number")),
        id="wrong-type-amount",
    ),
    pytest.param(
        Call(body(inline("a", tx("yesterday"))), expected=("timestamp", "Input should be a valid datetime")),
        id="wrong-type-timestamp",
    ),
    pytest.param(
        Call(body({"customer_id": "00002"}, as_of=5), expected=("as_of", "Input should be a valid string")),
        id="wrong-type-as-of",
    ),
    pytest.param(
        Call(body(inline("a", tx(amount=True))), expected=("amount",)),
        id="wrong-type-amount-boolean",
    ),
    pytest.param(
        Call(body(inline("a", tx(0))), expected=("timestamp",)),
        id="wrong-type-timestamp-number",
    ),
    pytest.param(Call({}, expected=("customers", "Field required")), id="missing-customers"),
    pytest.param(Call(body({}), expected=("customer_id", "Field required")), id="missing-customer-id"),
    pytest.param(
        Call(body(inline("a", {"timestamp": "1997-01-05"})), expected=("amount", "Field required")),
        id="missing-amount",
    ),
    pytest.param(
        Call(body(inline("a", {"amount": 3})), expected=("timestamp", "Field required")),
        id="missing-timestamp",
    ),
    pytest.param(
        Call(
            body(inline("a", interactions=[{"timestamp": "1997-01-01"}])),
            expected=("interactions", "type", "Field required"),
        ),
        id="missing-interaction-type",
    ),
    pytest.param(
        Call(
            body({"customer_id": "a", "shoe_size": 3}),
            expected=("shoe_size", "Extra inputs are not permitted"),
        ),
        id="unknown-field-customer",
    ),
    pytest.param(
        Call(body(inline("a", tx(price=3))), expected=("price", "Extra inputs are not permitted")),
        id="unknown-field-transaction",
    ),
    pytest.param(
        Call(body({"customer_id": "00002"}, shoe_size=3), expected=("shoe_size", "Extra inputs")),
        id="unknown-field-top-level",
    ),
    pytest.param(
        Call(
            raw=with_amount("NaN"),
            expected=("amount", "Input should be a finite number"),
        ),
        id="nan-amount-literal",
    ),
    pytest.param(
        Call(
            raw=with_amount("Infinity"),
            expected=("amount", "Input should be a finite number"),
        ),
        id="infinite-amount-literal",
    ),
    pytest.param(
        Call(
            raw=with_amount("1e999"),
            expected=("amount", "Input should be a finite number"),
        ),
        id="overflowing-amount",
    ),
    pytest.param(
        Call(body(inline("a", tx(amount="NaN"))), expected=("amount", "Input should be a valid number")),
        id="nan-amount-text",
    ),
    pytest.param(
        Call(body(inline("a", tx(quantity="nan"))), expected=("quantity", "Input should be a valid number")),
        id="nan-quantity",
    ),
    pytest.param(
        Call(
            body(inline("a", interactions=[{"timestamp": "1997-01-01", "type": "login", "value": "inf"}])),
            expected=("interactions", "value", "Input should be a valid number"),
        ),
        id="infinite-interaction-value",
    ),
    pytest.param(
        Call(body(inline("a", tx(amount=3.5e38))), expected=("amount", "less than or equal to")),
        id="amount-beyond-float32",
    ),
    pytest.param(
        Call(body({"customer_id": ""}), expected=("customer_id", "at least 1 character")),
        id="empty-id",
    ),
    pytest.param(
        Call(body(inline("   ")), expected=("customer_id", "at least 1 character")),
        id="blank-inline-id",
    ),
    pytest.param(
        Call(body({"customer_id": "x" * 201}), expected=("customer_id", "at most 200 characters")),
        id="id-too-long",
    ),
    pytest.param(
        Call(body({"customer_id": "a"}, {"customer_id": "a"}), expected=("duplicate customer_id ['a']",)),
        id="duplicate-ids",
    ),
    pytest.param(
        Call(
            body(*({"customer_id": str(i)} for i in range(1001))),
            expected=("customers", "at most 1000 items"),
        ),
        id="too-many-customers",
    ),
    pytest.param(Call(body(), expected=("customers", "at least 1 item")), id="no-customers"),
    pytest.param(
        Call(
            body({"customer_id": "a", "transactions": []}),
            expected=("customers.0.transactions", "at least 1 item"),
        ),
        id="inline-without-transactions",
    ),
    pytest.param(
        Call(
            body({"customer_id": "nobody"}), status=200, expected=('"found":false', "send its history inline")
        ),
        id="unknown-customer",
    ),
    pytest.param(
        Call(
            body(inline("a", tx("1998-01-05")), as_of=CUTOFF), expected=("timestamp", "after the as-of date")
        ),
        id="transaction-after-as-of",
    ),
    pytest.param(
        Call(
            body(inline("a", cancellations=["1999-01-01"]), as_of=CUTOFF),
            expected=("cancellations", "after the as-of date"),
        ),
        id="cancellation-after-as-of",
    ),
    pytest.param(
        Call(body(inline("a"), as_of="soon"), expected=("as_of", "'soon' is not an ISO date")),
        id="invalid-as-of-inline",
    ),
    pytest.param(
        Call(body({"customer_id": "00002"}, as_of="soon"), expected=("as_of",)),
        id="invalid-as-of-by-id",
    ),
    pytest.param(
        Call(raw=b'{"customers": [{"customer_id": "caf\xe9"}]}', expected=("Invalid JSON", "unicode")),
        id="non-utf8-bytes",
    ),
    pytest.param(Call(raw=b'{"customers": [', expected=("Invalid JSON",)), id="truncated-json"),
    pytest.param(
        Call(raw=b"<customers/>", content_type="application/xml", status=415, expected=("application/json",)),
        id="xml-body",
    ),
    pytest.param(
        Call(raw=b"", expected=("customers", "Field required")),
        id="empty-body",
    ),
    pytest.param(
        Call([{"customer_id": "00002"}], expected=("Input should be an object",)),
        id="json-array",
    ),
    pytest.param(Call(raw=b"null", expected=("Input should be an object",)), id="json-null"),
    pytest.param(Call(raw=NESTED, expected=("recursion limit exceeded",)), id="deeply-nested"),
    pytest.param(
        Call(body(inline("a", attributes={"x": {"y": {"z": [[{}]]}}})), expected=("attributes",)),
        id="nested-junk-in-attributes",
    ),
    pytest.param(
        Call(
            body(inline("a", attributes={"plan": 3.0}), inline("b", attributes={"plan": "gold"})),
            expected=("column 'plan': mixes numbers and text",),
        ),
        id="attribute-number-and-text",  # found by the fuzzer: it was a 500
    ),
    pytest.param(
        Call(body(inline("a", attributes={"": 1.0})), expected=("have no name",)),
        id="unnamed-attribute",
    ),
    pytest.param(
        Call(
            raw=json.dumps(body({"customer_id": "00002"})).encode(),
            content_type="application/vnd.bentoml+pickle",
            status=415,
            expected=("application/json",),
        ),
        id="pickle-content-type",
    ),
    pytest.param(
        Call(raw=json.dumps(body({"customer_id": "00002"})).encode(), content_type="text/plain", status=415),
        id="json-as-text-plain",
    ),
    pytest.param(
        Call(
            raw=json.dumps(body({"customer_id": "00002"})).encode(),
            content_type="multipart/form-data",
            status=415,
            expected=("application/json",),
        ),
        id="multipart-content-type",
    ),
    pytest.param(
        Call(
            body({"customer_id": "00002"}),
            authorization=None,
            status=401,
            expected=("missing or wrong API key",),
        ),
        id="no-key",
    ),
    pytest.param(
        Call(
            body({"customer_id": "00002"}),
            authorization="Bearer wrong",
            status=401,
            expected=("missing or wrong API key",),
        ),
        id="wrong-key",
    ),
]


def _post(url: str, call: Call) -> httpx.Response:
    content = call.raw if call.raw is not None else json.dumps(call.payload).encode()
    headers = {"content-type": call.content_type}
    if call.authorization:
        headers["Authorization"] = call.authorization
    return httpx.post(f"{url}/score", content=content, headers=headers, timeout=60)


@pytest.mark.parametrize("call", CALLS)
def test_bad_score_requests(server: str, call: Call) -> None:
    response = _post(server, call)
    assert response.status_code < 500, response.text
    if call.status is None:
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == call.status, response.text
    for text in call.expected:
        assert text in response.text, response.text


def test_a_large_body_is_scored_and_the_server_survives(server: str) -> None:
    """4.5 MB (60,000 transactions of one customer), under the 16 MB limit: it is scored."""
    start = datetime(1990, 1, 1)
    transactions = [
        tx((start + timedelta(minutes=i)).isoformat(), 1.5, order_id=f"o{i}") for i in range(60_000)
    ]
    call = Call(body(inline("big", *transactions)))
    assert len(json.dumps(call.payload)) > 4_000_000
    response = _post(server, call)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["scores"][0]["found"] is True
    assert httpx.get(f"{server}/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_refused_with_413(server: str, chunked: bool) -> None:
    """17 MB, over serving.yaml's max_body_mb (16): 413 naming the limit, before any parsing, whether the
    size is declared up front or only discovered while reading a chunked body."""
    filler = json.dumps({"customers": [{"customer_id": "a", "attributes": {"note": "x" * 17 * 2**20}}]})
    raw = filler.encode()
    content = (raw[i : i + 2**20] for i in range(0, len(raw), 2**20)) if chunked else raw
    response = httpx.post(
        f"{server}/score",
        content=content,
        headers={**AUTH, "content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text[:500]
    assert "larger than 16 MB" in response.json()["error"]
    assert httpx.get(f"{server}/readyz", timeout=10).status_code == 200


def test_a_padded_inline_id_is_scored(server: str) -> None:
    response = _post(server, Call(body(inline(" a ", tx("1997-01-05"), tx("1997-02-01")))))
    assert response.status_code == 200, response.text
    assert response.json()["scores"][0]["found"] is True, response.text


def test_ids_differing_by_spaces_are_not_merged(server: str) -> None:
    alone = _post(server, Call(body(inline("a", tx("1997-01-05", 3.0))))).json()["scores"][0]
    response = _post(
        server, Call(body(inline("a", tx("1997-01-05", 3.0)), inline("a ", tx("1997-03-01", 100.0))))
    )
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        first, second = response.json()["scores"]
        assert first["found"] and second["found"], response.text
        assert first["predicted_value"] == pytest.approx(alone["predicted_value"]), response.text
    else:
        assert "customer_id" in response.text


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(Call(body({"customer_id": 5})), id="validation-error"),
        pytest.param(Call(body({"customer_id": "a"}, {"customer_id": "a"})), id="duplicates"),
        pytest.param(Call(body({"customer_id": "a"}, as_of="soon")), id="service-error"),
    ],
)
def test_error_bodies_are_an_object_with_a_message(server: str, call: Call) -> None:
    response = _post(server, call)
    assert response.status_code == 400
    payload = response.json()
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str), response.text
    assert all(isinstance(v, str) for v in payload.values()), response.text  # `detail` too, as documented


def test_the_server_still_serves_after_all_of_it(server: str) -> None:
    ready = httpx.get(f"{server}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    scored = _post(server, Call(body({"customer_id": "00002"})))
    assert scored.status_code == 200 and scored.json()["scores"][0]["found"] is True
