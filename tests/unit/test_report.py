"""The model report's page (training.report.render) on hand-built run data: sections, values, a page that
needs nothing from the network, and values that stay text whatever they contain."""

from __future__ import annotations

import base64
import dataclasses
import re
from datetime import UTC, datetime
from html.parser import HTMLParser

from training.report import PLOTS, ReportData, render

EVIL = "<script>alert('x')</script>"


def _run(**changes: object) -> ReportData:
    data = ReportData(
        run_id="abc123",
        run_name="train 2025-12-31",
        started=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        tags={
            "kind": "train",
            "feature_set": "core_v1",
            "cutoff": "2025-12-31T23:59:59",
            "value_objective": "x",
        },
        params={
            "n_columns": "57",
            "training_rows": "4651",
            "origins": "2025-06-30,2025-07-31,2025-08-31,2025-09-30",
            "label_horizon_days": "91",
            "horizon_days": "273",
            "trials": "1",
            "seed": "0",
        },
        metrics={
            "churn_auc": 0.94891,
            "baseline_rfm_churn_auc": 0.8047,
            "value_gini": 0.5,
            "churn_tuning_trials": 3,
        },
        fingerprint={"rows": {"transactions": 29163, "customers": 1500}, "sha256": "f" * 64},
        columns=["a", "b"],
        tiers={"diamond": 2249.153, "gold": 544.88, "bronze": 0.0},
        plots={name: f"png of {name}".encode() for names in PLOTS.values() for name in names},
        version="2",
        aliases=["champion"],
        decisions=[
            {
                "when": "2026-01-02T03:05:06.789",
                "who": "ann",
                "decision": "promoted",
                "champion_before": "1",
                "reason": "promoted: churn AUC gain +0.0100",
                "challenger_churn_auc": 0.95,
                "champion_churn_auc": 0.94,
            },
            {"when": "2026-01-01T00:00:00", "who": "bob", "decision": "refused", "reason": "older"},
        ],
    )
    return dataclasses.replace(data, **changes)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def test_the_page_has_every_section_in_order_and_the_run_values() -> None:
    page = render(_run())
    sections = [a["id"] for t, a in _tags(page) if t == "section"]
    order = ["summary", "data", "design", "metrics", "calibration", "gain", "deciles", "segments", "parity"]
    order += ["drivers", "tiers"]
    assert sections == [*order, "promotion"]
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>\n")
    assert "<title>Diamond model report: core_v1 at 2025-12-31</title>" in page
    for cell in (
        "abc123 (train 2025-12-31)",
        "2026-01-02 03:04:05",
        "29,163",
        "4,651",
        "2025-09-30",
        "0.9489",
    ):
        assert f"<td>{cell}</td>" in page
    assert (
        "<td>2025-06-30, 2025-07-31, 2025-08-31</td>" in page
    )  # the training origins, not the validation one
    assert "<tr><td>churn ROC-AUC</td><td>0.9489</td><td>0.8047</td><td>—</td></tr>" in page
    assert "<tr><td>diamond</td><td>2,249.15</td></tr>" in page
    assert "learn 91-day labels at 4 month-end origins" in page and "to the 273-day horizon" in page
    assert "Version 2: <b>promoted to champion</b>. promoted: churn AUC gain +0.0100" in page
    assert "<td>2026-01-02T03:05:06</td>" in page and "<td>older</td>" in page
    assert "<tr><td>challenger_churn_auc</td><td>0.9500</td></tr>" in page
    assert "Holdout" not in page
    holdout = render(_run(metrics={"churn_auc": 0.9, "holdout_model_churn_auc": 0.71234}))
    assert "<h3>Holdout (what happened after T)</h3>" in holdout and "<td>0.7123</td>" in holdout


def test_the_page_is_self_contained() -> None:
    page = render(_run())
    images = [a["src"] for t, a in _tags(page) if t == "img"]
    assert images == [
        "data:image/png;base64," + base64.b64encode(f"png of {name}".encode()).decode()
        for names in PLOTS.values()
        for name in names
    ]
    assert {t for t, _ in _tags(page)}.isdisjoint({"script", "link", "iframe", "object"})
    assert not re.search(r"(src|href)=['\"]?https?:", page)
    assert "<style>" in page and "border-collapse:collapse" in page  # the stylesheet is inline


