"""Production concerns on a real service: a store writer that holds SQLite's write lock longer than the busy
timeout does not stop `/score` or the dashboard answering (WAL: readers read the last committed snapshot), and
the service built as a Bento (`bentofile.yaml`, `bentoml build`) serves the champion over HTTP."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers import (
    API_KEY,
    AUTH,
    ROOT,
    copy_store,
    running_server,
    serve_champion,
    write_serving_config,
)

BUSY_TIMEOUT_S = 1.0  # the store URL's ?timeout=: a blocked reader would fail after this long


def test_a_writer_holding_the_store_longer_than_the_busy_timeout_blocks_no_reader(
    cdnow_champion: Path, cdnow_dir: Path, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'diamond.db'}?timeout={BUSY_TIMEOUT_S}"
    env = {"DIAMOND_STORE_URL": store_url, "DIAMOND_SESSION_SECRET": "long-writer-test"}
    with serve_champion(cdnow_champion, cdnow_dir, tmp_path, env=env) as url:
        ui = httpx.Client(base_url=url, timeout=60)
        assert ui.post("/ui/login", data={"name": "ana", "key": API_KEY, "next": "/ui/"}).status_code == 303
        before = httpx.post(f"{url}/score", json={"customers": [{"customer_id": "00002"}]}, headers=AUTH)
        assert before.status_code == 200, before.text
        writer = sqlite3.connect(tmp_path / "diamond.db", isolation_level=None, timeout=0)
        try:
            # the strongest lock a writer takes: without WAL, readers would wait and fail at the timeout
            writer.execute("BEGIN EXCLUSIVE")
            writer.execute("UPDATE alerts SET owner = 'writer' WHERE id = (SELECT MIN(id) FROM alerts)")
            time.sleep(BUSY_TIMEOUT_S * 2)  # held for longer than any reader would wait
            scored = httpx.post(
                f"{url}/score", json={"customers": [{"customer_id": "00002"}]}, headers=AUTH, timeout=60
            )
            pages = {path: ui.get(path) for path in ("/ui/", "/ui/overview", "/ui/customers/00002")}
            assert writer.in_transaction  # every answer above came while the lock was held
        finally:
            writer.rollback()
            writer.close()
        assert scored.status_code == 200, scored.text
        assert scored.json() == before.json()  # the last committed snapshot
        for path, page in pages.items():
            assert page.status_code == 200, (path, page.text[:500])
        assert "writer" not in pages["/ui/"].text  # the uncommitted write is not seen


def test_the_built_bento_serves_the_champion_over_http(cdnow_champion: Path, tmp_path: Path) -> None:
    """`bentoml build` (what `make bento` runs) into a private BentoML home, then `bentoml serve
    diamond:latest` from it with the registry, store and keys from the environment, as docs/deploy.md says."""
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    work = tmp_path / "work"
    work.mkdir()
    copy_store(cdnow_champion / "scored", work)
    for name in ("diamond.db", "diamond.db-wal"):
        if (cdnow_champion / "scored" / name).exists():
            (work / name).write_bytes((cdnow_champion / "scored" / name).read_bytes())
    write_serving_config(work)
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "DIAMOND_STORE_URL": f"sqlite:///{work / 'diamond.db'}",
        "DIAMOND_SERVING_CONFIG": str(work / "serving.yaml"),
        "DIAMOND_API_KEYS": API_KEY,
        "DIAMOND_SESSION_SECRET": "bento-test",
    }
    built = subprocess.run(
        [bentoml, "build", "--output", "tag"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stdout + built.stderr
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("diamond:"), built.stdout
    bento = tmp_path / "bentoml" / "bentos" / "diamond" / tag.split(":")[1]
    assert (bento / "src" / "serving" / "service.py").exists() and (bento / "src" / "serving.yaml").exists()
    assert not list((bento / "src").rglob("*.db"))  # no store and no model ride along

    serve = [bentoml, "serve", "diamond:latest", "--host", "127.0.0.1"]
    with running_server(serve, work, tmp_path / "bento.log", env) as (url, _):
        reply = httpx.post(f"{url}/score", json={"customers": [{"customer_id": "00002"}]}, headers=AUTH)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model_version"] == "1"
        assert [s["customer_id"] for s in body["scores"]] == ["00002"] and body["scores"][0]["found"]
        assert httpx.post(f"{url}/score", json={"customers": []}).status_code == 401  # keys still needed
