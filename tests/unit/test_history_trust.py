"""No silent misreads, one test per defect class of issue 18 (an independent probe's findings): each builds
the case as the probe described it and asserts the refusal names the file, the column, the row and the
value."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import ConfigError, parse
from features import history as history_mod
from features.config import DatasetConfig
from features.history import (
    MAX_ABS_NUMBER,
    HistoryError,
    check_run_time,
    history_from_frames,
    load_history,
)
from tests.helpers.history_files import TX, error_of, write


def bulk(n: int = 300, start: datetime = datetime(1997, 1, 1)) -> str:
    """n purchases over n days from `start`: the bulk of a history."""
    return "".join(f"c{i % 50},{(start + timedelta(days=i)):%Y-%m-%d},10\n" for i in range(n))


# --- time: explicit and bounded


def test_a_future_event_is_refused_without_a_declared_as_of(tmp_path: Path) -> None:
    """CDNOW plus one row dated 2031-01-01 and no as_of: the row is refused, named by its line."""
    write(tmp_path, "transactions.csv", TX + bulk() + "stray,2031-01-01,5\n")
    message = error_of(tmp_path)
    assert "transactions.csv: column 'timestamp': 1 values are in the future (after now" in message
    assert "line 302: '2031-01-01'" in message
    assert "declare the history's as_of in dataset.yaml" in message


def test_a_declared_as_of_admits_the_events_it_covers(tmp_path: Path) -> None:
    future = datetime.now(UTC).year + 2
    write(tmp_path, "transactions.csv", TX + f"a,{future}-01-01,5\nb,{future}-02-01,5\n")
    write(tmp_path, "dataset.yaml", f"as_of: {future}-06-30\n")
    history = load_history(tmp_path)
    assert history.transactions.num_rows == 2


def test_a_stray_row_far_past_the_bulk_is_refused(tmp_path: Path) -> None:
    """In the past, so not 'future', but 20 years after everything else: it would move the history's end."""
    write(tmp_path, "transactions.csv", TX + bulk() + "stray,2019-01-01,5\n")
    message = error_of(tmp_path)
    assert (
        "column 'timestamp': 1 values are more than 365 days after the bulk of the table's events" in message
    )
    assert "line 302: '2019-01-01'" in message
    write(tmp_path, "dataset.yaml", "max_gap_days: null\n")  # the check is configurable
    assert load_history(tmp_path).transactions.num_rows == 301
    write(tmp_path, "dataset.yaml", "max_gap_days: 10000\n")
    assert load_history(tmp_path).transactions.num_rows == 301


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 400),
    span=st.integers(0, 15),
    late_days=st.lists(st.integers(0, 60), max_size=6),
    gap=st.integers(1, 20),
)
def test_stray_rows_are_those_past_the_exact_bulk(
    size: int, span: int, late_days: list[int], gap: int
) -> None:
    """Whatever shortcut the check takes, the rows refused as stray are exactly those more than `gap` days
    after the table's 0.99 quantile (DuckDB's quantile_disc over every row, the definition): a bulk of rows
    and a few later ones, in any number around the 1 % the quantile leaves above it."""
    days = [i % (span + 1) for i in range(size)] + late_days
    stamps = [datetime(2024, 1, 1) + timedelta(days=d) for d in days]
    with duckdb.connect() as con:
        query = "SELECT quantile_disc(t, 0.99) FROM (SELECT unnest(?::TIMESTAMP[]) AS t)"
        bulk_at = con.execute(query, [stamps]).fetchall()[0][0]
    strays = sum(t > bulk_at + timedelta(days=gap) for t in stamps)
    frame = pd.DataFrame({"customer_id": "a", "timestamp": stamps, "amount": 1.0})
    config = DatasetConfig(max_gap_days=gap, duplicates="keep")
    if strays:
        with pytest.raises(HistoryError, match=f"{strays} values are more than {gap} days after the bulk"):
            history_from_frames(frame, config=config)
    else:
        assert history_from_frames(frame, config=config).transactions.num_rows == len(days)