def test_backtests_undecided_versions_and_missing_plots_say_so() -> None:
    backtest = render(_run(version=None, decisions=[], plots={}))
    assert "<p>A backtest: never registered, never promoted.</p>" in backtest
    assert "<td>not registered (backtest)</td>" in backtest
    assert backtest.count("no plot logged (the window lacked both classes or rows)") == len(PLOTS)
    assert "Version 3: the gate has not decided on it yet." in render(_run(version="3", decisions=[]))


def test_hostile_values_are_text_not_markup() -> None:
    decision = {"when": EVIL, "who": EVIL, "decision": EVIL, "reason": EVIL, "champion_before": EVIL}
    page = render(
        _run(
            run_name=EVIL,
            tags={"kind": EVIL, "feature_set": EVIL, "cutoff": EVIL},
            params={"origins": EVIL, "label_horizon_days": EVIL, "horizon_days": EVIL, "seed": EVIL},
            fingerprint={"rows": {EVIL: 1}, "sha256": EVIL, "first_event": EVIL},
            tiers={EVIL: 1.0},
            plots={"calibration": b"x"},
            decisions=[decision],
        )
    )
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;") >= 15  # every one of them is still shown, as text
    assert {t for t, _ in _tags(page)}.isdisjoint({"script"})
    decision_class = next(
        a["class"] for t, a in _tags(page) if t == "p" and "decision" in (a.get("class") or "")
    )
    assert decision_class == "decision " + EVIL  # an attribute value, quoted: no new attribute or tag


def _window(window: str, rows: list[dict[str, object]]) -> dict[str, object]:
    parity = {
        "min_customers": 200,
        "max_auc_drop": 0.05,
        "max_calibration_gap": 0.05,
        "max_value_error": 0.25,
    }
    return {"window": window, "horizon_days": 91, "parity": {**parity, "max_levels": 20}, "rows": rows}


def _segment(by: str, name: str, flags: list[str], auc: float | None = 0.8) -> dict[str, object]:
    return {
        "by": by,
        "segment": name,
        "customers": 1234,
        "churn_rate": 0.5,
        "mean_probability": 0.45,
        "calibration_gap": -0.05,
        "churn_auc": auc,
        "churn_brier": 0.2,
        "actual_value": 10.0,
        "predicted_value": 9.0,
        "value_error": -0.1,
        "flags": flags,
    }


def test_segments_and_parity_show_each_window_and_the_flagged_segments() -> None:
    rows = [
        _segment("all", "all", []),
        _segment("tier", "gold", []),
        _segment("contract", "contractual", ["mean P(churn) 0.085 against a churn rate of 0.262"], None),
    ]
    page = render(_run(segments=[_window("validation", rows), _window("holdout", rows[:2])]))
    assert "<h3>On the latest validation origin, 91-day window</h3>" in page
    assert "<h3>On what happened after T (holdout), 91-day window</h3>" in page
    assert "<h4>tier</h4>" in page and "<h4>contract</h4>" in page
    assert (
        "<tr><td>gold</td><td>1,234</td><td>0.500</td><td>0.450</td><td>-0.050</td><td>0.800</td>"
        "<td>0.200</td><td>10.00</td><td>9.00</td><td>-10.0%</td><td>—</td></tr>"
    ) in page
    assert "<td>contractual</td><td>1,234</td><td>0.500</td><td>0.450</td><td>-0.050</td><td>—</td>" in page
    assert "<p class='decision flagged'>1 segment(s) outside the margins:</p>" in page
    assert (
        "<tr><td>contract</td><td>contractual</td><td>1,234</td>"
        "<td>mean P(churn) 0.085 against a churn rate of 0.262</td></tr>"
    ) in page
    assert "<p class='decision ok'>No segment outside the margins.</p>" in page  # the holdout
    assert "<tr><td>smallest segment judged (customers)</td><td>200</td></tr>" in page
    old = render(_run())
    assert "not logged for this run (runs before quality by segment existed)" in old


def test_hostile_segment_names_are_text() -> None:
    rows = [_segment("all", "all", []), _segment(EVIL, EVIL, [EVIL])]
    page = render(_run(segments=[_window("holdout", rows)]))
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;") >= 5
