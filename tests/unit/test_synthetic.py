"""Tests of the synthetic customer-history generator: contract, invariants and the simulated signals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from features.datasets import synthetic, tables

N = 4000
SEED = 7
AS_OF = pd.Timestamp("2025-12-31 23:59:59")
TABLES = ("transactions", "customers", "interactions", "cancellations", "truth")


@pytest.fixture(scope="module")
def data() -> dict[str, pa.Table]:
    return synthetic.generate(N, seed=SEED)


@pytest.fixture(scope="module")
def frames(data: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    return {name: table.to_pandas() for name, table in data.items()}


@pytest.fixture(scope="module")
def churn(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per customer: signup, subscriber flag and true churn time."""
    cust = frames["customers"][
        ["customer_id", "signup_date", "is_subscriber", "segment", "acquisition_channel"]
    ]
    return cust.merge(frames["truth"][["customer_id", "churn_time"]], on="customer_id", validate="1:1")


def _seconds(col: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(col, pa.int64()).to_numpy() // 1_000_000


# --- contract ---------------------------------------------------------------------------------------------


def test_constants() -> None:
    assert synthetic.AS_OF.isoformat() == "2025-12-31T23:59:59"
    assert synthetic.START < synthetic.AS_OF
    assert synthetic.START.tzinfo is None and synthetic.AS_OF.tzinfo is None


def test_schemas_exact(data: dict[str, pa.Table]) -> None:
    ts = pa.timestamp("us")
    expected = {
        "transactions": [
            ("customer_id", pa.string()),
            ("timestamp", ts),
            ("amount", pa.float64()),
            ("quantity", pa.int64()),
            ("category", pa.string()),
            ("channel", pa.string()),
            ("order_id", pa.string()),
            ("margin", pa.float64()),
        ],
        "customers": [
            ("customer_id", pa.string()),
            ("signup_date", ts),
            ("segment", pa.string()),
            ("region", pa.string()),
            ("acquisition_channel", pa.string()),
            ("plan", pa.string()),
            ("age", pa.int64()),
            ("is_subscriber", pa.bool_()),
            ("email_opt_in", pa.bool_()),
        ],
        "interactions": [
            ("customer_id", pa.string()),
            ("timestamp", ts),
            ("type", pa.string()),
            ("value", pa.float64()),
        ],
        "cancellations": [("customer_id", pa.string()), ("timestamp", ts)],
    }
    assert set(data) == set(TABLES)
    for name, fields in expected.items():
        schema = data[name].schema
        assert [(f.name, f.type) for f in schema] == fields, name
    truth = data["truth"].schema
    assert truth.field("customer_id").type == pa.string()
    assert truth.field("churn_time").type == ts
    assert truth.field("is_subscriber").type == pa.bool_()


def test_the_schemas_come_from_the_contract() -> None:
    """features/datasets/tables.py derives each column's type from its kind in features.history.CONTRACT
    and refuses a column the contract does not have, or a schema without a required column."""
    assert tables.contract_schema("cancellations", ("customer_id", "timestamp")) == pa.schema(
        [("customer_id", pa.string()), ("timestamp", pa.timestamp("us"))]
    )
    assert tables.contract_schema(
        "transactions", ("customer_id", "timestamp", "amount", "quantity")
    ).types == [
        pa.string(),
        pa.timestamp("us"),
        pa.float64(),
        pa.int64(),
    ]
    with pytest.raises(ValueError, match="transactions: column 'colour' is not in the history contract"):
        tables.contract_schema("transactions", ("customer_id", "timestamp", "amount", "colour"))
    with pytest.raises(ValueError, match="interactions: column 'segment' is not in the history contract"):
        tables.contract_schema("interactions", ("customer_id", "timestamp", "type", "segment"))
    with pytest.raises(ValueError, match="the contract requires amount"):
        tables.contract_schema("transactions", ("customer_id", "timestamp"))
    with pytest.raises(ValueError, match="'orders' is not a contract table"):
        tables.contract_schema("orders", ("customer_id",))
    assert synthetic.TRANSACTIONS_SCHEMA is tables.TRANSACTIONS_SCHEMA


def test_same_seed_identical_other_seed_differs() -> None:
    a = synthetic.generate(1500, seed=3)
    b = synthetic.generate(1500, seed=3)
    c = synthetic.generate(1500, seed=4)
    for name in TABLES:
        assert a[name].equals(b[name]), name
    assert not a["transactions"].equals(c["transactions"])
    assert not a["customers"].equals(c["customers"])


def test_customer_ids(frames: dict[str, pd.DataFrame]) -> None:
    ids = frames["customers"]["customer_id"]
    assert ids.is_unique
    assert ids.iloc[0] == "C0000001" and ids.iloc[-1] == f"C{N:07d}"
    assert ids.str.fullmatch(r"C\d{7}").all()
    known = set(ids)
    for name in ("transactions", "interactions", "cancellations", "truth"):
        assert set(frames[name]["customer_id"]) <= known, name
    assert set(frames["truth"]["customer_id"]) == known


def test_no_event_after_as_of_or_before_signup(data: dict[str, pa.Table]) -> None:
    cust = data["customers"]
    signup = dict(zip(cust["customer_id"].to_pylist(), _seconds(cust["signup_date"]), strict=True))
    as_of = int(AS_OF.timestamp())
    assert _seconds(cust["signup_date"]).max() <= as_of
    for name in ("transactions", "interactions", "cancellations"):
        t = _seconds(data[name]["timestamp"])
        s = np.array([signup[c] for c in data[name]["customer_id"].to_pylist()])
        assert t.max() <= as_of, name
        assert (t >= s).all(), name
        us = pc.cast(data[name]["timestamp"], pa.int64()).to_numpy()
        assert (us % 1_000_000 == 0).all(), name  # seconds resolution
        assert len(np.unique(us % 86_400_000_000)) > 100, name  # with a time of day


def test_unique_orders_and_no_duplicate_rows(frames: dict[str, pd.DataFrame]) -> None:
    assert frames["transactions"]["order_id"].is_unique
    for name, df in frames.items():
        assert not df.duplicated().any(), name
        assert len(df) > 0, name


def test_categorical_values(frames: dict[str, pd.DataFrame]) -> None:
    cust = frames["customers"]
    assert set(cust["segment"]) == {"consumer", "business"}
    assert 4 <= cust["region"].nunique() <= 5
    assert set(cust["acquisition_channel"]) == {"organic", "paid_search", "referral", "social"}
    assert cust["plan"].isna().equals(~cust["is_subscriber"])
    assert 0.15 < cust["is_subscriber"].mean() < 0.25
    assert 0.02 < cust["age"].isna().mean() < 0.3
    assert set(frames["interactions"]["type"]) == {
        "support_ticket",
        "complaint",
        "campaign_sent",
        "campaign_click",
        "email_open",
        "login",
        "visit",
    }
    tickets = frames["interactions"].query("type == 'support_ticket'")["value"]
    assert tickets.notna().all() and tickets.between(1, 4).all()


# --- churn and cancellations ------------------------------------------------------------------------------


def test_cancellations_are_subscriber_churn(frames: dict[str, pd.DataFrame], churn: pd.DataFrame) -> None:
    canc = frames["cancellations"]
    assert canc["customer_id"].is_unique
    merged = canc.merge(churn, on="customer_id", validate="1:1")
    assert merged["is_subscriber"].all()
    assert (merged["timestamp"] == merged["churn_time"]).all()
    churned_subs = churn[churn["is_subscriber"] & churn["churn_time"].notna()]
    assert set(churned_subs["customer_id"]) == set(canc["customer_id"])
    assert (churn["churn_time"].dropna() <= AS_OF).all()
    assert (churn["churn_time"].dropna() > churn.loc[churn["churn_time"].notna(), "signup_date"]).all()


def test_no_purchase_after_churn(frames: dict[str, pd.DataFrame], churn: pd.DataFrame) -> None:
    tx = frames["transactions"].merge(churn, on="customer_id")
    late = tx[tx["churn_time"].notna() & (tx["timestamp"] > tx["churn_time"])]
    assert len(late) > 0  # refunds of earlier purchases do happen after churn ...
    assert (late["amount"] < 0).all()  # ... but no purchase or fee
    # subscribers pay no fee after cancelling and at least the first one at signup
    fees = tx[tx["category"] == "subscription"]
    assert fees["is_subscriber"].all()
    first_fee = fees[fees["amount"] > 0].groupby("customer_id")["timestamp"].min()
    subs = churn[churn["is_subscriber"]].set_index("customer_id")
    assert (first_fee.reindex(subs.index) == subs["signup_date"]).all()


def test_subscription_fees_monthly(frames: dict[str, pd.DataFrame], churn: pd.DataFrame) -> None:
    fees = frames["transactions"].query("category == 'subscription' and amount > 0")
    counts = fees.groupby("customer_id").size()
    subs = churn[churn["is_subscriber"]].set_index("customer_id")
    end = subs["churn_time"].fillna(AS_OF)
    months = (end - subs["signup_date"]).dt.total_seconds() / (86400 * 30.44)
    assert (counts.reindex(subs.index) - (months + 1)).abs().max() <= 2.0


def test_refunds_reference_earlier_purchases(frames: dict[str, pd.DataFrame]) -> None:
    tx = frames["transactions"]
    refunds = tx[tx["amount"] < 0]
    purchases = tx[tx["amount"] > 0]
    assert 0.01 < len(refunds) / len(purchases) < 0.07
    assert refunds["order_id"].str.endswith("-R").all()
    orig = refunds.assign(order_id=refunds["order_id"].str.removesuffix("-R")).merge(
        purchases, on="order_id", suffixes=("", "_orig"), validate="1:1"
    )
    assert len(orig) == len(refunds)
    assert (orig["customer_id"] == orig["customer_id_orig"]).all()
    assert (orig["amount"] == -orig["amount_orig"]).all()
    assert (orig["timestamp"] > orig["timestamp_orig"] + pd.Timedelta(hours=23)).all()
    assert (orig["category_orig"] != "subscription").all()


# --- the simulated signals --------------------------------------------------------------------------------


def test_margins_follow_the_category_rates(frames: dict[str, pd.DataFrame]) -> None:
    """Every transaction has a margin: its amount x its category's rate (to the cent), refunds giving their
    order's back; so the margin target (features.value) has something to learn, and revenue is untouched."""
    tx = frames["transactions"]
    assert tx["margin"].notna().all()
    rates = dict(zip(synthetic.CATEGORIES, [0.12, 0.35, 0.5, 0.6, 0.3, 0.18, 0.25, 0.4, 0.8], strict=True))
    want = (tx["amount"] * tx["category"].map(rates)).round(2)
    assert (tx["margin"] - want).abs().max() <= 0.005 + 1e-9
    refunds = tx[tx["amount"] < 0]
    assert len(refunds) and (refunds["margin"] <= 0).all()
    sums = tx[tx["amount"] > 0].groupby("category")[["margin", "amount"]].sum()
    by_category = sums["margin"] / sums["amount"]
    assert by_category["electronics"] < by_category["fashion"] < by_category["subscription"]


def test_volumes(data: dict[str, pa.Table]) -> None:
    assert 15 <= data["transactions"].num_rows / N <= 25
    assert 3 <= data["interactions"].num_rows / N <= 8


def test_complaints_raise_churn(frames: dict[str, pd.DataFrame], churn: pd.DataFrame) -> None:
    inter = frames["interactions"]
    complained = churn["customer_id"].isin(inter.loc[inter["type"] == "complaint", "customer_id"])
    churned = churn["churn_time"].notna()
    assert complained.sum() > 150
    assert churned[complained].mean() > churned[~complained].mean() + 0.1


def test_activity_decays_before_churn(frames: dict[str, pd.DataFrame], churn: pd.DataFrame) -> None:
    window = pd.Timedelta(days=90)
    c = churn[churn["churn_time"].notna() & (churn["churn_time"] - churn["signup_date"] > 3 * window)]
    tx = frames["transactions"].query("amount > 0 and category != 'subscription'").merge(c, on="customer_id")
    last = (tx["timestamp"] >= tx["churn_time"] - window).sum() / (len(c) * 90.0)
    early_days = ((c["churn_time"] - window - c["signup_date"]).dt.total_seconds() / 86400).sum()
    early = (tx["timestamp"] < tx["churn_time"] - window).sum() / early_days
    assert len(c) > 300
    assert last < 0.75 * early


def test_december_peak(frames: dict[str, pd.DataFrame]) -> None:
    tx = frames["transactions"].query("amount > 0 and category != 'subscription'")
    per_month = tx["timestamp"].dt.to_period("M").value_counts()
    december = per_month[pd.Period("2024-12")]
    around = per_month[[pd.Period(p) for p in ("2024-09", "2024-10", "2025-02", "2025-03")]].mean()
    assert december > 1.4 * around
    assert per_month[[pd.Period("2023-12"), pd.Period("2024-12")]].mean() > per_month.mean()


def test_attributes_matter(frames: dict[str, pd.DataFrame], churn: pd.DataFrame) -> None:
    tx = frames["transactions"].query("amount > 0 and category != 'subscription'")
    spend = tx.merge(churn, on="customer_id").groupby("segment")["amount"].mean()
    assert spend["business"] > 1.8 * spend["consumer"]
    churned = (
        churn.assign(churned=churn["churn_time"].notna()).groupby("acquisition_channel")["churned"].mean()
    )
    assert churned["social"] > churned["referral"] + 0.05


def test_campaigns_reach_silent_churners(frames: dict[str, pd.DataFrame], churn: pd.DataFrame) -> None:
    inter = frames["interactions"].merge(churn, on="customer_id")
    sent = inter[inter["type"] == "campaign_sent"]
    after = sent["churn_time"].notna() & (sent["timestamp"] > sent["churn_time"])
    assert after.sum() > 100
    opens = inter[inter["type"] == "email_open"]
    key = ["customer_id", "value"]  # value = campaign number
    was_open = sent.set_index(key).index.isin(opens.set_index(key).index)
    assert was_open[~after.to_numpy()].mean() > 3 * was_open[after.to_numpy()].mean()


def test_several_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "_CHUNK", 700)
    data = synthetic.generate(2000, seed=1)
    ids = data["customers"]["customer_id"].to_pylist()
    assert ids == [f"C{i:07d}" for i in range(1, 2001)]
    assert pc.count_distinct(data["transactions"]["order_id"]).as_py() == data["transactions"].num_rows
    assert data["truth"].num_rows == 2000


