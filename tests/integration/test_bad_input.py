"""Bad history folders, case by case: what Diamond answers. Each case below is a test in this file.

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
- mixed time zones in one column → `column 'timestamp': mixes time zones: 1 with an offset like +02:00 or Z, 1
  with no time zone`, with both lines; likewise any mix of offset styles (`+05` beside none, a named zone
  beside `+05:00`) → `1 with an hours-only offset like +05`, `1 with a named zone like UTC or Europe/Paris`
- an event in the future, no as-of declared (CDNOW plus one row dated 2031-01-01) → `column 'timestamp': 1
  values are in the future (after now, …)`, the line and the value
- a stray event far past the bulk of the history → `1 values are more than 365 days after the bulk of the
  table's events (99 % by …)`
- two-digit and implausible years (`97-03-01`, `0001-01-01`) → `values have a year of fewer than four
  digits`, `values have a year outside 1900-2100`
- a digit separator (`1_234.50`) → `values use '_' as a digit separator`
- an absurd amount (`1e300`) → `values are beyond ±1e+12`; an attribute `inf` → `customers.csv: column
  'income': 1 values are NaN or infinite`
- values and column names holding Rich console markup (`[/x]`, `[bold]`) → printed as they are, in errors and
  in `dropped:` / `ignored:` notes
- Parquet timestamps with a time zone (`timestamp[ns, tz=UTC]`) → read as naive UTC (exit 0)
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

The API's bad input is in tests/e2e/test_bad_input.py.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import run_diamond

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
                "transactions.csv: column 'timestamp': mixes time zones: 1 with an offset like +02:00 or Z, "
                "1 with no time zone",
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
            {"transactions.csv": TX + "a,2024-01-02 10:00:00,1\nb,2024-01-02 10:00:00+05,1\n"},
            (
                "column 'timestamp': mixes time zones: 1 with no time zone, 1 with an hours-only offset "
                "like +05",
                "line 3: '2024-01-02 10:00:00+05'",
            ),
        ),
        id="mixed-offset-styles-short-offset",
    ),
    pytest.param(
        Folder(
            {
                "transactions.csv": TX
                + "a,2024-01-02 10:00:00+05:00,1\nb,2024-01-02 10:00:00 Europe/Paris,1\n"
            },
            ("mixes time zones: 1 with an offset like +02:00 or Z, 1 with a named zone like UTC or Europe",),
        ),
        id="mixed-offset-styles-named-zone",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,2024-01-02,1\nb,2031-01-01,1\n"},
            (
                "transactions.csv: column 'timestamp': 1 values are in the future (after now,",
                "line 3: '2031-01-01'",
            ),
        ),
        id="future-event-no-as-of",
    ),
    pytest.param(
        Folder(
            {
                "transactions.csv": TX
                + "".join(f"c{i},2020-01-{1 + i % 28:02d},1\n" for i in range(200))
                + "x,2024-06-01,1\n"
            },
            (
                "1 values are more than 365 days after the bulk of the table's events",
                "line 202: '2024-06-01'",
            ),
        ),
        id="stray-event-past-the-bulk",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,1997-03-01,1\nb,97-03-01,1\nc,0001-01-01,1\n"},
            (
                "column 'timestamp': 1 values have a year of fewer than four digits",
                "line 3: '97-03-01'",
                "column 'timestamp': 1 values have a year outside 1900-2100",
                "line 4: '0001-01-01'",
            ),
        ),
        id="two-digit-and-implausible-years",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,2024-01-02,1_234.50\n"},
            ("column 'amount': 1 values use '_' as a digit separator", "line 2: '1_234.50'"),
        ),
        id="digit-separator",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,2024-01-02,1e300\n"},
            ("column 'amount': 1 values are beyond ±1e+12", "line 2: '1e300'"),
        ),
        id="absurd-amount",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": ONE_ROW, "customers.csv": "customer_id,income\na,inf\n"},
            ("customers.csv: column 'income': 1 values are NaN or infinite", "line 2: 'inf'"),
        ),
        id="infinite-attribute",
    ),
    pytest.param(
        Folder(
            {"transactions.csv": TX + "a,2024-01-02,[/x]\nb,2024-01-02,[bold]5\n"},
            ("column 'amount': 2 values are not numbers", "line 2: '[/x]'; line 3: '[bold]5'"),
        ),
        id="console-markup-in-values",
    ),
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
