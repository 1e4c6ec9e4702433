"""What the tests of every tier share: run the real `diamond` executable as a user would, serve a real
champion (or run any server until it answers ready), pick a free port. Fixtures live in conftest.py; this
module is plain functions and constants."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import yaml

from bench.common import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]  # the repository: serving.yaml, notebooks/, test-artifacts/
DIAMOND = str(Path(sys.executable).with_name("diamond"))
API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CUTOFF = "1997-09-30"
STORES = ("sqlite", "postgresql")  # the serving stores the store-backed tests run on (fixture `store_url`)
# serving.yaml settings only `diamond serve` reads: a champion served with them needs no batch run of its own
SERVE_ONLY = frozenset({"workers"})
# a small, fast model: one Optuna trial, 50 shallow trees, and the subscribers' churn shift pooled over 2
# complete windows, not 12 (each window is a feature build: on a synthetic history of 1,500 customers the
# other 10 were a quarter of a `diamond train`'s CPU; the 12 windows are pinned in test_training_churn_labels)
SMALL_TRAINING = {
    "trials": 1,
    "xgboost": {"n_estimators": 50, "learning_rate": 0.2, "max_depth": 2, "min_child_weight": 20},
    "levels": {"contract_windows": 2},
}


def run_diamond(
    *args: str, cwd: Path | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `diamond ARGS` in a subprocess with the test environment (plus `env`); by default a non-zero exit
    fails the test with the command's output."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    result = subprocess.run([DIAMOND, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"diamond {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@contextmanager
def running_server(
    cmd: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """Run the server `cmd` (`diamond serve`, `bentoml serve`) with `--port` a free 127.0.0.1 port, in `cwd`
    and its own process group, its output in `log`; yields (URL, pid) once it answers ready
    (bench.common.wait_ready: the error names its output if it dies or never answers), and stops the whole
    group afterwards."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc, log)
        yield url, proc.pid
    finally:
        with suppress(ProcessLookupError):  # a server that died has no group left to stop
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`, made by `build(folder)` once per test run and shared read-only by every xdist worker
    (under a file lock in the run's temporary root); each worker builds it itself only if the first attempt
    failed. For what is expensive and the same for everyone: CDNOW written by the CLI, a trained champion."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the run's root, shared by its workers (popen-gw0, popen-gw1, ...)
    folder = root / f"shared-{name}"
    with (root / f"shared-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def train_store(folder: Path, data: Path, *args: str, training: dict | None = None) -> str:
    """`diamond train --data DATA ARGS` with `training` (default SMALL_TRAINING) into a new MLflow store in
    `folder` (mlflow.db, its artifacts, mlflow.yaml), as the first version and champion, promoted by
    test-user; returns what the command printed (also in folder/train.out)."""
    config = folder / "mlflow.yaml"
    config.write_text(
        f"tracking_uri: sqlite:///{folder / 'mlflow.db'}\nartifact_root: {folder / 'artifacts'}\n",
        encoding="utf-8",
    )
    (folder / "training.yaml").write_text(yaml.safe_dump(training or SMALL_TRAINING), encoding="utf-8")
    env = {
        "DIAMOND_MLFLOW_CONFIG": str(config),
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "DIAMOND_STORE_URL": f"sqlite:///{folder / 'diamond.db'}",
        "DIAMOND_USER": "test-user",  # who the promotion log names
    }
    args = ("train", "--data", str(data), *args, "--config", str(folder / "training.yaml"))
    printed = run_diamond(*args, cwd=folder, env=env).stdout
    (folder / "train.out").write_text(printed, encoding="utf-8")
    return printed


def copy_store(store: Path, work: Path) -> None:
    """A private copy of the MLflow store that train_store made, in `work/mlflow.db`. Its runs' artifacts
    stay where they are (read-only for the copy); new runs in the copy write theirs beside them, under new
    run ids."""
    for sidecar in ("", "-wal", "-shm"):
        if (store / f"mlflow.db{sidecar}").exists():
            shutil.copyfile(store / f"mlflow.db{sidecar}", work / f"mlflow.db{sidecar}")


def write_serving_config(work: Path, serving: dict | None = None) -> None:
    """work/serving.yaml: the repository's, without webhook endpoints, with `serving` overriding settings."""
    config = yaml.safe_load((ROOT / "serving.yaml").read_text(encoding="utf-8"))
    config["webhooks"]["endpoints"] = []
    config.update(serving or {})
    (work / "serving.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def _score_cdnow(cdnow_dir: Path, work: Path, store_url: str | None = None) -> None:
    """`diamond score` CDNOW at CUTOFF with work's MLflow store, serving store (or `store_url`) and
    serving.yaml; its output in work/score.out."""
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "DIAMOND_STORE_URL": store_url or f"sqlite:///{work / 'diamond.db'}",
        "DIAMOND_SERVING_CONFIG": str(work / "serving.yaml"),
    }
    scored = run_diamond("score", "--data", str(cdnow_dir), "--as-of", CUTOFF, cwd=work, env=env).stdout
    (work / "score.out").write_text(scored, encoding="utf-8")


def build_cdnow_champion(folder: Path, cdnow_dir: Path) -> None:
    """folder/trained: a store from train_store with a small model trained on CDNOW at CUTOFF (the champion);
    folder/scored: the same after one `diamond score` of CDNOW at CUTOFF with the default serving.yaml
    (no webhook endpoints): MLflow store, serving store, score table and score.out."""
    trained, scored = folder / "trained", folder / "scored"
    trained.mkdir()
    train_store(trained, cdnow_dir, "--cutoff", CUTOFF)
    scored.mkdir()
    copy_store(trained, scored)
    write_serving_config(scored)
    _score_cdnow(cdnow_dir, scored)


@contextmanager
def serve_champion(
    champion: Path,
    cdnow_dir: Path,
    work: Path,
    serving: dict | None = None,
    env: dict[str, str] | None = None,
    restore_env_early: bool = False,
    store_url: str | None = None,
) -> Iterator[str]:
    """Serve `champion` (from build_cdnow_champion) from a copy in `work`, with API_KEY on a free 127.0.0.1
    port; yields the base URL. The copy has been batch-scored on CDNOW at CUTOFF (its output in score.out):
    without `serving` overrides (or with only SERVE_ONLY ones, which no batch run reads) the copy is
    champion/scored, else `serving` overrides serving.yaml settings (default: no webhook endpoints) and the
    copy of champion/trained is scored here. `env` adds variables.
    `store_url` (e.g. a PostgreSQL database) replaces the serving store work/diamond.db, and is scored here.
    Everything lives in `work` (work/training.yaml is the small training config) and the environment is
    restored afterwards (`restore_env_early`: as soon as the server is up, for callers that only send it
    HTTP requests)."""
    saved = dict(os.environ)
    os.environ.update(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
            "DIAMOND_STORE_URL": store_url or f"sqlite:///{work / 'diamond.db'}",
            "DIAMOND_API_KEYS": f"another-key,{API_KEY}",
            "DIAMOND_SERVING_CONFIG": str(work / "serving.yaml"),
            **(env or {}),  # may override the above (e.g. a read-only store URL)
        }
    )
    write_serving_config(work, serving)
    try:
        (work / "training.yaml").write_text(yaml.safe_dump(SMALL_TRAINING), encoding="utf-8")
        if set(serving or {}) <= SERVE_ONLY and store_url is None:  # as champion/scored was: its copy
            for name in ("mlflow.db", "diamond.db", "diamond.db-wal", "score.out"):
                if (champion / "scored" / name).exists():  # the store's write-ahead log, if any, with it
                    shutil.copyfile(champion / "scored" / name, work / name)
            shutil.copytree(champion / "scored" / ".diamond", work / ".diamond")
        else:
            copy_store(champion / "trained", work)
            _score_cdnow(cdnow_dir, work, store_url)
        with running_server([DIAMOND, "serve"], work, work / "serve.log") as (url, pid):
            (work / "serve.pid").write_text(str(pid), encoding="utf-8")  # for memory readings
            if restore_env_early:
                os.environ.clear()
                os.environ.update(saved)
            yield url
    finally:
        os.environ.clear()
        os.environ.update(saved)
