"""Profit, not only revenue, through the real CLI and a real MLflow store: `diamond train` with
`value.target: margin` on a small synthetic history (it has a margin column) records the target in the
artefact, the run and the model report; the champion describes itself as predicting margin (GET /model's
body); `diamond score` scores with it; and the inputs that cannot work are refused before anything is
trained or written."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import SMALL_TRAINING, run_diamond, train_store

COSTS = {"support_ticket": 4.0, "complaint": 15.0}
MARGIN = {**SMALL_TRAINING, "value": {"target": "margin", "cost_to_serve": COSTS}}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic") / "history"
    run_diamond("data", "synthetic", "--customers", "1200", "--seed", "3", "--out", str(folder))
    return folder


@pytest.fixture(scope="module")
def margin_store(history: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store whose champion was trained by `diamond train` with value.target: margin; what it printed."""
    folder = tmp_path_factory.mktemp("margin")
    return folder, train_store(folder, history, training=MARGIN)


def _env(folder: Path) -> dict[str, str]:
    return {
        "DIAMOND_MLFLOW_CONFIG": str(folder / "mlflow.yaml"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "DIAMOND_STORE_URL": f"sqlite:///{folder / 'diamond.db'}",
    }


def test_a_margin_model_says_so_everywhere(
    history: Path, margin_store: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from serving.champion import ChampionHolder
    from training.tracking import MlflowConfig, load_artefact

    tmp_path, printed = margin_store
    assert "registered diamond version 1" in printed and "value target: margin" in printed
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    mlcfg = MlflowConfig.load()

    artefact = load_artefact("models:/diamond@champion", mlcfg)
    assert artefact.value_target.target == "margin"
    assert dict(artefact.value_target.cost_to_serve) == COSTS

    holder = ChampionHolder(mlcfg, "champion")
    holder.refresh()
    described = holder.describe()
    assert described is not None
    assert described["value_target"] == {"target": "margin", "cost_to_serve": COSTS}

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(client.get_model_version("diamond", "1").run_id)
    assert run.data.tags["value_target"] == "margin"
    assert run.data.params["value_target"] == (
        "margin minus cost-to-serve per interaction (complaint 15, support_ticket 4)"
    )
    report = tmp_path / "report.html"  # the model report, built from the run
    run_diamond("report", run.info.run_id, "--out", str(report), cwd=tmp_path, env=_env(tmp_path))
    page = report.read_text(encoding="utf-8")
    assert "value target" in page and "margin minus cost-to-serve per interaction" in page

    scored = run_diamond("score", "--data", str(history), cwd=tmp_path, env=_env(tmp_path)).stdout
    assert "value: margin" in scored


def test_diamond_effect_and_the_effect_page_say_the_incremental_value_is_the_served_models_margin(
    history: Path, margin_store: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`diamond effect`, text and --json, names the value its incremental value is measured in: the served
    model's target (margin, its costs-to-serve, the version), the one its outcomes were measured with; the
    dashboard's effect page (in process, serving the champion a ChampionHolder loads, as the service does)
    says the same line, escaped."""
    import dataclasses
    import html
    import re

    from features.value import ValueTarget
    from serving.champion import ChampionHolder
    from tests.helpers import copy_store, write_serving_config
    from tests.helpers.effect import dashboard_get, yaml_alerts
    from training.tracking import MlflowConfig

    copy_store(margin_store[0], tmp_path)
    write_serving_config(tmp_path, {"alerts": yaml_alerts(0.3, {"diamond": 40, "gold": 5, "silver": 1})})
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "DIAMOND_STORE_URL": f"sqlite:///{tmp_path / 'diamond.db'}",
        "DIAMOND_SERVING_CONFIG": str(tmp_path / "serving.yaml"),
    }
    run_diamond("score", "--data", str(history), cwd=tmp_path, env=env)  # alerts, pending outcomes
    body = json.loads(run_diamond("effect", "--json", cwd=tmp_path, env=env).stdout)
    words = "margin minus cost-to-serve per interaction (complaint 15, support_ticket 4)"
    assert body["value_target"] == {
        "target": "margin",
        "cost_to_serve": {"complaint": 15.0, "support_ticket": 4.0},
        "text": words,
        "model_version": "1",
    }
    overall = next(r for r in body["effect"] if r["scope"] == "cumulative" and r["tier"] == "(all)")
    assert overall["pending"] > 0  # at the history's end every window is still open
    text = " ".join(run_diamond("effect", cwd=tmp_path, env=env).stdout.split())
    assert f"value: {words} (the served model's, version 1; value_after and incr. value measure it)" in text
    assert "incr. margin (95 % CI)" in text and "incr. revenue" not in text

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    holder = ChampionHolder(MlflowConfig.load(), "champion")
    holder.refresh()
    served = holder.current
    assert served is not None

    def value_line(page: str) -> str:
        found = re.search(r"<p class=\"hint\" data-value-target>(.*?)</p>", page, re.S)
        assert found is not None, page
        return " ".join(found.group(1).split())

    page = dashboard_get("/effect", served)
    assert page.status_code == 200
    said = re.search(r"value: (.*? measure it\))", text)
    assert said is not None
    assert html.unescape(value_line(page.text)) == f"Value: {said.group(1)}."  # the CLI's very line
    art = dataclasses.replace(served.artefact, value_target=ValueTarget("margin", {"<b>call</b>": 2.0}))
    marked = dashboard_get("/effect", dataclasses.replace(served, artefact=art)).text
    assert value_line(marked).startswith("Value: margin minus cost-to-serve per interaction (&lt;b&gt;call")
    assert "<b>call" not in marked


def test_margin_target_on_a_history_without_margins_is_refused_before_training(
    cdnow_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "training.yaml"
    config.write_text("value:\n  target: margin\n", encoding="utf-8")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    refused = run_diamond(
        "train", "--data", str(cdnow_dir), "--config", str(config), cwd=tmp_path, env=env, check=False
    )
    assert refused.returncode == 2
    assert "value.target: margin needs a 'margin' column on transactions" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "mlruns").exists()
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert not MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()  # nothing logged


def test_a_bad_cost_or_margin_is_refused_naming_the_key_or_the_line(history: Path, tmp_path: Path) -> None:
    config = tmp_path / "training.yaml"
    config.write_text("value:\n  target: margin\n  cost_to_serve:\n    complaint: -3\n", encoding="utf-8")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    refused = run_diamond(
        "train", "--data", str(history), "--config", str(config), cwd=tmp_path, env=env, check=False
    )
    assert refused.returncode == 2
    assert "value.cost_to_serve.complaint" in refused.stderr + refused.stdout

    bad = tmp_path / "bad"
    bad.mkdir()
    tx = pq.read_table(history / "transactions.parquet").slice(0, 40).to_pandas()
    tx["margin"] = tx["margin"].astype(object)
    tx.loc[7, "margin"] = "n/a"
    tx.to_csv(bad / "transactions.csv", index=False)
    (bad / "dataset.yaml").write_text("as_of: 2025-12-31\n", encoding="utf-8")
    result = run_diamond("data", "validate", str(bad), check=False)
    assert result.returncode == 2
    assert "transactions.csv: column 'margin': 1 values are not numbers — first: line 9: 'n/a'" in (
        result.stderr + result.stdout
    ).replace("\n", "")


def test_a_margin_model_refuses_to_score_a_history_without_margins(
    history: Path, margin_store: tuple[Path, str], tmp_path: Path
) -> None:
    store = margin_store[0]
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in history.iterdir():
        if f.name == "transactions.parquet":
            pq.write_table(pq.read_table(f).drop(["margin"]), plain / f.name)
        elif f.is_file():
            (plain / f.name).write_bytes(f.read_bytes())
    before = run_diamond("runs", "list", cwd=store, env=_env(store)).stdout
    refused = run_diamond("score", "--data", str(plain), cwd=store, env=_env(store), check=False)
    assert refused.returncode == 2
    assert "value.target: margin needs a 'margin' column on transactions" in refused.stderr + refused.stdout
    assert run_diamond("runs", "list", cwd=store, env=_env(store)).stdout == before  # nothing was written


def test_features_build_labels_follow_the_training_config(history: Path, tmp_path: Path) -> None:
    """`diamond features build --config` builds the labels training would: profit for a margin target (the
    margin family of core_v3 beside them), revenue by default."""
    import yaml

    from features.build import build_labels, build_spine
    from features.history import load_history
    from features.value import ValueTarget

    config = tmp_path / "training.yaml"
    config.write_text(yaml.safe_dump({"value": MARGIN["value"]}), encoding="utf-8")
    common = ("features", "build", "--data", str(history), "--cutoffs", "2025-03-31", "--horizon", "90d")
    run_diamond(
        *common, "--feature-set", "core_v3", "--config", str(config), "--out", str(tmp_path / "m.parquet")
    )
    run_diamond(*common, "--out", str(tmp_path / "r.parquet"))
    margin, revenue = pq.read_table(tmp_path / "m.parquet"), pq.read_table(tmp_path / "r.parquet")
    assert {"margin_rate", "margin_mean", "margin_90d"} <= set(margin.column_names)
    loaded = load_history(history)
    spine = build_spine(loaded, ["2025-03-31"])
    want = build_labels(loaded, spine, 90, value=ValueTarget("margin", COSTS)).column("future_value")
    assert margin.column("future_value").to_pylist() == pytest.approx(want.to_pylist())
    assert revenue.column("future_value").to_pylist() == pytest.approx(
        build_labels(loaded, spine, 90).column("future_value").to_pylist()
    )
    assert sum(want.to_pylist()) < 0.5 * sum(revenue.column("future_value").to_pylist())  # profit < revenue
