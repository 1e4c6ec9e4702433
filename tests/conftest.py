"""The tiers and the fixtures every tier shares.

Each test file lives in one tier folder, and its folder is its marker (applied here, not on each test):

- `tests/unit`: pure functions on hand-built data; no subprocess, no server, no MLflow or SQLite store,
  no Spark (`make test-fast`, `pytest -m unit`);
- `tests/integration`: the real CLI, MLflow and SQLite stores, local HTTP receivers, the notebooks;
- `tests/e2e`: real `diamond serve` processes, the browser, Spark, fuzzing, load and delivery faults.

Helpers the tests import (run_diamond, serve_champion, free_port, ...) are in tests/helpers.py.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    STORES,
    build_cdnow_champion,
    built_once,
    free_port,
    run_diamond,
    schedule,
    serve_champion,
    train_store,
)
from tests.helpers import postgres as pg
from tests.helpers.webhooks import WebhookReceiver

TIERS = ("unit", "integration", "e2e")
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with the tier its folder names; a test outside the tier folders is an error, and so
    is a test using `http_server` in a file the xdist schedule does not know to keep together."""
    for item in items:
        path = item.path.relative_to(HERE)
        tier = path.parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(
                f"{item.path.relative_to(HERE.parent)} is in no tier: move it to tests/unit, "
                "tests/integration or tests/e2e (see tests/conftest.py)"
            )
        item.add_marker(getattr(pytest.mark, tier))
        where = f"tests/{path.as_posix()}"
        if "http_server" in item.fixturenames and where not in schedule.HTTP_SERVER_FILES:
            raise pytest.UsageError(
                f"{where} uses http_server: add it to HTTP_SERVER_FILES in {schedule.__file__}"
            )


def pytest_configure(config: pytest.Config) -> None:
    """Under `pytest -n N` each worker has a core of its own: numpy's OpenBLAS threads (one per core by
    default) would only contend with the other workers, in the workers and in every `diamond` they start.
    (Measured on tests/unit/test_features_properties.py: a quarter less CPU with one thread.)"""
    if config.getoption("numprocesses", None):
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # inherited by the workers as they start


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> schedule.TierScheduling | None:
    """`pytest -n N` (make test): the tiers' schedule (tests/helpers/schedule.py), unless --dist names
    another."""
    return schedule.TierScheduling(config, log) if config.getvalue("dist") == "load" else None


@pytest.fixture(scope="session")
def cdnow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled CDNOW history, written once per test run by the CLI (read-only: copy it to change it)."""
    folder = built_once(
        tmp_path_factory, "cdnow", lambda f: run_diamond("data", "cdnow", "--out", str(f / "history"))
    )
    return folder / "history"


@pytest.fixture(scope="session")
def cdnow_champion(cdnow_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained on CDNOW at CUTOFF, the champion of its MLflow store, and the same after a batch
    run (build_cdnow_champion): made once per test run and shared read-only (serve_champion serves a copy)."""
    return built_once(tmp_path_factory, "cdnow-champion", lambda f: build_cdnow_champion(f, cdnow_dir))


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


@pytest.fixture(scope="session")
def synthetic_champion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic history of 1,500 customers (seed 0, written by `diamond data synthetic`, in `history`) and
    an MLflow store holding one small model trained on it, the champion (train.out: what training printed):
    made once per test run and shared read-only (copy_store gives a test its own copy of the store)."""

    def build(folder: Path) -> None:
        run_diamond("data", "synthetic", "--customers", "1500", "--out", str(folder / "history"))
        train_store(folder, folder / "history")

    return built_once(tmp_path_factory, "synthetic-champion", build)


@pytest.fixture(scope="session")
def http_server(
    cdnow_champion: Path, cdnow_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """One served champion shared by the modules that only send it HTTP requests (bad input, fuzzing,
    load), and the server's process id for memory readings; it changes nothing in the test environment.
    Under xdist those modules run on one worker (the `http_server` group), so it starts once."""
    work = tmp_path_factory.mktemp("http-server")
    # the fuzzing campaigns send wrong keys by the hundred from 127.0.0.1: with the sign-in throttle on
    # (tested in tests/e2e/test_dashboard.py) the rest of each campaign would only meet 429s
    unthrottled = {"DIAMOND_SERVING_AUTH__MAX_FAILURES": "1000000"}
    with serve_champion(cdnow_champion, cdnow_dir, work, env=unthrottled, restore_env_early=True) as url:
        yield url, int((work / "serve.pid").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.PostgresCluster]:
    """A throwaway PostgreSQL cluster for this pytest process (tests/helpers/postgres.py), started by the
    first test that needs it: a worker that runs no PostgreSQL test never starts one."""
    with pg.cluster(free_port()) as cluster:
        yield cluster


@pytest.fixture(params=STORES)
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Makes new, empty serving stores and returns their URLs, once on each store Diamond supports: SQLite
    files in the test's folder, and new schemas on the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        names = itertools.count()
        return lambda: f"sqlite:///{tmp_path / f'diamond-{next(names)}.db'}"
    cluster: pg.PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_schema


@pytest.fixture
def store_url(new_store: Callable[[], str]) -> str:
    """The URL of a new, empty serving store: a SQLite file, then a PostgreSQL schema (`new_store`)."""
    return new_store()


@pytest.fixture
def engine(store_url: str) -> Iterator[Any]:
    """A new store at head (`store_url`: SQLite, then PostgreSQL), disposed of afterwards."""
    from serving import store

    eng = store.prepare(store.engine(store_url))
    yield eng
    eng.dispose()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A running webhook receiver for one test (tests/helpers/webhooks.py), stopped afterwards."""
    rec = WebhookReceiver()
    yield rec
    rec.stop()
