"""MLflow: where runs are tracked, what a training run logs, and how the scoring artefact is registered.

Configured by `mlflow.yaml` (shared, in git); `MLFLOW_TRACKING_URI` overrides the tracking store,
`DIAMOND_MLFLOW_<KEY>` any other key (core.config), and `DIAMOND_MLFLOW_CONFIG` points at another file.
The embedded default is a SQLite store and an artifact folder under `.diamond/` in the working directory.
A run logs parameters, validation metrics, the baselines, the feature set, a data fingerprint, the Optuna
summary, report plots and the scoring artefact (as a pyfunc model), and registers that artefact as a new
version of one registered model: churn and value are promoted together, because tiers and value at risk
combine them. Promotion is training.registry.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from core.config import FileSettings, load
from training.artefact import ScoringArtefact

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from mlflow.pyfunc.model import PythonModelContext

    from training.config import TrainingConfig
    from training.pipeline import Trained

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "mlflow.yaml"
CONFIG_ENV, TRACKING_ENV = "DIAMOND_MLFLOW_CONFIG", "MLFLOW_TRACKING_URI"
ARTEFACT_DIR = "scoring"  # the pyfunc model's name inside a run; the artefact folder sits in it
CONTRIB_ROWS = 2_000  # customers sampled for the contributions plot
ROLLING_METRICS = ("churn_auc", "churn_brier", "value_gini", "value_aggregate_error", "value_decile_mape")
SEGMENTS = "quality/segments_{window}.json"  # quality by segment of a window (training.segments)
PINNED = ("mlflow", "xgboost", "pandas", "numpy", "scipy", "scikit-learn", "pyarrow")


class MlflowConfig(FileSettings):
    """mlflow.yaml; relative paths resolve against the working directory, so the printed `mlflow ui` command
    works from anywhere."""

    model_config = SettingsConfigDict(env_prefix="DIAMOND_MLFLOW_")

    tracking_uri: Annotated[str, Field(validation_alias=TRACKING_ENV)] = "sqlite:///.diamond/mlflow.db"
    artifact_root: str = ".diamond/mlartifacts"
    experiment: str = "diamond"
    registered_model: str = "diamond"

    @field_validator("tracking_uri")
    @classmethod
    def _absolute_sqlite(cls, uri: str) -> str:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
        return uri

    @field_validator("artifact_root")
    @classmethod
    def _as_uri(cls, root: str) -> str:
        return root if "://" in root else Path(root).resolve().as_uri()

    @classmethod
    def load(cls, path: str | Path | None = None) -> MlflowConfig:
        """mlflow.yaml (or `path`, or $DIAMOND_MLFLOW_CONFIG), the environment on top."""
        return load(cls, path, default=DEFAULT_PATH, env=CONFIG_ENV, what="MLflow config")

    def client(self) -> MlflowClient:
        """An MlflowClient on this store, for writing: a SQLite folder and file, and MLflow's tables in an
        empty database, are created on first use (training does that). Readers use `reader`."""
        from mlflow import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def reader(self) -> MlflowClient:
        """An MlflowClient on a store that exists: reading never creates one. A missing SQLite file, or a
        database without MLflow's tables, raises TrackingStoreMissing saying so (serve, score, models)."""
        from mlflow import MlflowClient

        _check_store(self.tracking_uri)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, client: MlflowClient, name: str | None = None) -> str:
        name = name or self.experiment
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        return str(client.create_experiment(name, artifact_location=f"{self.artifact_root}/{name}"))

    def ui_command(self) -> str:
        return f"mlflow ui --backend-store-uri {self.tracking_uri} --port 5000"


class TrackingStoreMissing(FileNotFoundError):
    """The MLflow tracking store to read from does not exist, or is empty (a FileNotFoundError: commands
    report it as bad input, exit code 2)."""


_found: set[str] = set()  # database stores found with MLflow's tables (checked once per process)
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's database stores (else a server, files)


def _check_store(uri: str) -> None:
    """Raise TrackingStoreMissing unless the database store `uri` exists and holds MLflow's tables, without
    creating anything (a tracking server or a file store answers for itself)."""
    if uri in _found or uri.split(":", 1)[0].split("+", 1)[0] not in SQL_SCHEMES:
        return
    import sqlalchemy as sa

    shown = sa.make_url(uri).render_as_string(hide_password=True)
    hint = "train a model first (`diamond train`), or set MLFLOW_TRACKING_URI / mlflow.yaml to your store"
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise TrackingStoreMissing(f"the MLflow tracking store {shown} does not exist: {hint}")
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if "registered_models" not in tables:
        raise TrackingStoreMissing(f"the MLflow tracking store {shown} is empty (no MLflow tables): {hint}")
    _found.add(uri)


