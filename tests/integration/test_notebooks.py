"""The notebooks run top to bottom and their asserts check the facts: the exploration notebooks (01_*) on
the bundled CDNOW data, the model report (02) on a run the CLI trained (the shared `synthetic_champion`),
in a private copy of its MLflow store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, copy_store

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

FOLDER = ROOT / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("[0-9][0-9]_*.ipynb"))
EXPLORATION = [p for p in NOTEBOOKS if p.name.startswith("01_")]
REPORT = FOLDER / "02_model_report.ipynb"


def _execute(path: Path, cwd: Path) -> Any:
    """Run every cell in a fresh python3 kernel (which inherits os.environ) and return the notebook."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()  # raises CellExecutionError, with the cell's traceback, if any cell fails
    assert all(cell.execution_count for cell in nb.cells if cell.cell_type == "code")
    return nb


def _outputs(nb: Any, mime: str = "text/plain") -> list[str]:
    """Every stream text and every `mime` payload the code cells produced."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                found.append(out.text)
            elif mime in out.get("data", {}):
                found.append(out.data[mime])
    return found


def test_the_model_report_is_there() -> None:
    assert REPORT in NOTEBOOKS and EXPLORATION


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_saved_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    dirty = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"{path.name}: clear the outputs of code cells {dirty} before saving"


@pytest.mark.parametrize("path", EXPLORATION, ids=lambda p: p.name)
def test_notebook_executes(
    path: Path, cdnow_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIAMOND_CDNOW_DIR", str(cdnow_dir))  # the kernel inherits the environment
    monkeypatch.delenv("MPLBACKEND", raising=False)  # headless: the kernel's inline backend
    _execute(path, tmp_path)


def test_model_report_executes_on_a_trained_run(
    synthetic_champion: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Report on the run of a small model the CLI trained (the `synthetic_champion`), in this test's own copy
    of its store: its champion must not meet the gate of another test's training run."""
    store = tmp_path / "mlflow.yaml"
    store.write_text(
        f"tracking_uri: sqlite:///{tmp_path / 'mlflow.db'}\nartifact_root: {tmp_path / 'artifacts'}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("DIAMOND_MLFLOW_CONFIG", str(store))  # the kernel inherits the environment
    copy_store(synthetic_champion, tmp_path)
    trained = (synthetic_champion / "train.out").read_text(encoding="utf-8")
    found = re.search(r"MLflow run ([0-9a-f]{32}), registered diamond version \d+", trained)
    assert found, f"no run id in the output of diamond train:\n{trained}"
    run_id = found.group(1)

    monkeypatch.setenv("DIAMOND_RUN_ID", run_id)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = _execute(REPORT, tmp_path)
    text = "\n".join(_outputs(nb))
    assert f"MLflow run {run_id}" in text and "chosen by DIAMOND_RUN_ID" in text
    assert f"report complete for MLflow run {run_id} (train, feature set core_v1)" in text
    assert "churn ROC-AUC" in text and "a train run: no holdout metrics" in text
    assert "promoted: there was no champion" in text  # the promotion log of this store
    assert len(_outputs(nb, "image/png")) >= 4  # the logged plots, shown inline


def test_model_report_says_what_to_do_without_a_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")  # a store with no models
    monkeypatch.delenv("DIAMOND_RUN_ID", raising=False)
    with pytest.raises(nbclient.exceptions.CellExecutionError) as failed:
        _execute(REPORT, tmp_path)
    assert "RuntimeError" in str(failed.value) and "diamond train --data DIR" in str(failed.value)
