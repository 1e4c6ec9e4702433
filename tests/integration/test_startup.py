"""Honest start-up: `serve`, `score` and `models` read the MLflow tracking store and never create one as a
side effect; a missing store or an empty database says exactly that (exit code 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import API_KEY, DIAMOND, free_port, run_diamond, running_server
from tests.helpers.postgres import PostgresCluster

COMMANDS = (
    ("serve", "--port"),
    ("score", "--data"),
    ("models",),
)


def _run(command: tuple[str, ...], tmp_path: Path, tracking: str) -> tuple[int, str]:
    args = list(command)
    if command[0] == "serve":
        args.append(str(free_port()))
    elif command[0] == "score":
        args.append(str(tmp_path / "history"))
    env = {
        "MLFLOW_TRACKING_URI": tracking,
        "DIAMOND_STORE_URL": f"sqlite:///{tmp_path / 'diamond.db'}",
        "DIAMOND_API_KEYS": API_KEY,
    }
    done = run_diamond(*args, cwd=tmp_path, env=env, check=False)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_missing_tracking_store_is_reported_and_never_created(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "mlflow.db"
    code, said = _run(command, tmp_path, f"sqlite:///{missing}")
    assert code == 2, said
    assert f"the MLflow tracking store sqlite:///{missing} does not exist" in said, said
    assert "diamond train" in said and "Traceback" not in said
    assert not missing.exists() and not missing.parent.exists()


def test_an_empty_tracking_database_is_reported_and_left_empty(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    """A PostgreSQL database made for MLflow but never written: reading it creates no table in it."""
    url = postgres.new_database("mlflow")
    code, said = _run(("serve", "--port"), tmp_path, url)
    assert code == 2 and "is empty (no MLflow tables)" in said, said
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    assert sa.inspect(engine).get_table_names() == []


def test_a_server_that_exits_before_it_is_ready_fails_with_its_output(tmp_path: Path) -> None:
    """running_server (bench.common.wait_ready under it): `diamond serve` refusing to start ends the wait at
    once with its exit code and what it said, not after the readiness timeout."""
    missing = tmp_path / "nowhere" / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{missing}", "DIAMOND_API_KEYS": API_KEY}
    log = tmp_path / "serve.log"
    with pytest.raises(RuntimeError) as failed, running_server([DIAMOND, "serve"], tmp_path, log, env):
        pytest.fail("the server answered ready without a tracking store")
    said = str(failed.value)
    assert "exited (code 2) before it was ready" in said, said
    assert f"the MLflow tracking store sqlite:///{missing} does not exist" in " ".join(said.split()), said
    assert log.read_text() in said