def _pyfunc_class() -> type:
    from mlflow.pyfunc.model import PythonModel

    class DiamondModel(PythonModel):
        """Feature rows (built with the artefact's feature set at its horizon) in, scores out."""

        def load_context(self, context: PythonModelContext) -> None:
            self.artefact = ScoringArtefact.load(context.artifacts["artefact"])

        # MLflow reads predict's hints when the class is made: they must name module globals
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
            return self.artefact.score(model_input)

    return DiamondModel


@dataclass
class Logged:
    run_id: str
    version: str  # the registered model version
    model_uri: str


def log_training(
    trained: Trained,
    fingerprint: dict[str, Any],
    config: TrainingConfig,
    mlcfg: MlflowConfig,
    run_name: str | None = None,
    register: bool = True,
    tags: dict[str, str] | None = None,
) -> Logged:
    """One MLflow run for one `training.pipeline.Trained`; registers the artefact as a new version
    (backtests log without registering: their models never serve). `tags` are added to the run's own."""
    import mlflow

    _quiet()
    client = mlcfg.client()
    mlflow.set_tracking_uri(mlcfg.tracking_uri)
    mlflow.set_registry_uri(mlcfg.tracking_uri)
    art: ScoringArtefact = trained.artefact
    with mlflow.start_run(
        experiment_id=mlcfg.experiment_id(client), run_name=run_name or f"train {art.cutoff:%Y-%m-%d}"
    ) as run:
        mlflow.set_tags(
            {
                "feature_set": art.feature_set,
                "cutoff": art.cutoff.isoformat(),
                "data_sha256": fingerprint["sha256"],
                "value_objective": art.value.objective,
                "value_model": art.value.kind,
                "value_target": art.value_target.target,
                "kind": "train" if register else "backtest",
                **(tags or {}),
            }
        )
        mlflow.log_params(_params(trained, config))
        mlflow.log_metrics({**_finite(trained.validation), **trained.tuning, **trained.seconds})
        if trained.segments:
            mlflow.log_dict(
                segments_payload(trained.segments, "validation", art.label_horizon_days, config),
                SEGMENTS.format(window="validation"),
            )
            from training import segments  # scikit-learn's metrics: training's imports, not scoring's

            mlflow.log_metrics(segments.mlflow_metrics(trained.segments, ""))
        mlflow.log_dict(fingerprint, "data/fingerprint.json")
        mlflow.log_dict({"columns": art.columns, "tiers": art.tiers}, "model/columns_and_tiers.json")
        for name, fig in report_figures(trained).items():
            mlflow.log_figure(fig, f"plots/{name}.png")
        with tempfile.TemporaryDirectory() as tmp:
            folder = art.save(Path(tmp) / "artefact")
            info = mlflow.pyfunc.log_model(
                name=ARTEFACT_DIR,
                python_model=_pyfunc_class()(),
                artifacts={"artefact": str(folder)},
                pip_requirements=[f"{p}=={version(p)}" for p in PINNED],
            )
        if not register:
            return Logged(run.info.run_id, "", info.model_uri)
        mv = mlflow.register_model(
            info.model_uri,
            mlcfg.registered_model,
            tags={"run_id": run.info.run_id, "feature_set": art.feature_set},
        )
    return Logged(run.info.run_id, str(mv.version), info.model_uri)


def log_backtest_metrics(
    run_id: str, metrics: dict[str, dict[str, float | None]], mlcfg: MlflowConfig
) -> None:
    """Holdout metrics of a backtest (model and baselines) beside the run's validation metrics."""
    client = mlcfg.client()
    for who, values in metrics.items():
        for k, v in values.items():
            if v is not None and np.isfinite(v):
                client.log_metric(run_id, f"holdout_{who}_{k}", float(v))


def log_segments(
    run_id: str, table: list[dict[str, Any]], horizon_days: int, config: TrainingConfig, mlcfg: MlflowConfig
) -> None:
    """A backtest's quality by segment over (T, T + H]: `quality/segments_holdout.json` (the model report
    reads it) and `holdout_segment/...` metrics."""
    from mlflow.entities import Metric

    from training import segments

    client = mlcfg.client()
    payload = segments_payload(table, "holdout", horizon_days, config)
    client.log_dict(run_id, payload, SEGMENTS.format(window="holdout"))
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, 0) for k, v in segments.mlflow_metrics(table, "holdout_").items()]
    client.log_batch(run_id, metrics=items)  # MLflow splits a long batch itself


