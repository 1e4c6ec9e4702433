"""The customer-history contract: loading, typing, and every kind of bad input we promise to name."""

from __future__ import annotations

import decimal
import gzip
import tempfile
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import ConfigError, parse
from features import history as history_module
from features.config import DatasetConfig
from features.history import HistoryError, history_from_frames, load_history
from tests.helpers.history_files import TX, error_of, write

# --- what a good history becomes -----------------------------------------------------------------


def test_csv_history_is_typed_and_complete(tmp_path: Path) -> None:
    write(
        tmp_path,
        "transactions.csv",
        TX + "a,2024-01-02,10.5\nb,2024-01-03 12:30:00,-2\na,2024-02-01T08:00:00,0\n",
    )
    write(
        tmp_path,
        "customers.csv",
        "customer_id,signup_date,segment,age\na,2023-12-01,gold,31\nb,2023-11-05,silver,\n",
    )
    history = load_history(tmp_path)
    tx = history.transactions
    assert tx.column_names == ["customer_id", "timestamp", "amount"]
    assert tx.schema.field("timestamp").type == pa.timestamp("us")
    assert tx.column("amount").to_pylist() == [10.5, -2.0, 0.0]
    assert tx.column("timestamp").to_pylist()[1] == datetime(2024, 1, 3, 12, 30)
    customers = history.customers
    assert customers is not None
    assert customers.schema.field("age").type == pa.float64()  # every value parses: a number
    assert customers.schema.field("segment").type == pa.string()
    assert customers.column("age").to_pylist() == [31.0, None]
    summary = history.summary()
    assert summary["transactions"] == 3 and summary["customers_with_transactions"] == 2
    assert summary["refund_rows"] == 1 and summary["zero_amount_rows"] == 1


def test_parquet_and_csv_load_to_the_same_tables(tmp_path: Path) -> None:
    write(tmp_path / "csv", "transactions.csv", TX + "a,2024-01-02,10.5\nb,2024-01-03,3\n")
    (tmp_path / "pq").mkdir()
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "timestamp": pd.to_datetime(["2024-01-02", "2024-01-03"]),
            "amount": [10.5, 3.0],
        }
    )
    frame.to_parquet(tmp_path / "pq" / "transactions.parquet")
    assert load_history(tmp_path / "csv").transactions.equals(load_history(tmp_path / "pq").transactions)


def test_typed_parquet_keeps_its_values_order_and_attribute_types(tmp_path: Path) -> None:
    tx = pa.table(
        {
            "customer_id": ["b", " a ", "c"],  # one padded id: trimmed, as in CSV
            "timestamp": pa.array([datetime(2024, 1, 3), datetime(2024, 1, 1), datetime(2024, 1, 2)]),
            "amount": [3.5, 1.0, -2.0],
            "quantity": pa.array([2, 1, 7], pa.int64()),
            "category": ["x", "y", None],
        }
    )
    customers = pa.table({"customer_id": ["a", "b", "c"], "age": pa.array([31, None, 40], pa.int64())})
    pq.write_table(tx, tmp_path / "transactions.parquet")
    pq.write_table(customers, tmp_path / "customers.parquet")
    history = load_history(tmp_path)
    out = history.transactions
    assert out.column("customer_id").to_pylist() == ["b", "a", "c"]  # file order, trimmed
    assert out.column("amount").to_pylist() == [3.5, 1.0, -2.0]
    assert out.schema.field("quantity").type == pa.float64()  # numbers are float64 whatever the file says
    assert out.column("quantity").to_pylist() == [2.0, 1.0, 7.0]
    assert out.column("category").to_pylist() == ["x", "y", None]
    assert history.customers is not None
    assert history.customers.schema.field("age").type == pa.int64()  # attributes keep their file type
    assert history.customers.column("age").to_pylist() == [31, None, 40]


