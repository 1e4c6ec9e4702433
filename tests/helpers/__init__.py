"""What the tests of every tier share: run the real `diamond` executable as a user would, serve a real
champion, pick a free port. Fixtures live in conftest.py; this module is plain functions and constants."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]  # the repository: serving.yaml, notebooks/, test-artifacts/
DIAMOND = str(Path(sys.executable).with_name("diamond"))
API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CUTOFF = "1997-09-30"
# a small, fast model: one Optuna trial, 50 shallow trees
SMALL_TRAINING = {
    "trials": 1,
    "xgboost": {"n_estimators": 50, "learning_rate": 0.2, "max_depth": 2, "min_child_weight": 20},
}


def run_diamond(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run([DIAMOND, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"diamond {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_champion(
    cdnow_dir: Path,
    work: Path,
    serving: dict | None = None,
    env: dict[str, str] | None = None,
    restore_env_early: bool = False,
) -> Iterator[str]:
    """Train and promote a small model at CUTOFF, batch-score CDNOW at CUTOFF (its output in score.out),
    and serve it with API_KEY on a free 127.0.0.1 port; yields the base URL. `serving` overrides
    serving.yaml settings (default: no webhook endpoints); `env` adds variables. Everything lives in `work`
    and the environment is restored afterwards (`restore_env_early`: as soon as the server is up, for
    callers that only send it HTTP requests)."""
    saved = dict(os.environ)
    os.environ.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        DIAMOND_STORE_URL=f"sqlite:///{work / 'diamond.db'}",
        DIAMOND_API_KEYS=f"another-key,{API_KEY}",
        DIAMOND_SERVING_CONFIG=str(work / "serving.yaml"),
        **(env or {}),
    )
    config = yaml.safe_load((ROOT / "serving.yaml").read_text(encoding="utf-8"))
    config["webhooks"]["endpoints"] = []
    config.update(serving or {})
    (work / "serving.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    proc: subprocess.Popen[bytes] | None = None
    try:
        training = work / "training.yaml"
        training.write_text(yaml.safe_dump(SMALL_TRAINING), encoding="utf-8")
        run_diamond(
            "train", "--data", str(cdnow_dir), "--cutoff", CUTOFF, "--config", str(training), cwd=work
        )
        scored = run_diamond("score", "--data", str(cdnow_dir), "--as-of", CUTOFF, cwd=work).stdout
        (work / "score.out").write_text(scored, encoding="utf-8")
        port = free_port()
        with (work / "serve.log").open("wb") as log:
            proc = subprocess.Popen(
                [DIAMOND, "serve", "--port", str(port)],
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (work / "serve.pid").write_text(str(proc.pid), encoding="utf-8")  # for memory readings
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise AssertionError("the server exited:\n" + (work / "serve.log").read_text())
            time.sleep(0.5)
        else:
            raise AssertionError("the server never became ready:\n" + (work / "serve.log").read_text())
        if restore_env_early:
            os.environ.clear()
            os.environ.update(saved)
        yield url
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        os.environ.clear()
        os.environ.update(saved)