def test_a_run_far_past_the_history_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + bulk())
    history = load_history(tmp_path)
    check_run_time(history, datetime(1998, 6, 30))  # within a year of the last event: fine
    with pytest.raises(
        HistoryError, match=r"a run as of 2031-01-01 00:00 is .* days after the history's last"
    ):
        check_run_time(history, datetime(2031, 1, 1))


# --- misreads


def test_two_digit_years_are_refused(tmp_path: Path) -> None:
    """`97-03-01` loaded as the year 0097."""
    write(tmp_path, "transactions.csv", TX + "a,1997-03-01,1\nb,97-03-01,2\n")
    message = error_of(tmp_path)
    assert "column 'timestamp': 1 values have a year of fewer than four digits" in message
    assert "line 3: '97-03-01'" in message
    assert "outside" not in message  # one problem per row, not two


def test_implausible_years_are_refused_and_the_range_is_configurable(tmp_path: Path) -> None:
    """`0001-01-01` (a placeholder) was accepted."""
    write(tmp_path, "transactions.csv", TX + "a,1997-03-01,1\nb,0001-01-01,2\n")
    message = error_of(tmp_path)
    assert "column 'timestamp': 1 values have a year outside 1900-2100" in message
    assert "line 3: '0001-01-01'" in message
    write(tmp_path, "dataset.yaml", "plausible_years: [1, 2100]\nmax_gap_days: null\n")
    assert load_history(tmp_path).transactions.num_rows == 2
    with pytest.raises(ConfigError, match="plausible_years"):
        parse(DatasetConfig, {"plausible_years": [2000, 1990]}, "dataset.yaml")


def test_implausible_years_in_parquet_are_refused(tmp_path: Path) -> None:
    table = pa.table(
        {
            "customer_id": ["a", "b"],
            "timestamp": pa.array([datetime(1997, 1, 1), datetime(1, 1, 1)], pa.timestamp("us")),
            "amount": [1.0, 2.0],
        }
    )
    pq.write_table(table, tmp_path / "transactions.parquet")
    message = error_of(tmp_path)
    assert "transactions.parquet: column 'timestamp': 1 values have a year outside 1900-2100" in message
    assert "row 2:" in message


def test_digit_separators_are_refused(tmp_path: Path) -> None:
    """`1_234.50` was read as 1234.5."""
    write(tmp_path, "transactions.csv", TX + "a,1997-03-01,10\nb,1997-03-02,1_234.50\n")
    message = error_of(tmp_path)
    assert "column 'amount': 1 values use '_' as a digit separator" in message
    assert "line 3: '1_234.50'" in message


@pytest.mark.parametrize(
    ("second", "style"),
    [
        ("1997-03-02 10:00:00+05", "an hours-only offset like +05"),
        ("1997-03-02 10:00:00 UTC", "a named zone like UTC or Europe/Paris"),
        ("1997-03-02 10:00:00 America/New_York", "a named zone like UTC or Europe/Paris"),
    ],
)
def test_any_mix_of_offset_styles_is_refused(tmp_path: Path, second: str, style: str) -> None:
    """`+05` and named zones slipped past the mixed-time-zone check (they were counted as 'no zone')."""
    write(tmp_path, "transactions.csv", TX + f"a,1997-03-01 10:00:00,1\nb,{second},2\n")
    message = error_of(tmp_path)
    assert "column 'timestamp': mixes time zones: 1 with no time zone, 1 with " + style in message
    assert f"line 3: '{second}'" in message
    write(tmp_path, "transactions.csv", TX + f"a,1997-03-01 10:00:00Z,1\nb,{second},2\n")
    assert "mixes time zones: 1 with an offset like +02:00 or Z, 1 with " + style in error_of(tmp_path)