def test_parquet_files_load_as_the_tables_pyarrow_reads(tmp_path: Path) -> None:
    """A Parquet file loads as validating the table pyarrow reads from it, for the types a CRM export
    writes (a pandas categorical, zoned and millisecond timestamps, 8-bit integers, decimals, names equal
    but for case), over many row groups, in file order: a guard for any faster reader."""
    n = 5_000
    rng = np.random.default_rng(0)
    tx = pa.table(
        {
            "customer_id": pa.array(rng.choice(["a", "b", "c"], n)).dictionary_encode(),
            "timestamp": pa.array(
                rng.integers(1_700_000_000_000, 1_710_000_000_000, n), pa.timestamp("ms", tz="Europe/Paris")
            ),
            "amount": pa.array(
                [decimal.Decimal(f"{v}.25") for v in rng.integers(-5, 50, n)], pa.decimal128(8, 2)
            ),
            "quantity": pa.array(rng.integers(1, 9, n), pa.int8()),
            "order_id": [f"o{i}" for i in range(n)],
        }
    )
    customers = pa.table({"customer_id": ["a", "b", "c"], "Age": [1, 2, 3], "age": [4.0, 5.0, None]})
    pq.write_table(tx, tmp_path / "transactions.parquet", row_group_size=700)
    pq.write_table(customers, tmp_path / "customers.parquet")
    loaded = load_history(tmp_path)
    expected = history_from_frames(
        pq.read_table(tmp_path / "transactions.parquet"), pq.read_table(tmp_path / "customers.parquet")
    )
    assert loaded.transactions.equals(expected.transactions)
    assert loaded.customers is not None and expected.customers is not None
    assert loaded.customers.equals(expected.customers)
    assert loaded.customers.column_names == ["customer_id", "Age", "age"]


def _decoded(table: pa.Table) -> pa.Table:
    """`table` with its dictionary columns as plain text: the values, whatever each chunk's dictionary."""
    return pa.table(
        [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns],
        names=table.column_names,
    )


def test_a_folder_of_parquet_parts_is_one_table(tmp_path: Path) -> None:
    folder = tmp_path / "transactions.parquet"
    folder.mkdir()
    for i, channel in enumerate(("web", "shop")):
        part = {"customer_id": [f"c{i}"], "timestamp": [datetime(2024, 1, 1 + i)], "amount": [1.0 + i]}
        pq.write_table(pa.table({**part, "channel": [channel]}), folder / f"part-{i}.parquet")
    tx = load_history(tmp_path).transactions
    assert sorted(tx.column("customer_id").to_pylist()) == ["c0", "c1"]
    assert tx.schema.field("channel").type == history_module.LABEL_TYPE
    assert sorted(tx.column("channel").to_pylist()) == ["shop", "web"]


def test_labels_are_dictionaries_whatever_the_source(tmp_path: Path) -> None:
    """Category, channel and interaction type come out as LABEL_TYPE from CSV, Parquet (plain text, a pandas
    categorical, many row groups each with its own dictionary) and frames alike, with the same values."""
    rows = ["web", "shop ", None, "web", "\u00a0phone", "shop"] * 3  # padded values trimmed as any text
    ids = [f"c{i % 4}" for i in range(len(rows))]
    tx = pa.table(
        {
            "customer_id": ids,
            "timestamp": pa.array([datetime(2024, 1, 1 + i) for i in range(len(rows))]),
            "amount": [float(i) for i in range(len(rows))],
            "category": pa.array(rows).dictionary_encode(),  # as pandas writes a categorical
            "channel": rows,
        }
    )
    ix = pa.table({"customer_id": ids[:5], "timestamp": tx.column("timestamp")[:5], "type": ["visit"] * 5})
    pq.write_table(tx, tmp_path / "transactions.parquet", row_group_size=4)
    pq.write_table(ix, tmp_path / "interactions.parquet")
    from_file = load_history(tmp_path)
    from_frames = history_from_frames(
        tx.to_pandas().astype({"category": object}), interactions=ix.to_pandas()
    )
    for history in (from_file, from_frames):
        assert history.interactions is not None
        for table, column in ((history.transactions, "category"), (history.transactions, "channel")):
            assert table.schema.field(column).type == history_module.LABEL_TYPE
            assert table.column(column).to_pylist() == [None if v is None else v.strip() for v in rows]
        assert history.interactions.schema.field("type").type == history_module.LABEL_TYPE
    assert _decoded(from_file.transactions).equals(_decoded(from_frames.transactions))
    csv = tmp_path / "csv"
    write(csv, "transactions.csv", "customer_id,timestamp,amount,channel\na,2024-01-01,1, web\n")
    loaded = load_history(csv).transactions
    assert loaded.schema.field("channel").type == history_module.LABEL_TYPE
    assert loaded.column("channel").to_pylist() == ["web"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["complaint", "visit", " visit", "visit\t", "\u2003", "", "Visit", "é "]) | st.none(),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 5),
)
def test_labels_read_as_dictionaries_validate_as_plain_text_does(
    types: list[str | None], row_group: int
) -> None:
    """Oracle: a Parquet label column read as dictionaries (its own dictionary per row group) gives the
    history, or the problems, that the same values as plain text give: trimming, blanks, missing values."""
    with tempfile.TemporaryDirectory() as tmp:
        _check_labels_as_plain_text(Path(tmp), types, row_group)