def start_rolling(mlcfg: MlflowConfig, fingerprint: dict[str, Any], pairs: list[tuple[int, datetime]]) -> str:
    """The parent run of a rolling backtest (each backtest is a nested run under it); returns its id.

    A parent with nested runs, not one run: every backtest trains its own model, with its own parameters,
    plots, artefact and report, so each stays a whole run (and `diamond report` works on it), while the
    parent holds what only the set has: the summary table and the worst values."""
    _quiet()
    client = mlcfg.client()
    horizons = sorted({h for h, _ in pairs})
    cutoffs = sorted({t for _, t in pairs})
    run = client.create_run(
        mlcfg.experiment_id(client),
        run_name=f"rolling backtest {cutoffs[0]:%Y-%m-%d}..{cutoffs[-1]:%Y-%m-%d} "
        + "+".join(f"{h}d" for h in horizons),
        tags={"kind": "rolling", "data_sha256": fingerprint["sha256"]},
    )
    run_id = str(run.info.run_id)
    client.log_param(run_id, "cutoffs", ",".join(f"{t:%Y-%m-%d}" for t in cutoffs))
    client.log_param(run_id, "horizons_days", ",".join(str(h) for h in horizons))
    client.log_param(run_id, "backtests", len(pairs))
    client.log_dict(run_id, fingerprint, "data/fingerprint.json")
    return run_id


def finish_rolling(
    run_id: str, summary: pd.DataFrame, worst: dict[str, dict[str, Any]], mlcfg: MlflowConfig
) -> None:
    """The parent's metrics and artefact, then it is closed: per horizon, each holdout metric as a series
    `h<H>d/<metric>` whose step is the cutoff as YYYYMMDD; `worst/<metric>` over every scored backtest; and
    the whole table as `rolling/summary.json`."""
    from mlflow.entities import Metric

    client = mlcfg.client()
    now = int(time.time() * 1000)
    out = []
    for row in summary[summary["scored"]].to_dict("records"):
        step = int(f"{row['cutoff']:%Y%m%d}")
        for m in ROLLING_METRICS:
            if np.isfinite(row[m]):
                out.append(Metric(f"h{row['horizon_days']}d/{m}", float(row[m]), now, step))
    out += [Metric(f"worst/{m}", float(w["value"]), now, 0) for m, w in worst.items()]
    client.log_batch(run_id, metrics=out)  # MLflow splits a long batch itself
    records = summary.assign(cutoff=summary["cutoff"].map(lambda t: f"{t:%Y-%m-%d}")).to_dict("records")
    worst_out = {m: {**w, "cutoff": f"{w['cutoff']:%Y-%m-%d}"} for m, w in worst.items()}
    client.log_dict(run_id, {"rows": _json_safe(records), "worst": worst_out}, "rolling/summary.json")
    client.set_terminated(run_id, "FINISHED")


def _json_safe(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN and numpy scalars as JSON: NaN becomes null."""
    out = []
    for r in records:
        clean: dict[str, Any] = {}
        for k, v in r.items():
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not np.isfinite(v):
                v = None
            clean[k] = v
        out.append(clean)
    return out


def segments_payload(
    table: list[dict[str, Any]], window: str, horizon_days: int, config: TrainingConfig
) -> dict[str, Any]:
    """What the report's segment and parity sections need: the window, its horizon, the margins, the rows."""
    return {
        "window": window,
        "horizon_days": horizon_days,
        "parity": config.parity.model_dump(),
        "rows": table,
    }


def load_artefact(uri: str, mlcfg: MlflowConfig) -> ScoringArtefact:
    """The scoring artefact behind a model URI such as models:/diamond@champion or models:/diamond/3, read
    from this config's store (not MLflow's process-wide default)."""
    import mlflow

    _quiet()
    client = mlcfg.reader()
    name, sep, ref = uri.removeprefix("models:/").partition("@")
    if sep:
        version = str(client.get_model_version_by_alias(name, ref).version)
    else:
        name, _, version = name.partition("/")
    source = client.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp)
        found = next(Path(local).rglob("scoring.json"), None)
        if found is None:
            raise FileNotFoundError(f"{uri}: no scoring artefact in the model")
        return ScoringArtefact.load(found.parent)