def test_one_offset_style_is_read(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,1997-03-01 10:00:00+05:00,1\nb,1997-03-02 10:00:00-01:00,2\n")
    ts = load_history(tmp_path).transactions.column("timestamp").to_pylist()
    assert ts == [datetime(1997, 3, 1, 5), datetime(1997, 3, 2, 11)]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e300", "-2e12"])
def test_non_finite_and_absurd_attributes_are_refused(tmp_path: Path, value: str) -> None:
    """An attribute value `inf` was kept (attributes had no checks), and 1e300 failed inside XGBoost."""
    write(tmp_path, "transactions.csv", TX + "a,1997-03-01,1\nb,1997-03-02,2\n")
    write(tmp_path, "customers.csv", f"customer_id,income\na,5\nb,{value}\n")
    message = error_of(tmp_path)
    assert "customers.csv: column 'income'" in message
    assert f"line 3: '{value}'" in message


@pytest.mark.parametrize("value", ["1e300", "-1e13", str(sys.float_info.max)])
def test_absurd_amounts_are_refused_at_validation(tmp_path: Path, value: str) -> None:
    """An amount of 1e300 passed validation and failed inside XGBoost (float32 inputs)."""
    write(tmp_path, "transactions.csv", TX + f"a,1997-03-01,1\nb,1997-03-02,{value}\n")
    message = error_of(tmp_path)
    assert f"column 'amount': 1 values are beyond ±{MAX_ABS_NUMBER:g}" in message
    assert f"line 3: '{value}'" in message


def test_absurd_numbers_in_parquet_attributes_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,1997-03-01,1\n")
    pq.write_table(pa.table({"customer_id": ["a"], "score": [float("inf")]}), tmp_path / "customers.parquet")
    assert "customers.parquet: column 'score': 1 values are NaN or infinite" in error_of(tmp_path)


@pytest.mark.parametrize("pad", ["\t", "\u00a0", "\u2007", "\u3000", " \u00a0\t"])
def test_ids_are_stripped_of_any_whitespace_as_the_api_strips_them(tmp_path: Path, pad: str) -> None:
    """An id with a trailing tab or non-breaking space became a second customer that the API (whose pydantic
    model strips whitespace the way Python's str.strip() does) could not find."""
    write(tmp_path, "transactions.csv", TX + f"42,1997-03-01,1\n42{pad},1997-03-02,2\n{pad}42,1997-03-03,3\n")
    ids = load_history(tmp_path).transactions.column("customer_id").to_pylist()
    assert ids == ["42", "42", "42"] == [i.strip() for i in ids]


def test_the_whitespace_stripped_from_ids_is_pythons() -> None:
    """Every code point Python's str.strip() removes is removed from ids, and nothing else is."""
    spaces = [chr(c) for c in range(0x3100) if chr(c).isspace()]
    keep = ["\u200b", "\ufeff", "x", "-", "_"]  # zero-width space and BOM: not whitespace for Python either
    frame = pd.DataFrame(
        {
            "customer_id": [f"{c}id{c}" for c in spaces + keep],
            "timestamp": pd.Timestamp("1997-03-01"),
            "amount": 1.0,
        }
    )
    ids = history_from_frames(frame, config=DatasetConfig(duplicates="keep")).transactions
    got = ids.column("customer_id").to_pylist()
    assert got == [s.strip() for s in frame["customer_id"]]
    assert got[: len(spaces)] == ["id"] * len(spaces)


_SPACES = [chr(c) for c in range(0x3100) if chr(c).isspace()]
_ID_CHARACTERS = [*_SPACES, "a", "Z", "7", "-", "é", "€", "\u200b", "\x00", "\x7f"]


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.none() | st.text(alphabet=st.sampled_from(_ID_CHARACTERS)),
        max_size=12,
    ),
    split=st.integers(0, 12),
    skip=st.integers(0, 3),
    large=st.booleans(),
)
def test_the_quick_tidy_check_agrees_with_the_exact_one(
    values: list[str | None], split: int, skip: int, large: bool
) -> None:
    """The byte-level pre-check of ids (`_tidy_text`) answers exactly what trimming every value would, for any
    mix of whitespace, multi-byte characters, empties and nulls, over chunked, sliced and large strings."""
    kind = pa.large_string() if large else pa.string()
    whole = pa.array(["pad", *values], type=kind).slice(1)  # a sliced array: offsets start past zero
    column = pa.chunked_array([whole[:split], whole[split:]], type=kind)
    column = column.slice(min(skip, len(column)))
    shown = column.to_pylist()
    exact = all(v is None or (v != "" and v.strip() == v) for v in shown)
    assert history_mod._tidy_text(column) is exact