def _check_labels_as_plain_text(folder: Path, types: list[str | None], row_group: int) -> None:
    n = len(types)
    tx = pa.table({"customer_id": ["a"], "timestamp": [datetime(2024, 1, 1)], "amount": [1.0]})
    ix = pa.table(
        {
            "customer_id": ["a"] * n,
            "timestamp": [datetime(2024, 1, 1, 0, i) for i in range(n)],
            "type": pa.array(types, pa.string()),
        }
    )
    pq.write_table(tx, folder / "transactions.parquet")
    pq.write_table(ix, folder / "interactions.parquet", row_group_size=row_group)
    try:
        expected = history_from_frames(tx, interactions=ix)
    except HistoryError as exc:
        with pytest.raises(HistoryError) as got:
            load_history(folder)
        assert [(p.column, p.message, p.count) for p in got.value.problems] == [
            (p.column, p.message, p.count) for p in exc.problems
        ]
        return
    loaded = load_history(folder)
    assert loaded.interactions is not None and expected.interactions is not None
    assert loaded.interactions.schema.field("type").type == history_module.LABEL_TYPE
    assert _decoded(loaded.interactions).equals(_decoded(expected.interactions))


def test_in_memory_frames_are_validated_like_files() -> None:
    frame = pd.DataFrame({"customer_id": [1, 2], "timestamp": ["2024-01-01", "bad"], "amount": [1.0, 2.0]})
    with pytest.raises(HistoryError, match=r"<transactions>: column 'timestamp': 1 values are not ISO 8601"):
        history_from_frames(frame)
    good = history_from_frames(frame.iloc[:1])
    assert good.transactions.column("customer_id").to_pylist() == ["1"]  # integer ids become text


def test_column_mapping_and_date_format(tmp_path: Path) -> None:
    write(tmp_path, "orders.csv", "cust,day,dollars,extra\n7,19970101,11.77,x\n8,19970215,5,y\n")
    write(
        tmp_path,
        "dataset.yaml",
        "tables:\n  transactions:\n    file: orders.csv\n    timestamp_format: '%Y%m%d'\n"
        "    columns: {customer_id: cust, timestamp: day, amount: dollars}\n",
    )
    history = load_history(tmp_path)
    assert history.transactions.column("timestamp").to_pylist() == [
        datetime(1997, 1, 1),
        datetime(1997, 2, 15),
    ]
    assert history.report.ignored_columns == {"transactions": ["extra"]}


def test_utc_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-01T10:00:00+02:00,1\nb,2024-01-01T10:00:00Z,1\n")
    times = load_history(tmp_path).transactions.column("timestamp").to_pylist()
    assert times == [datetime(2024, 1, 1, 8), datetime(2024, 1, 1, 10)]