def test_zero_customers() -> None:
    data = synthetic.generate(0)
    assert all(t.num_rows == 0 for t in data.values())
    assert data["transactions"].schema == synthetic.TRANSACTIONS_SCHEMA
    with pytest.raises(ValueError):
        synthetic.generate(-1)


# --- write ------------------------------------------------------------------------------------------------


def test_write_streams_same_tables_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "_CHUNK", 400)
    out = tmp_path / "ds"
    messages: list[str] = []
    rows = synthetic.write(out, 1000, seed=2, progress=messages.append)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{t}.parquet" for t in TABLES] + ["dataset.yaml"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary folder left over
    expected = synthetic.generate(1000, seed=2)
    for name in TABLES:
        table = pq.read_table(out / f"{name}.parquet")
        assert rows[name] == table.num_rows
        assert table.equals(expected[name].combine_chunks()), name
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert meta == {
        "name": "synthetic",
        "description": "Synthetic history (1000 customers, seed 2) generated by Diamond",
        "as_of": "2025-12-31T23:59:59",
        "churn": "mixed",
    }
    assert any("customers" in m for m in messages) and any("transactions" in m for m in messages)
    assert messages[-1] == "done"


def test_write_refuses_non_empty_folder_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    synthetic.write(out, 50, seed=0)  # an existing empty folder is fine
    before = pq.read_table(out / "customers.parquet")
    with pytest.raises(FileExistsError, match="overwrite"):
        synthetic.write(out, 60, seed=1)
    assert pq.read_table(out / "customers.parquet").equals(before)
    (out / "stray.txt").write_text("old")
    rows = synthetic.write(out, 60, seed=1, overwrite=True)
    assert rows["customers"] == 60
    assert not (out / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_write_failure_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ds"

    def boom(message: str) -> None:
        if message.startswith("writing truth"):
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        synthetic.write(out, 100, progress=boom)
    assert list(tmp_path.iterdir()) == []