def test_a_blank_id_of_whitespace_only_is_missing(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,1997-03-01,1\n\u00a0\t,1997-03-02,2\n")
    assert "column 'customer_id': 1 missing values (required)" in error_of(tmp_path)


def test_parquet_timestamps_with_a_time_zone_are_read_as_utc(tmp_path: Path) -> None:
    """`timestamp[ns, tz=UTC]` (pandas' default for aware times) crashed the load; other zones convert."""
    table = pa.table(
        {
            "customer_id": ["a", "b"],
            "timestamp": pa.array(
                [datetime(1997, 3, 1, 12, tzinfo=UTC), datetime(1997, 3, 2, 12, tzinfo=UTC)],
                pa.timestamp("ns", tz="UTC"),
            ),
            "amount": [1.0, 2.0],
        }
    )
    pq.write_table(table, tmp_path / "transactions.parquet")
    pq.write_table(
        pa.table(
            {
                "customer_id": ["a", "b"],
                "signup_date": pa.array(
                    [datetime(1997, 1, 1, 1, tzinfo=UTC), None], pa.timestamp("ms", tz="+02:00")
                ),
            }
        ),
        tmp_path / "customers.parquet",
    )
    history = load_history(tmp_path)
    assert history.transactions.schema.field("timestamp").type == pa.timestamp("us")
    assert history.transactions.column("timestamp").to_pylist() == [
        datetime(1997, 3, 1, 12),
        datetime(1997, 3, 2, 12),
    ]
    assert history.customers is not None
    assert history.customers.column("signup_date").to_pylist() == [datetime(1997, 1, 1, 1), None]


# --- the same rules for inline (API) histories


def test_inline_timestamps_with_mixed_offsets_are_refused_as_in_files() -> None:
    """Request timestamps arrive as datetimes (pydantic): with and without an offset in one request they are
    refused exactly as a file mixing them is."""
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "timestamp": [
                datetime(1997, 3, 1, 10),
                datetime(1997, 3, 2, 10, tzinfo=timezone(timedelta(hours=5))),
            ],
            "amount": [1.0, 2.0],
        }
    )
    with pytest.raises(HistoryError, match="<transactions>: column 'timestamp': mixes time zones") as info:
        history_from_frames(frame)
    assert "row 2: '1997-03-02T10:00:00+05:00'" in str(info.value)


def test_inline_timestamps_with_one_offset_style_are_converted_to_utc() -> None:
    five = timezone(timedelta(hours=5))
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "timestamp": [datetime(1997, 3, 1, 10, tzinfo=five), datetime(1997, 3, 2, 10, tzinfo=UTC)],
            "amount": [1.0, 2.0],
        }
    )
    ts = history_from_frames(frame).transactions.column("timestamp").to_pylist()
    assert ts == [datetime(1997, 3, 1, 5), datetime(1997, 3, 2, 10)]


def test_inline_ids_implausible_years_and_future_events_follow_the_file_rules() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["a\u00a0", "a"],
            "timestamp": [datetime(1997, 3, 1), datetime(1997, 3, 2)],
            "amount": [1.0, 2.0],
        }
    )
    assert history_from_frames(frame).transactions.column("customer_id").to_pylist() == ["a", "a"]
    old = frame.assign(timestamp=[datetime(1, 1, 1), datetime(1997, 3, 2)])
    with pytest.raises(HistoryError, match="1 values have a year outside 1900-2100"):
        history_from_frames(old)
    future = frame.assign(timestamp=[datetime(1997, 3, 1), datetime.now() + timedelta(days=400)])
    with pytest.raises(HistoryError, match="values are in the future"):
        history_from_frames(future)
