"""The test suite's own layout: every test file in a tier, and how `make test` groups them for its workers."""

from __future__ import annotations

import ast

import pytest

from tests.helpers import ROOT, schedule

TESTS = ROOT / "tests"


def test_every_test_file_is_in_a_tier() -> None:
    files = {p.relative_to(TESTS).parts[0] for p in TESTS.rglob("test_*.py") if "helpers" not in p.parts}
    assert files == {"unit", "integration", "e2e"}
    assert all((TESTS / tier / "__init__.py").exists() for tier in files)  # same names in two tiers


def test_no_test_is_hidden_as_a_fixture() -> None:
    """A `test_*` function under @pytest.fixture is silently never run (a merge once left one so)."""
    hidden = [
        f"{path.relative_to(ROOT)}::{node.name}"
        for path in TESTS.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef)
        and node.name.startswith("test_")
        and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    ]
    assert hidden == []


def test_the_tiers_are_registered_markers(pytestconfig: pytest.Config) -> None:
    markers = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {"unit", "integration", "e2e"} <= markers


@pytest.mark.parametrize(
    ("nodeid", "expected"),
    [
        ("tests/unit/test_btyd.py::test_loglik[p0]", "tests/unit/test_btyd.py::test_loglik[p0]"),
        ("tests/integration/test_cli.py::test_demo_runs_end_to_end", "tests/integration/test_cli.py"),
        ("tests/e2e/test_spark.py::test_cli_refuses_an_unknown_engine", "tests/e2e/test_spark.py"),
        ("tests/e2e/test_bad_input.py::test_bad_score_requests[no-key]", "http_server"),
        ("tests/e2e/test_reliability_api.py::test_without_a_key[GET /model]", "http_server"),
    ],
)
def test_unit_tests_are_scheduled_alone_and_other_files_whole(nodeid: str, expected: str) -> None:
    assert schedule.scope(nodeid) == expected


def test_the_schedule_names_files_that_exist() -> None:
    for name in (*schedule.HTTP_SERVER_FILES, *schedule.LONGEST_FIRST):
        assert (ROOT / name).is_file(), name
