"""Shared test helpers: run the real `diamond` executable as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
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
