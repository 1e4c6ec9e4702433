"""The `diamond` command as a user meets it: help everywhere, clear errors, a demo that says where to look."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_diamond


@pytest.mark.parametrize(
    "args",
    [[], ["data"], ["data", "cdnow"], ["data", "synthetic"], ["data", "validate"], ["demo"], ["backtest"]],
)
def test_every_command_has_help(args: list[str]) -> None:
    result = run_diamond(*args, "--help")
    assert "Usage: diamond" in result.stdout


def test_validate_prints_the_summary(cdnow_dir: Path) -> None:
    result = run_diamond("data", "validate", str(cdnow_dir), "--json")
    summary = json.loads(result.stdout)
    assert summary["transactions"] == 69_659 and summary["customers_with_transactions"] == 23_570


def test_validate_reports_bad_input_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_text("customer_id,timestamp,amount\na,2024-01-02,abc\n")
    result = run_diamond("data", "validate", str(tmp_path), check=False)
    assert result.returncode == 2
    assert "transactions.csv: column 'amount': 1 values are not numbers" in result.stderr
    assert "line 2: 'abc'" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_as_of_option(cdnow_dir: Path) -> None:
    result = run_diamond("data", "validate", str(cdnow_dir), "--as-of", "1998-01-31", check=False)
    assert result.returncode == 2
    assert "values are after the as-of date 1998-01-31 23:59:59" in result.stderr


def test_demo_runs_end_to_end_and_says_where_results_are(tmp_path: Path) -> None:
    result = run_diamond("demo", "--out", str(tmp_path / "out"))
    summary_file = tmp_path / "out" / "summary.json"
    assert str(summary_file.resolve()) in result.stdout.replace("\n", "")
    assert json.loads(summary_file.read_text())["total_amount"] == 2_500_315.63
