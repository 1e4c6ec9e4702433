"""The model report, the drift watch and `diamond retrain`, end to end through the real CLI on synthetic
histories, with a real MLflow store, serving store and lock file in a temporary folder.

One small model, trained once per test run on a 1,500-customer history (the `synthetic_champion`), is the
champion of the module's own copy of its store; the tests then run in file order (the no-op retrain
first, before any drift exists; the drift test leaves a model-health alert the drift retrain acts on).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from features.datasets import synthetic
from tests.helpers import DIAMOND, SMALL_TRAINING, copy_store, run_diamond

CUSTOMERS = 1500


@dataclass
class World:
    work: Path
    histories: dict[str, Path]  # train, unshifted, shifted
    small: Path  # training config
    refuse: Path  # the same, with a gate no challenger passes (the champion stays)
    run_id: str  # the first training run (version 1, champion)

    def client(self):
        from mlflow import MlflowClient

        uri = os.environ["MLFLOW_TRACKING_URI"]
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def versions(self) -> int:
        return len(self.client().search_model_versions("name = 'diamond'"))


def _shift(source: Path, target: Path) -> None:
    """A deliberately shifted copy: every amount x3 and every other purchase dropped."""
    import shutil

    shutil.copytree(source, target)
    t = pq.read_table(target / "transactions.parquet")
    t = t.set_column(t.schema.get_field_index("amount"), "amount", pc.multiply(t["amount"], 3.0))
    pq.write_table(t.filter(pa.array(np.arange(t.num_rows) % 2 == 0)), target / "transactions.parquet")


@pytest.fixture(scope="module")
def world(synthetic_champion: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("monitoring")
    saved = dict(os.environ)
    os.environ.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        DIAMOND_STORE_URL=f"sqlite:///{work / 'diamond.db'}",
        DIAMOND_USER="test-user",
    )
    try:
        histories = {name: work / f"h-{name}" for name in ("unshifted", "shifted")}
        histories["train"] = synthetic_champion / "history"  # seed 0, the champion's (read-only)
        synthetic.write(histories["unshifted"], CUSTOMERS, seed=1)
        _shift(histories["unshifted"], histories["shifted"])
        small, refuse = work / "small.yaml", work / "refuse.yaml"
        small.write_text(yaml.safe_dump(SMALL_TRAINING), encoding="utf-8")
        never = {**SMALL_TRAINING, "gate": {"min_churn_auc_gain": 1.0}}
        refuse.write_text(yaml.safe_dump(never), encoding="utf-8")
        copy_store(synthetic_champion, work)  # the small model trained on histories["train"], version 1
        trained = (synthetic_champion / "train.out").read_text(encoding="utf-8")
        run_id = re.search(r"MLflow run (\w+)", trained).group(1)
        yield World(work, histories, small, refuse, run_id)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_report_is_logged_and_rebuilt_from_mlflow(world: World) -> None:
    client = world.client()
    run = client.get_run(world.run_id)
    assert "report.html" in {a.path for a in client.list_artifacts(world.run_id)}  # logged at train time

    out = world.work / "report.html"
    printed = run_diamond("report", world.run_id, "--out", str(out), cwd=world.work).stdout
    assert str(out) in printed.replace("\n", "")
    page = out.read_text(encoding="utf-8")
    sections = ["data", "design", "metrics", "calibration", "gain", "deciles", "drivers"]
    for section in [*sections, "tiers", "promotion"]:
        assert f"<section id='{section}'>" in page
    m = run.data.metrics
    logged = ("churn_auc", "churn_brier", "value_gini", "baseline_rfm_churn_auc", "baseline_bgnbd_value_gini")
    for key in logged:
        assert f"<td>{m[key]:.4f}</td>" in page  # the logged values, as MLflow holds them
    fingerprint = run.data.tags["data_sha256"]
    assert fingerprint in page and run.data.params["origins"].split(",")[-1] in page
    assert "promoted: there was no champion" in page and "Version 1: <b>promoted to champion</b>" in page
    assert page.count("data:image/png;base64,") >= 8  # plots inline
    assert not re.search(r"(src|href)=['\"]?https?:", page)  # nothing fetched: self-contained

    unknown = run_diamond("report", "no-such-run", cwd=world.work, check=False)
    assert unknown.returncode == 2 and "no MLflow run 'no-such-run'" in unknown.stderr


def test_retrain_without_drift_or_schedule_does_nothing(world: World) -> None:
    before = world.versions()
    args = ("retrain", "--data", str(world.histories["train"]), "--config", str(world.small))
    quiet = run_diamond(*args, cwd=world.work)
    assert quiet.returncode == 0
    assert "no retrain needed: champion version 1" in quiet.stdout and "no drift measured yet" in quiet.stdout
    assert world.versions() == before


def test_shifted_history_raises_the_model_health_alert_and_retrain_acts_once(world: World) -> None:
    from serving import alert_rules, alert_store, monitoring, store

    eng = store.engine(os.environ["DIAMOND_STORE_URL"])
    # a history from the same generator (another seed), a week before the end: no alert
    calm = run_diamond(
        "score", "--data", str(world.histories["unshifted"]), "--as-of", "2025-12-24", cwd=world.work
    ).stdout
    assert "no model-health alert" in calm
    first = monitoring.latest_drift(eng)
    assert first["model_version"] == "1" and not first["alert"] and first["max_psi"] < 0.25
    assert alert_rules.MODEL_ID not in set(alert_store.list_alerts(eng, status="live")["customer_id"])

    # amounts x3 and half the purchases: the alert, naming the worst features
    shifted = run_diamond("score", "--data", str(world.histories["shifted"]), cwd=world.work).stdout
    assert "model-health alert" in shifted
    drift = monitoring.latest_drift(eng)
    assert drift["alert"] and drift["max_psi"] >= 0.25 and drift["over"] >= 1
    worst = drift["psi"][0]
    assert worst["name"] == drift["worst"] and worst["psi"] == drift["max_psi"]
    assert worst["name"].startswith(("monetary", "amount")), worst  # the spend features moved most
    assert f"feature {worst['name']}: PSI {worst['psi']:.3f} >= 0.25" in shifted.replace("\n", " ")
    listed = run_diamond("alerts", "list", cwd=world.work).stdout
    assert "(the model)" in listed and "model-health" in listed and worst["name"] in listed

    # both runs are in MLflow, tagged with the model version, with the stored PSIs
    client = world.client()
    experiment = client.get_experiment_by_name("diamond-monitoring")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    assert [r.data.tags["model_version"] for r in runs] == ["1", "1"]
    assert runs[0].data.tags["alert"] == "true" and runs[1].data.tags["alert"] == "false"
    assert runs[0].data.metrics[f"psi_{worst['name']}"] == pytest.approx(worst["psi"])

    # drift on the champion: retrain trains a challenger (refused here, so the champion and its drift stay)
    args = ("retrain", "--data", str(world.histories["shifted"]), "--config", str(world.refuse))
    before = world.versions()
    acted = run_diamond(*args, cwd=world.work).stdout
    assert "retrained: drift on champion version 1" in acted and "refused" in acted
    assert world.versions() == before + 1
    again = run_diamond(*args, cwd=world.work).stdout  # the same data, the same reason: nothing more
    assert "already retrained on this data" in again and "for drift" in again
    assert world.versions() == before + 1


def test_two_retrains_at_once_one_runs_the_other_exits_cleanly(world: World) -> None:
    before = world.versions()
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    args = [DIAMOND, "retrain", "--force", "--data", str(world.histories["train"])]
    args += ["--config", str(world.refuse)]
    pipe = subprocess.PIPE
    procs = [
        subprocess.Popen(args, cwd=world.work, env=env, stdout=pipe, stderr=pipe, text=True) for _ in range(2)
    ]
    results = [(p.pid, p.returncode, out, err) for p in procs for out, err in [p.communicate(timeout=600)]]
    assert [rc for _, rc, _, _ in results] == [0, 0], results
    trained = [r for r in results if "retrained: forced" in r[2]]
    waited = [r for r in results if "another retrain is running" in r[2]]
    assert len(trained) == 1 and len(waited) == 1, results
    assert f"another retrain is running (pid {trained[0][0]} on " in waited[0][2]
    assert "Traceback" not in waited[0][2] + waited[0][3]
    assert world.versions() == before + 1
