"""Shared test helpers: run the real `diamond` executable as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

DIAMOND = str(Path(sys.executable).with_name("diamond"))


def run_diamond(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run([DIAMOND, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"diamond {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def cdnow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled CDNOW history, written once per test session by the CLI."""
    out = tmp_path_factory.mktemp("cdnow") / "history"
    run_diamond("data", "cdnow", "--out", str(out))
    return out


@pytest.fixture(scope="session", autouse=True)
def _private_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every command a test runs tracks into a throwaway MLflow store and serving store, never the working
    copy's."""
    root = tmp_path_factory.mktemp("mlflow")
    config = root / "mlflow.yaml"
    config.write_text(
        f"tracking_uri: sqlite:///{root / 'mlflow.db'}\nartifact_root: {root / 'artifacts'}\n",
        encoding="utf-8",
    )
    saved = {
        k: os.environ.get(k) for k in ("DIAMOND_MLFLOW_CONFIG", "MLFLOW_TRACKING_URI", "DIAMOND_STORE_URL")
    }
    os.environ["DIAMOND_MLFLOW_CONFIG"] = str(config)
    os.environ["DIAMOND_STORE_URL"] = f"sqlite:///{root / 'diamond.db'}"
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