def test_gzipped_csv_is_read(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    with gzip.open(tmp_path / "transactions.csv.gz", "wt") as fh:
        fh.write(TX + "a,2024-01-02,1\n")
    assert load_history(tmp_path).transactions.num_rows == 1


# --- bad input: one clear error naming file, column and rows -------------------------------------


def test_not_a_folder(tmp_path: Path) -> None:
    assert "is not a folder" in error_of(tmp_path / "nope")


def test_no_transactions_table(tmp_path: Path) -> None:
    write(tmp_path, "customers.csv", "customer_id\na\n")
    message = error_of(tmp_path)
    assert "has no transactions table" in message and "customers.csv" in message


def test_two_files_for_one_table(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,1\n")
    pq.write_table(pa.table({"customer_id": ["a"]}), tmp_path / "transactions.parquet")
    assert "more than one transactions table (transactions.parquet, transactions.csv)" in error_of(tmp_path)


def test_missing_required_column(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", "customer_id,timestamp,price\na,2024-01-02,1\n")
    message = error_of(tmp_path)
    assert "transactions.csv: is missing required column 'amount'" in message
    assert "columns found: customer_id, timestamp, price" in message


def test_mapping_names_a_missing_source_column(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,1\n")
    config = DatasetConfig.model_validate({"tables": {"transactions": {"columns": {"amount": "dollars"}}}})
    assert "missing required column 'amount' (mapped from 'dollars')" in error_of(tmp_path, config=config)


def test_header_only_table_is_empty(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX)
    assert "transactions.csv: has no rows" in error_of(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", "")
    assert "transactions.csv: is empty (no header line)" in error_of(tmp_path)


def test_unparsable_timestamps_name_lines_and_values(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,1\nb,yesterday,2\nc,2024-13-45,3\n")
    message = error_of(tmp_path)
    assert "transactions.csv: column 'timestamp': 2 values are not ISO 8601 timestamps" in message
    assert "line 3: 'yesterday'; line 4: '2024-13-45'" in message


def test_unparsable_amounts(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + 'a,2024-01-02,1\nb,2024-01-02,12 USD\nc,2024-01-02,"1,5"\n')
    message = error_of(tmp_path)
    assert "column 'amount': 2 values are not numbers" in message
    assert "line 3: '12 USD'; line 4: '1,5'" in message


def test_blank_required_values(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + " ,2024-01-02,1\nb,2024-01-02,\n")
    message = error_of(tmp_path)
    assert "column 'customer_id': 1 missing values (required) — first: line 2" in message
    assert "column 'amount': 1 missing values (required) — first: line 3" in message


def test_nan_and_infinite_amounts(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,nan\nb,2024-01-02,inf\nc,2024-01-02,1\n")
    assert "column 'amount': 2 values are NaN or infinite — first: line 2: 'nan'; line 3: 'inf'" in error_of(
        tmp_path
    )


def test_duplicate_rows_error_drop_and_keep(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,1\na,2024-01-02,1\nb,2024-01-02,1\n")
    assert "1 exact duplicate rows" in error_of(tmp_path) and "line 3" in error_of(tmp_path)
    dropped = load_history(tmp_path, DatasetConfig(duplicates="drop"))
    assert dropped.transactions.num_rows == 2
    assert dropped.report.rows_dropped == {"transactions": 1}
    assert load_history(tmp_path, DatasetConfig(duplicates="keep")).transactions.num_rows == 3


def test_rows_equal_in_the_required_columns_only_are_not_duplicates(tmp_path: Path) -> None:
    """The duplicate check first hashes the required columns; a repeat there is only a lead: rows that differ
    in an optional column are kept, and rows equal in every column are still found."""
    write(
        tmp_path,
        "transactions.csv",
        "customer_id,timestamp,amount,order_id,channel\n"
        "a,2024-01-02,1,o1,web\na,2024-01-02,1,o2,web\na,2024-01-02,1,o1,shop\nb,2024-01-02,1,o3,web\n",
    )
    assert load_history(tmp_path).transactions.num_rows == 4
    write(
        tmp_path,
        "transactions.csv",
        "customer_id,timestamp,amount,order_id\na,2024-01-02,1,o1\na,2024-01-02,1,o1\n",
    )
    assert "1 exact duplicate rows" in error_of(tmp_path)


def test_events_for_unknown_customers(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,1\nzz,2024-01-02,1\n")
    write(tmp_path, "customers.csv", "customer_id\na\n")
    write(tmp_path, "interactions.csv", "customer_id,timestamp,type\nyy,2024-01-01,login\n")
    message = error_of(tmp_path)
    assert "transactions.csv: column 'customer_id': 1 rows name a customer missing from customers" in message
    assert "line 3: 'zz'" in message
    assert "interactions.csv: column 'customer_id': 1 rows name a customer missing" in message


def test_events_after_the_as_of_date(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,1\nb,2024-03-01,1\n")
    write(tmp_path, "dataset.yaml", "as_of: 2024-02-01\n")
    assert "1 values are after the as-of date 2024-02-01 23:59:59 — first: line 3" in error_of(tmp_path)
    # an explicit as-of overrides the config's
    assert load_history(tmp_path, as_of=datetime(2024, 6, 1)).transactions.num_rows == 2


def test_signup_after_the_as_of_date(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,1\n")
    write(tmp_path, "customers.csv", "customer_id,signup_date\na,2025-01-01\n")
    assert "customers.csv: column 'signup_date': 1 values are after the as-of date" in error_of(
        tmp_path, as_of=datetime(2024, 6, 1)
    )


def test_mixed_time_zones(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02T10:00:00+01:00,1\nb,2024-01-02 10:00:00,1\n")
    message = error_of(tmp_path)
    assert (
        "column 'timestamp': mixes time zones: 1 with an offset like +02:00 or Z, 1 with no time zone"
        in message
    )
    assert "line 2: '2024-01-02T10:00:00+01:00'; line 3: '2024-01-02 10:00:00'" in message


def test_repeated_customer_ids(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,1\n")
    write(tmp_path, "customers.csv", "customer_id,segment\na,x\nb,y\na,z\n")
    assert (
        "customers.csv: column 'customer_id': 1 rows repeat a customer_id listed earlier — first: line 4"
        in (error_of(tmp_path))
    )


def test_non_utf8_bytes(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "transactions.csv").write_bytes(TX.encode() + b"caf\xe9,2024-01-02,1\n")
    message = error_of(tmp_path)
    assert "transactions.csv: cannot be read" in message and "UTF8" in message.replace("UTF-8", "UTF8")


def test_non_utf8_header(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "transactions.csv").write_bytes(b"customer_id,timestamp,montant\xe9\n")
    assert "transactions.csv: header is not UTF-8 text" in error_of(tmp_path)


def test_ragged_csv_row(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,1\nb,2024-01-02,1,extra\n")
    message = error_of(tmp_path)
    assert "transactions.csv: cannot be read" in message and "Expected 3 columns, got 4" in message


def test_wrong_types_in_parquet(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    table = pa.table({"customer_id": [1.5], "timestamp": [20240101], "amount": [True]})
    pq.write_table(table, tmp_path / "transactions.parquet")
    message = error_of(tmp_path)
    assert "column 'customer_id': has type double; expected text or integer ids" in message
    assert "column 'timestamp': has type int64; expected a timestamp or date" in message
    assert "column 'amount': has type bool; expected a number" in message


def test_corrupt_parquet(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "transactions.parquet").write_bytes(b"PAR1 this is not parquet")
    assert "transactions.parquet: cannot be read" in error_of(tmp_path)


def test_interaction_without_type(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,2024-01-02,1\n")
    write(tmp_path, "interactions.csv", "customer_id,timestamp,type\na,2024-01-01,\na,2024-01-03,complaint\n")
    assert "interactions.csv: column 'type': 1 missing values (required) — first: line 2" in error_of(
        tmp_path
    )


def test_every_problem_is_listed_in_one_error(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", TX + "a,bad,1\nb,2024-01-02,x\n")
    write(tmp_path, "cancellations.csv", "customer_id\na\n")
    with pytest.raises(HistoryError) as info:
        load_history(tmp_path)
    found = [(p.file, p.column, p.message.split(" (")[0].split(";")[0]) for p in info.value.problems]
    assert found == [
        ("transactions.csv", "timestamp", "values are not ISO 8601 timestamps"),
        ("transactions.csv", "amount", "values are not numbers"),
        ("cancellations.csv", None, "is missing required column 'timestamp'"),
    ]


def test_drop_mode_drops_bad_rows_and_counts_them(tmp_path: Path) -> None:
    write(
        tmp_path,
        "transactions.csv",
        TX + "a,2024-01-02,1\nb,bad,2\nc,2024-01-03,x\nd,2024-09-01,4\ne,2024-01-04,5\ne,2024-01-04,5\n",
    )
    config = DatasetConfig(on_invalid="drop", as_of=datetime(2024, 6, 30))
    history = load_history(tmp_path, config)
    assert history.transactions.column("customer_id").to_pylist() == ["a", "e"]
    assert history.report.rows_read == {"transactions": 6}
    assert history.report.rows_dropped == {"transactions": 4}
    reasons = sorted(p.message.split(" (")[0] for p in history.report.dropped)
    assert reasons == [
        "exact duplicate rows",
        "values are after the as-of date 2024-06-30 00:00:00",
        "values are not ISO 8601 timestamps",
        "values are not numbers",
    ]


def test_drop_mode_still_refuses_structural_problems(tmp_path: Path) -> None:
    write(tmp_path, "transactions.csv", "customer_id,timestamp\na,2024-01-02\n")
    assert "missing required column 'amount'" in error_of(tmp_path, config=DatasetConfig(on_invalid="drop"))


# --- the dataset config --------------------------------------------------------------------------


def test_config_rejects_unknown_keys_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "dataset.yaml", "as_off: 2024-01-01\n")
    with pytest.raises(ConfigError, match=r"dataset.yaml: unknown key\(s\) as_off"):
        DatasetConfig.from_yaml(path)


def test_config_rejects_bad_choices_and_dates(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"dataset\.yaml: 'on_invalid' is 'skip'; expected one of error, drop"
    ):
        parse(DatasetConfig, {"on_invalid": "skip"}, "dataset.yaml")
    with pytest.raises(ConfigError, match=r"dataset\.yaml: as_of: 'soon' is not an ISO date"):
        parse(DatasetConfig, {"as_of": "soon"}, "dataset.yaml")
    with pytest.raises(
        ConfigError, match=r"dataset.yaml: unknown key\(s\) tables\.orders \(known: cancellations"
    ):
        parse(DatasetConfig, {"tables": {"orders": {}}}, "dataset.yaml")


def test_config_round_trips() -> None:
    raw = {
        "name": "shop",
        "as_of": "2024-06-30T23:59:59",
        "on_invalid": "drop",
        "duplicates": "keep",
        "churn": "contractual",
        "tables": {
            "transactions": {"file": "o.csv", "columns": {"amount": "total"}, "timestamp_format": "%d/%m/%Y"}
        },
    }
    config = parse(DatasetConfig, raw, "dataset.yaml")
    assert parse(DatasetConfig, config.model_dump(mode="json"), "dataset.yaml") == config
    assert config.as_of == datetime(2024, 6, 30, 23, 59, 59)


@pytest.mark.parametrize(
    ("hashes", "repeated"),
    [
        ([], False),
        ([7], False),
        ([1, 2, 3], False),
        ([3, 2, 3], True),
        ([2**63 + 5, 7, 2**63 + 5], True),
        ([2**63 - 1, 2**63, 0, 2**64 - 1], False),  # the range's edges, none repeated
        ([2**64 - 1, 5, 2**64 - 1], True),
        ([9, 1, 4, 2, 9], True),  # sorted: 1 2 | 4 9 | 9: the repeat across two batches
        ([9, 1, 4, 2, 8, 6, 9], True),  # 1 2 | 4 6 | 8 9 | 9
        ([9, 1, 4, 2, 8, 6], False),
    ],
)
@pytest.mark.parametrize("batch", [2, history_module.HASH_BATCH])
def test_repeated_hashes_are_found_within_and_across_batches(
    hashes: list[int], repeated: bool, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_module, "HASH_BATCH", batch)
    con = duckdb.connect()
    query = f"SELECT unnest({hashes}::UBIGINT[])" if hashes else "SELECT 1::UBIGINT WHERE false"
    assert history_module._repeated_hash(con, query) is repeated
