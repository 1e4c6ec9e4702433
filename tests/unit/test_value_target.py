"""Profit, not only revenue (features.value): the margin column of the history contract, the value target of
training.yaml, and the labels and outcomes that follow it, on a hand-built history whose labels are
computed by hand below: margin of the transactions in (T, T + H] minus the cost-to-serve of the
interactions in it."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.config import ConfigError, parse
from features.build import build_labels, build_spine, build_training_set
from features.history import HistoryError, history_from_frames, load_history
from features.value import REVENUE, ValueTarget, ValueTargetError
from serving import outcomes
from training.config import TrainingConfig

T = datetime(2024, 1, 31, 12, 0)
H = 60  # days: the window is (2024-01-31 12:00, 2024-03-31 12:00]
END = T + timedelta(days=H)
COSTS = {"support_ticket": 5.0, "complaint": 12.5, "campaign_sent": 0.0}
MARGIN = ValueTarget("margin", COSTS)

TX = [  # customer, timestamp, amount, margin
    ("a", datetime(2024, 1, 10), 100.0, 30.0),  # before T
    ("a", datetime(2024, 2, 15), 50.0, 20.0),
    ("a", datetime(2024, 3, 1), -25.0, -10.0),  # a refund returns its margin
    ("a", datetime(2024, 4, 20), 80.0, 10.0),  # after the window
    ("b", datetime(2024, 1, 5), 40.0, -5.0),  # sold below cost: a negative margin
    ("b", T, 70.0, 7.0),  # exactly at T: not in the window
    ("b", END, 10.0, 4.0),  # exactly at T + H: in it
    ("c", datetime(2024, 1, 2), 20.0, 5.0),
    ("d", datetime(2024, 1, 3), 5.0, 1.0),
]
IX = [  # customer, timestamp, type
    ("a", datetime(2024, 2, 1), "support_ticket"),
    ("a", datetime(2024, 2, 2), "complaint"),
    ("a", datetime(2024, 2, 3), "login"),  # no cost configured: 0
    ("a", datetime(2024, 4, 10), "support_ticket"),  # after the window
    ("b", T, "complaint"),  # at T: not in the window
    ("c", datetime(2024, 2, 10), "support_ticket"),
    ("c", datetime(2024, 3, 10), "support_ticket"),
    ("c", datetime(2024, 2, 1), "campaign_sent"),  # configured at 0
    ("d", datetime(2024, 5, 1), "complaint"),  # after the window
]
# by hand, over (T, T + H]:
#   a: margin 20 - 10 = 10; cost 5 + 12.5 = 17.5; profit -7.5; revenue 50 - 25 = 25
#   b: margin 4; no cost (the complaint is at T); profit 4; revenue 10
#   c: no purchase; cost 5 + 5 + 0 = 10; profit -10; revenue 0
#   d: nothing in the window: 0 and 0
PROFIT = {"a": -7.5, "b": 4.0, "c": -10.0, "d": 0.0}
REVENUE_LABEL = {"a": 25.0, "b": 10.0, "c": 0.0, "d": 0.0}


def _history(margins: bool = True, blank: bool = False) -> object:
    tx = pd.DataFrame(TX, columns=["customer_id", "timestamp", "amount", "margin"])
    if blank:
        tx["margin"] = tx["margin"].astype(object)
        tx.loc[2, "margin"] = None
    if not margins:
        tx = tx.drop(columns="margin")
    ix = pd.DataFrame(IX, columns=["customer_id", "timestamp", "type"])
    return history_from_frames(tx, interactions=ix, as_of=datetime(2024, 12, 31))


def _labels(history: object, value: ValueTarget) -> dict[str, float]:
    spine = build_spine(history, [T])  # type: ignore[arg-type]
    rows = build_labels(history, spine, H, value=value).to_pylist()  # type: ignore[arg-type]
    return {r["customer_id"]: r["future_value"] for r in rows}


def test_margin_labels_are_margin_minus_cost_to_serve_in_the_window() -> None:
    assert _labels(_history(), MARGIN) == pytest.approx(PROFIT)


def test_revenue_labels_are_unchanged_by_a_margin_column_or_costs() -> None:
    assert _labels(_history(), REVENUE) == pytest.approx(REVENUE_LABEL)
    assert _labels(_history(margins=False), REVENUE) == pytest.approx(REVENUE_LABEL)
    # costs only count for the margin target
    assert _labels(_history(), ValueTarget("revenue", COSTS)) == pytest.approx(REVENUE_LABEL)


def test_margin_without_costs_is_the_margin_alone() -> None:
    assert _labels(_history(), ValueTarget("margin")) == pytest.approx(
        {"a": 10.0, "b": 4.0, "c": 0.0, "d": 0.0}
    )


def test_training_set_labels_follow_the_target() -> None:
    table = build_training_set(_history(), [T], H, "rfm_v1", value=MARGIN)  # type: ignore[arg-type]
    got = dict(
        zip(table.column("customer_id").to_pylist(), table.column("future_value").to_pylist(), strict=True)
    )
    assert got == pytest.approx(PROFIT)


def test_margin_target_refuses_a_history_without_margins() -> None:
    with pytest.raises(
        ValueTargetError, match=r"needs a 'margin' column on transactions.*value.target: revenue"
    ):
        MARGIN.check(_history(margins=False))  # type: ignore[arg-type]
    with pytest.raises(ValueTargetError, match="margin"):
        _labels(_history(margins=False), MARGIN)
    REVENUE.check(_history(margins=False))  # type: ignore[arg-type]  # revenue needs nothing more


def test_margin_target_refuses_transactions_without_a_margin() -> None:
    history = _history(blank=True)  # a blank margin is valid in the contract (the column is optional)
    with pytest.raises(
        ValueTargetError, match=r"1 transactions .* have no margin .* customer a at 2024-03-01"
    ):
        MARGIN.check(history)  # type: ignore[arg-type]


def test_a_margin_that_is_not_a_number_names_the_file_line_and_column(tmp_path: Path) -> None:
    folder = tmp_path / "history"
    folder.mkdir()
    (folder / "transactions.csv").write_text(
        "customer_id,timestamp,amount,margin\n"
        "a,2024-01-01,10,2.5\n"
        "b,2024-01-02,20,-3\n"  # a loss is a margin too
        "c,2024-01-03,30,12 EUR\n",
        encoding="utf-8",
    )
    with pytest.raises(HistoryError) as caught:
        load_history(folder, as_of=datetime(2024, 12, 31))
    message = str(caught.value)
    assert "transactions.csv: column 'margin': 1 values are not numbers — first: line 4: '12 EUR'" in message
    assert "amount" not in message.split("margin")[0].split("transactions.csv")[-1]
    (folder / "transactions.csv").write_text(
        "customer_id,timestamp,amount,margin\na,2024-01-01,10,2.5\nb,2024-01-02,20,-3\nc,2024-01-03,30,\n",
        encoding="utf-8",
    )
    tx = load_history(folder, as_of=datetime(2024, 12, 31)).transactions
    assert tx.column("margin").to_pylist() == [2.5, -3.0, None]


def test_the_training_config_reads_and_checks_the_value_section() -> None:
    assert TrainingConfig().value.spec() == REVENUE
    cfg = parse(TrainingConfig, {"value": {"target": "margin", "cost_to_serve": COSTS}}, "training.yaml")
    assert cfg.value.spec().is_margin and cfg.value.spec().costs() == {
        "complaint": 12.5,
        "support_ticket": 5.0,
    }
    with pytest.raises(
        ConfigError, match=r"training.yaml: value.cost_to_serve.complaint: .*greater than or equal to 0"
    ):
        parse(
            TrainingConfig,
            {"value": {"target": "margin", "cost_to_serve": {"complaint": -1}}},
            "training.yaml",
        )
    with pytest.raises(
        ConfigError, match=r"training.yaml: 'value.target' is 'profit'; expected one of revenue, margin"
    ):
        parse(TrainingConfig, {"value": {"target": "profit"}}, "training.yaml")
    with pytest.raises(ConfigError, match=r"value.cost_to_serve.visit"):
        parse(TrainingConfig, {"value": {"cost_to_serve": {"visit": "free"}}}, "training.yaml")
    with pytest.raises(ConfigError, match=r"value.cost_to_serve.visit"):
        parse(TrainingConfig, {"value": {"cost_to_serve": {"visit": float("inf")}}}, "training.yaml")


def test_a_value_target_refuses_negative_costs_made_in_code_and_round_trips() -> None:
    with pytest.raises(ValueTargetError, match=r"value.cost_to_serve.complaint: .* at least 0, got -2"):
        ValueTarget("margin", {"complaint": -2.0})
    with pytest.raises(ValueTargetError, match="value target 'profit'"):
        ValueTarget("profit")
    assert ValueTarget.from_dict(MARGIN.to_dict()) == MARGIN
    assert ValueTarget.from_dict(None) == REVENUE
    assert (
        ValueTarget.from_dict({"objective": "reg:tweedie", "horizon_map": [0, 1]}) == REVENUE
    )  # older model


def test_outcomes_value_after_follows_the_served_target() -> None:
    tx = pd.DataFrame(TX, columns=["customer_id", "timestamp", "amount", "margin"])
    ix = pd.DataFrame(IX, columns=["customer_id", "timestamp", "type"])
    episodes = pd.DataFrame({"customer_id": list("abcd"), "opened_at": [T] * 4, "horizon_days": [H] * 4})
    end = datetime(2024, 12, 31)
    revenue = outcomes.compute(episodes, tx, end)
    margin = outcomes.compute(episodes, tx, end, interactions=ix, value=MARGIN)
    assert dict(zip(revenue["customer_id"], revenue["value_after"], strict=True)) == pytest.approx(
        REVENUE_LABEL
    )
    assert dict(zip(margin["customer_id"], margin["value_after"], strict=True)) == pytest.approx(PROFIT)
    # the outcome itself (saved, lost) does not depend on how value is measured
    assert margin["outcome"].tolist() == revenue["outcome"].tolist() == ["saved", "saved", "lost", "lost"]
