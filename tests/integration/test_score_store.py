"""`diamond score` on each serving store (a SQLite file, a PostgreSQL database): one run at a time per store,
the second told who holds it with nothing written, and the run's snapshot, tiers, alerts and run log in the
store afterwards, with no temporary file left behind. And MLflow's tracking store on PostgreSQL, once."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from serving import alert_store, store
from tests.helpers import CUTOFF, SMALL_TRAINING, copy_store, run_diamond, write_serving_config
from tests.helpers.postgres import PostgresCluster


def test_one_score_run_at_a_time_per_store_then_the_run_lands_whole(
    cdnow_champion: Path, cdnow_dir: Path, store_url: str, tmp_path: Path
) -> None:
    copy_store(cdnow_champion / "trained", tmp_path)
    write_serving_config(tmp_path)
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "DIAMOND_STORE_URL": store_url,
        "DIAMOND_SERVING_CONFIG": str(tmp_path / "serving.yaml"),
    }
    args = ("score", "--data", str(cdnow_dir), "--as-of", CUTOFF)
    eng = store.prepare(store.engine(store_url))
    with store.score_lock(eng):  # another run holds the store (this process)
        busy = run_diamond(*args, cwd=tmp_path, env=env, check=False)
    message = " ".join(busy.stderr.split())
    assert busy.returncode == 2, busy.stdout + busy.stderr
    assert "another `diamond score` is writing the store" in message and "nothing done" in message
    assert f"pid {os.getpid()} on " in message and "Traceback" not in message
    assert store.latest_run(eng) is None and store.tier_summary(eng) == {}

    done = run_diamond(*args, cwd=tmp_path, env=env)  # the lock is free again
    printed = " ".join(done.stdout.split())
    customers = int(re.search(r"scored ([\d,]+) customers", printed).group(1).replace(",", ""))
    opened = int(re.search(r"alerts: ([\d,]+) opened", printed).group(1).replace(",", ""))
    run = store.latest_run(eng)
    assert run is not None and run["customers"] == customers and run["model_version"] == "1"
    assert sum(n for n, _ in store.tier_summary(eng).values()) == customers
    assert len(alert_store.list_alerts(eng, status="live")) == opened > 0
    with eng.connect() as con:
        history = con.execute(sa.text("SELECT COUNT(*) FROM score_history")).scalar()
    assert history == customers
    scores = Path(run["parquet"])
    assert scores.exists() and [p.name for p in scores.parent.iterdir()] == [scores.name]  # no .tmp left


def test_mlflow_tracking_store_on_postgresql(
    synthetic_champion: Path, postgres: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole loop on PostgreSQL alone: MLflow's tracking store and registry (MLFLOW_TRACKING_URI, as a
    deployment sets it) and the serving store are two databases of one server; `train` creates MLflow's
    tables, `models` and `score` read them, `promote` moves the alias, and the champion loads back by alias
    through Diamond's loader and MLflow's own (docs/deploy.md)."""
    tracking, serving = postgres.new_database("mlflow"), postgres.new_database("diamond")
    (tmp_path / "mlflow.yaml").write_text(
        yaml.safe_dump({"artifact_root": str(tmp_path / "artifacts")}), encoding="utf-8"
    )
    (tmp_path / "training.yaml").write_text(yaml.safe_dump(SMALL_TRAINING), encoding="utf-8")
    weak = {**SMALL_TRAINING, "xgboost": {**SMALL_TRAINING["xgboost"], "n_estimators": 5, "max_depth": 1}}
    (tmp_path / "weak.yaml").write_text(yaml.safe_dump(weak), encoding="utf-8")
    write_serving_config(tmp_path)
    env = {
        "DIAMOND_MLFLOW_CONFIG": str(tmp_path / "mlflow.yaml"),
        "MLFLOW_TRACKING_URI": tracking,
        "DIAMOND_STORE_URL": serving,
        "DIAMOND_SERVING_CONFIG": str(tmp_path / "serving.yaml"),
        "DIAMOND_USER": "test-user",
    }
    history = str(synthetic_champion / "history")
    cfg = str(tmp_path / "training.yaml")
    run_diamond("train", "--data", history, "--config", cfg, cwd=tmp_path, env=env)
    listed = run_diamond("models", cwd=tmp_path, env=env).stdout
    assert "champion" in listed and "test-user" in listed
    scored = " ".join(run_diamond("score", "--data", history, cwd=tmp_path, env=env).stdout.split())
    assert "with version 1" in scored
    eng = store.engine(serving)
    run = store.latest_run(eng)
    assert run is not None and run["model_version"] == "1" and run["customers"] > 0
    tables = set(sa.inspect(sa.create_engine(tracking, poolclass=sa.pool.NullPool)).get_table_names())
    assert {"experiments", "runs", "registered_models", "model_versions"} <= tables

    # a second, weaker version: the gate keeps version 1; promoting version 2 by force moves the alias
    trained = " ".join(
        run_diamond(
            "train", "--data", history, "--config", str(tmp_path / "weak.yaml"), cwd=tmp_path, env=env
        ).stdout.split()
    )
    assert "version 2" in trained and "refused: " in trained
    forced = run_diamond(
        "promote", "--version", "2", "--data", history, "--force", "--note", "pg drill", cwd=tmp_path, env=env
    ).stdout
    assert "forced by test-user: pg drill" in forced

    # loaded back by alias from PostgreSQL, in this process, with only the environment pointing there
    import mlflow
    from mlflow import MlflowClient

    from training.tracking import MlflowConfig, load_artefact

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    mlcfg = MlflowConfig.load()
    assert mlcfg.tracking_uri == tracking
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    champion = client.get_model_version_by_alias("diamond", "champion")
    assert str(champion.version) == "2"
    boosters = {
        uri: bytes(load_artefact(uri, mlcfg).churn.booster.save_raw())
        for uri in ("models:/diamond@champion", "models:/diamond/2", "models:/diamond/1")
    }
    assert (
        boosters["models:/diamond@champion"] == boosters["models:/diamond/2"] != boosters["models:/diamond/1"]
    )
    mlflow.set_registry_uri(tracking)
    model = mlflow.pyfunc.load_model("models:/diamond@champion")
    assert model.metadata.run_id == champion.run_id != client.get_model_version("diamond", "1").run_id