def report_figures(trained: Trained) -> dict[str, Figure]:
    """The report plots of a training run, on the latest validation window (validation-stage models)."""
    late, pred = trained.validation_rows, trained.validation_predictions
    churn_rows, p = trained.churn_window()
    y = churn_rows["churned"].to_numpy()
    from training import baselines, plots  # matplotlib and scikit-learn: training's, not scoring's imports

    figs: dict[str, Figure] = {}
    if 0 < y.sum() < len(y):
        rfm = {"RFM rank": baselines.rfm_churn_score(churn_rows)}
        figs.update(
            roc=plots.roc_figure(y, p, rfm),
            precision_recall=plots.pr_figure(y, p, rfm),
            calibration=plots.calibration_figure(y, p),
            gain_lift=plots.gain_lift_figure(y, p),
        )
    if len(late) >= 10:
        figs["value_deciles"] = plots.decile_figure(late["future_value"], pred["predicted_value"])
    art = trained.artefact
    boosters = [
        ("churn", art.churn.booster, art.churn.encoder),
        ("value", art.value.booster, art.value.encoder),
    ]
    if art.value.buyer is not None:  # the hurdle: "value" is E[value | any], "value_buyer" P(any value)
        boosters.append(("value_buyer", art.value.buyer, art.value.encoder))
    rows = trained.scoring_rows
    sample = rows.sample(min(len(rows), CONTRIB_ROWS), random_state=0) if len(rows) else rows
    for name, booster, encoder in boosters:
        # trees give one number a feature (a list only for gblinear multi-class)
        gain = cast(dict[str, float], booster.get_score(importance_type="total_gain"))
        if gain:
            figs[f"{name}_importance"] = plots.importance_figure({k: float(v) for k, v in gain.items()})
        if len(sample):
            contribs = booster.predict(encoder.matrix(sample), pred_contribs=True)
            figs[f"{name}_contributions"] = plots.contributions_figure(contribs, encoder.columns)
    return figs


def _params(trained: Trained, config: TrainingConfig) -> dict[str, Any]:
    art = trained.artefact
    out: dict[str, Any] = {
        "feature_set": art.feature_set,
        "n_columns": len(art.columns),
        "cutoff": art.cutoff.date().isoformat(),
        "horizon_days": art.horizon_days,
        "label_horizon_days": art.label_horizon_days,
        "origins": ",".join(f"{o:%Y-%m-%d}" for o in trained.origins),
        "training_rows": trained.training_rows,
        "seed": config.seed,
        "trials": config.trials,
        "churn_stack": ",".join(f"{x:.4f}" for x in art.churn.stack),
        "churn_horizon_map": ",".join(f"{x:.4f}" for x in art.churn.horizon_map),
        "value_horizon_map": ",".join(f"{x:.4f}" for x in art.value.horizon_map),
        "churn_models": churn_models_text(art),
        "levels": levels_text(art),
        "value_target": value_target_text(art),
    }
    for model, params in trained.params.items():
        out.update({f"{model}_{k}": v for k, v in params.items()})
    return out


def value_target_text(art: ScoringArtefact) -> str:
    """What predicted value measures, in words (a run parameter; the model report shows it)."""
    return art.value_target.text()


def churn_models_text(art: ScoringArtefact) -> str:
    """Which churn model scores whom, in words (a run parameter; the model report shows it)."""
    c, lv = art.contract, art.levels
    mode = c.mode if c is not None else lv.contract_mode if lv is not None else None
    if mode is None:
        return "purchase silence for every customer"
    who = "every customer" if mode == "contractual" else "customers whose is_subscriber is true"
    if c is None:  # the churn booster learned their H-day cancellations (training.contract `scorer`)
        shift = lv.contract_shift if lv is not None else None
        windows = len(lv.info.get("contract_windows") or []) if lv is not None else 0
        pooled = f" pooled over {windows} windows" if windows > 1 else ""
        return (
            f"churn booster on H-day cancellations for {who}, with a level of their own "
            f"(shift {shift if shift is None else f'{shift:+.3f}'}{pooled}); purchase silence for the rest"
        )[:500]
    return (
        f"contract hazard for {who} ({c.period_days}-day periods, {c.info.get('person_periods', 0)} "
        f"person-periods, level {c.level:.3f}); purchase silence for the rest"
    )[:500]


def levels_text(art: ScoringArtefact) -> str:
    """The recalibrated levels in words (a run parameter; the model report shows it)."""
    if art.levels is None:
        return "none (no complete window before T)"
    lv = art.levels
    return (
        f"{lv.info.get('window', '')} window at {lv.info.get('origin', '')}: churn logit shift "
        f"{lv.churn_shift:+.4f}, value factor {lv.value_factor:.4f}, value slope {lv.value_slope:.4f}"
    )[:500]


def _quiet() -> None:
    """MLflow's INFO lines, pickling advice and download bars are noise on a terminal: keep warnings that
    matter (errors) only."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if np.isfinite(v)}
