"""Bad input, case by case: what Diamond answers. Each case below is a test in this file.

History folders: `diamond data validate DIR` exits 2 and its error (stderr, no traceback) names the file,
the column and the first offending lines (CSV: the header is line 1):

- wrong types: amounts that are not numbers (`12 USD`, `1,5`) → `transactions.csv: column 'amount': 2 values
  are not numbers — first: line 3: '12 USD'; line 4: '1,5'`
- wrong types: timestamps that are not ISO 8601 (`yesterday`, `2024-13-45`) → `column 'timestamp': 2 values
  are not ISO 8601 timestamps`, with their lines
- wrong types: timestamps not in the configured `timestamp_format` → `1 values are not timestamps in the
  format '%Y%m%d' — first: line 2: '2024-01-02'`
- wrong types: Parquet columns of the wrong type (double ids, int64 timestamps, bool amounts) → each column
  named with its type and what was expected
- missing required column → `transactions.csv: is missing required column 'amount'; columns found: …`
- missing required column in `cancellations` → `cancellations.csv: is missing required column 'timestamp'`
- a `dataset.yaml` mapping to a column the file lacks → `missing required column 'amount' (mapped from
  'dollars')`
- a `dataset.yaml` naming a table file that does not exist → `orders.csv: not found (configured as the
  transactions table in dataset.yaml)`
- a semicolon-separated file → the three required columns missing, `columns found: customer_id;timestamp;…`
- a header repeating a column → `transactions.csv: repeats column(s) ['amount'] in its header`
- missing values (blank id, blank amount) → `column 'customer_id': 1 missing values (required) — first:
  line 2`, and the same for `amount` on line 3
- an interaction without a type → `interactions.csv: column 'type': 1 missing values (required)`
- NaN and infinite amounts → `column 'amount': 2 values are NaN or infinite — first: line 2: 'nan'; line 3:
  'inf'`
- non-UTF-8 bytes in a row → `transactions.csv: cannot be read: … invalid UTF8 data`
- non-UTF-8 bytes in the header → `transactions.csv: header is not UTF-8 text`
- an empty (0-byte) file → `transactions.csv: is empty (no header line)`
- a header and no rows → `transactions.csv: has no rows (remove the file if the table does not apply)`
- a ragged row → `transactions.csv: cannot be read: … Expected 3 columns, got 4`
- a corrupt Parquet file → `transactions.parquet: cannot be read`
- a corrupt gzip file → `transactions.csv.gz: cannot be read: Not a gzipped file`
- duplicate customers in `customers` → `customers.csv: column 'customer_id': 1 rows repeat a customer_id
  listed earlier — first: line 4`
- events of customers missing from `customers` → `transactions.csv: column 'customer_id': 1 rows name a
  customer missing from customers`, line and id
- events after `--as-of` → `column 'timestamp': 1 values are after the as-of date 2024-02-01 23:59:59 —
  first: line 3`
- interactions after `--as-of` → the same, for `interactions.csv`
- a signup after `--as-of` → `customers.csv: column 'signup_date': 1 values are after the as-of date`
- events after the `as_of` of `dataset.yaml` → the same message
- a column without a header name → `column(s) [2] have no name`
- mixed time zones in one column → `column 'timestamp': mixes time zones: 1 values carry a UTC offset and 1
  do not`, with both lines
- exact duplicate rows → `transactions.csv: 1 exact duplicate rows` (line 3)
- two files for one table (Parquet and CSV) → `has more than one transactions table (transactions.parquet,
  transactions.csv)`
- two files for one table (CSV and CSV.gz) → the same, and nothing else (it once also said the folder
  `has no transactions table`)
- `dataset.yaml` with an unknown key → `dataset.yaml: unknown key(s) as_off`
- `dataset.yaml` with a bad choice → `'on_invalid' is 'skip'; expected one of error, drop`
- `dataset.yaml` that is not YAML → `dataset.yaml: not valid YAML`
- no transactions table → `has no transactions table (…; found: customers.csv)`
- a folder that does not exist → `is not a folder`
- an `--as-of` that is not a date → `--as-of: 'soon' is not an ISO date or timestamp`

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

import gzip
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import AUTH, CUTOFF, run_diamond

TX = "customer_id,timestamp,amount\n"
ONE_ROW = TX + "a,2024-01-02,1\n"


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Folder:
    """A history folder (file name -> text or bytes), the extra arguments, and what stderr must say."""

    files: dict[str, str | bytes]
    expected: tuple[str, ...]
    args: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    missing_folder: bool = False


FOLDERS: list[Any] = [
    pytest.param(
        Folder(
            {"transactions.csv": TX + 'a,2024-01-02,1\nb,2024-01-02,12 USD\nc,2024-01-02,"1,5"\n'},
            (
                "transactions.csv: column 'amount': 2 values are not numbers",
                "line 3: '12 USD'; line 4: '1,5'",
            ),
        ),
        id="wrong-type-amount",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,2024-01-02,1\nb,yesterday,2\nc,2024-13-45,3\n"},
            (
                "transactions.csv: column 'timestamp': 2 values are not ISO 8601 timestamps",
                "line 3: 'yesterday'; line 4: '2024-13-45'",
            ),
        ),
        id="wrong-type-timestamp",
    ),
    pytest.param(
        Folder(
            {
                "transactions.csv": "customer_id,day,amount\na,2024-01-02,1\n",
                "dataset.yaml": "tables:\n  transactions:\n    timestamp_format: '%Y%m%d'\n"
                "    columns: {timestamp: day}\n",
            },
            (
                "transactions.csv: column 'timestamp': 1 values are not timestamps in the format '%Y%m%d'",
                "line 2: '2024-01-02'",
            ),
        ),
        id="wrong-type-timestamp-format",
    ),
    pytest.param(
        Folder(
            {
                "transactions.parquet": _parquet(
                    pa.table({"customer_id": [1.5], "timestamp": [20240101], "amount": [True]})
                )
            },
            (
                "transactions.parquet: column 'customer_id': has type double; expected text or integer ids",
                "transactions.parquet: column 'timestamp': has type int64; expected a timestamp or date",
                "transactions.parquet: column 'amount': has type bool; expected a number",
            ),
        ),
        id="wrong-type-parquet",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": "customer_id,timestamp,price\na,2024-01-02,1\n"},
            (
                "transactions.csv: is missing required column 'amount'",
                "columns found: customer_id, timestamp, price",
            ),
        ),
        id="missing-column",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": ONE_ROW, "cancellations.csv": "customer_id\na\n"},
            ("cancellations.csv: is missing required column 'timestamp'; columns found: customer_id",),
        ),
        id="missing-column-cancellations",
    ),
    pytest.param(
        Folder(
            {
                "transactions.csv": ONE_ROW,
                "dataset.yaml": "tables:\n  transactions:\n    columns: {amount: dollars}\n",
            },
            ("transactions.csv: is missing required column 'amount' (mapped from 'dollars')",),
        ),
        id="missing-mapped-column",
    ),
    pytest.param(
        Folder(
            {"dataset.yaml": "tables:\n  transactions:\n    file: orders.csv\n"},
            ("orders.csv: not found (configured as the transactions table in dataset.yaml)",),
        ),
        id="missing-configured-file",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": "customer_id;timestamp;amount\na;2024-01-02;1\n"},
            (
                "transactions.csv: is missing required column 'customer_id'",
                "columns found: customer_id;timestamp;amount",
            ),
        ),
        id="semicolon-separated",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": "customer_id,timestamp,amount,amount\na,2024-01-02,1,2\n"},
            ("transactions.csv: repeats column(s) ['amount'] in its header",),
        ),
        id="repeated-column",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + " ,2024-01-02,1\nb,2024-01-02,\n"},
            (
                "transactions.csv: column 'customer_id': 1 missing values (required) — first: line 2",
                "transactions.csv: column 'amount': 1 missing values (required) — first: line 3",
            ),
        ),
        id="missing-values",
    ),
    pytest.param(
        Folder(
            {
                "transactions.csv": ONE_ROW,
                "interactions.csv": "customer_id,timestamp,type\na,2024-01-01,\na,2024-01-03,complaint\n",
            },
            ("interactions.csv: column 'type': 1 missing values (required) — first: line 2",),
        ),
        id="missing-interaction-type",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,2024-01-02,nan\nb,2024-01-02,inf\nc,2024-01-02,1\n"},
            (
                "transactions.csv: column 'amount': 2 values are NaN or infinite — first: line 2: 'nan'; "
                "line 3: 'inf'",
            ),
        ),
        id="nan-and-inf",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX.encode() + b"caf\xe9,2024-01-02,1\n"},
            ("transactions.csv: cannot be read", "invalid UTF8 data"),
        ),
        id="non-utf8-row",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": b"customer_id,timestamp,montant\xe9\n"},
            ("transactions.csv: header is not UTF-8 text",),
        ),
        id="non-utf8-header",
    ),
    pytest.param(
        Folder({"transactions.csv": ""}, ("transactions.csv: is empty (no header line)",)),
        id="empty-file",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX},
            ("transactions.csv: has no rows (remove the file if the table does not apply)",),
        ),
        id="header-only",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,2024-01-02,1\nb,2024-01-02,1,extra\n"},
            ("transactions.csv: cannot be read", "Expected 3 columns, got 4"),
        ),
        id="ragged-row",
    ),
    pytest.param(
        Folder(
            {"transactions.parquet": b"PAR1 this is not parquet"}, ("transactions.parquet: cannot be read",)
        ),
        id="corrupt-parquet",
    ),
    pytest.param(
        Folder(
            {"transactions.csv.gz": b"not gzip at all"},
            ("transactions.csv.gz: cannot be read", "Not a gzipped file"),
        ),
        id="corrupt-gzip",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": ONE_ROW, "customers.csv": "customer_id,segment\na,x\nb,y\na,z\n"},
            (
                "customers.csv: column 'customer_id': 1 rows repeat a customer_id listed earlier — "
                "first: line 4",
            ),
        ),
        id="duplicate-customers",
    ),
    pytest.param(
        Folder(
            {
                "transactions.csv": TX + "a,2024-01-02,1\nzz,2024-01-02,1\n",
                "customers.csv": "customer_id\na\n",
            },
            (
                "transactions.csv: column 'customer_id': 1 rows name a customer missing from customers",
                "line 3: 'zz'",
            ),
        ),
        id="unknown-customer-in-events",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,2024-01-02,1\nb,2024-03-01,1\n"},
            (
                "transactions.csv: column 'timestamp': 1 values are after the as-of date 2024-02-01 23:59:59 "
                "— first: line 3: '2024-03-01'",
            ),
            args=("--as-of", "2024-02-01"),
        ),
        id="future-transaction",
    ),
    pytest.param(
        Folder(
            {
                "transactions.csv": ONE_ROW,
                "interactions.csv": "customer_id,timestamp,type\na,2099-01-02,login\n",
            },
            (
                "interactions.csv: column 'timestamp': 1 values are after the as-of date 2024-06-30 23:59:59 "
                "— first: line 2: '2099-01-02'",
            ),
            args=("--as-of", "2024-06-30"),
        ),
        id="future-interaction",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": ONE_ROW, "customers.csv": "customer_id,signup_date\na,2025-01-01\n"},
            ("customers.csv: column 'signup_date': 1 values are after the as-of date 2024-06-01",),
            args=("--as-of", "2024-06-01"),
        ),
        id="future-signup",
    ),
    pytest.param(
        Folder(
            {
                "transactions.csv": TX + "a,2024-01-02,1\nb,2024-03-01,1\n",
                "dataset.yaml": "as_of: 2024-02-01\n",
            },
            ("transactions.csv: column 'timestamp': 1 values are after the as-of date 2024-02-01 23:59:59",),
        ),
        id="future-transaction-dataset-as-of",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,2024-01-02T10:00:00+01:00,1\nb,2024-01-02 10:00:00,1\n"},
            (
                "transactions.csv: column 'timestamp': mixes time zones: 1 values carry a UTC offset and 1 "
                "do not",
                "line 2: '2024-01-02T10:00:00+01:00'; line 3: '2024-01-02 10:00:00'",
            ),
        ),
        id="mixed-time-zones",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,2024-01-02,1\na,2024-01-02,1\nb,2024-01-02,1\n"},
            ("transactions.csv: 1 exact duplicate rows", "line 3"),
        ),
        id="duplicate-rows",
    ),
    pytest.param(
        Folder(
            {
                "transactions.csv": ONE_ROW,
                "transactions.parquet": _parquet(pa.table({"customer_id": ["a"]})),
            },
            ("has more than one transactions table (transactions.parquet, transactions.csv)",),
        ),
        id="two-files-for-one-table",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": ONE_ROW, "customers.csv": "customer_id,,tier\na,1,gold\n"},
            ("customers.csv: column(s) [2] have no name",),
        ),
        id="unnamed-column",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": ONE_ROW, "transactions.csv.gz": gzip.compress(ONE_ROW.encode())},
            ("has more than one transactions table (transactions.csv, transactions.csv.gz)",),
            absent=("has no transactions table",),
        ),
        id="two-files-and-nothing-else",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": ONE_ROW, "dataset.yaml": "as_off: 2024-01-01\n"},
            ("dataset.yaml: unknown key(s) as_off",),
        ),
        id="dataset-yaml-unknown-key",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": ONE_ROW, "dataset.yaml": "on_invalid: skip\n"},
            ("dataset.yaml: 'on_invalid' is 'skip'; expected one of error, drop",),
        ),
        id="dataset-yaml-bad-choice",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": ONE_ROW, "dataset.yaml": "tables: [\n"}, ("dataset.yaml: not valid YAML",)
        ),
        id="dataset-yaml-not-yaml",
    ),
    pytest.param(
        Folder(
            {"customers.csv": "customer_id\na\n"},
            ("has no transactions table", "found: customers.csv"),
        ),
        id="no-transactions-table",
    ),
    pytest.param(Folder({}, ("is not a folder",), missing_folder=True), id="not-a-folder"),
    pytest.param(
        Folder(
            {"transactions.csv": ONE_ROW},
            ("--as-of: 'soon' is not an ISO date or timestamp",),
            args=("--as-of", "soon"),
        ),
        id="invalid-as-of-option",
    ),
]


@pytest.mark.parametrize("case", FOLDERS)
def test_bad_history_folders(case: Folder, tmp_path: Path) -> None:
    folder = tmp_path / ("nowhere" if case.missing_folder else "history")
    if not case.missing_folder:
        folder.mkdir()
    for name, content in case.files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content, encoding="utf-8")
    result = run_diamond("data", "validate", str(folder), *case.args, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for text in case.expected:
        assert text in result.stderr, result.stderr
    for text in case.absent:
        assert text not in result.stderr, result.stderr


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
