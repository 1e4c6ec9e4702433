"""The flows behind the `diamond` command: which stage feeds which, in one place.

Each flow is a plain function that takes parsed options and loaded config, runs the stages in order
(features -> training -> serving) and returns what it made; none prints. A flow reports its steps through
`progress(step_name)` when the caller passes one. The maths and the rules live in the stages' modules; the
flows only sequence them, so this is the one module (with the command itself) that may import every stage.
Stage modules are imported inside the flows, as in the command, so `diamond --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from features.engine import EngineConfig
    from features.history import History
    from features.value import ValueTarget
    from serving.batch import BatchResult
    from serving.config import ServingConfig
    from serving.erasure import Forgotten
    from serving.outcomes import Recorded
    from serving.runs import Rollback
    from serving.spark_batch import SparkBatchResult
    from training.config import TrainingConfig
    from training.pipeline import Backtest, TrainResult
    from training.registry import Decision
    from training.retrain import Outcome
    from training.tracking import MlflowConfig

Progress = Callable[[str], None]
"""Called with a step's name when the step is done."""

FEATURE_STEPS = ("load history", "spine", "features", "labels", "write")
"""The steps of `build_features` on DuckDB (on Spark the count is not known ahead)."""

BACKTEST_STEPS = ("train and predict", "write predictions", "log to MLflow")
"""The steps of `backtest_history` (the last one only when tracked)."""

DEMO_STEPS = (
    "write CDNOW history",
    "load and validate",
    *BACKTEST_STEPS,
    "train on all data, register, gate",
    "score, tiers, alerts",
)
"""The steps of `demo`, in order."""

DEMO_CUTOFF, DEMO_HORIZON = "1997-09-30", "273d"  # the classic CDNOW protocol


def _silent(step: str) -> None:
    """The progress callback when nobody watches."""


@dataclass(frozen=True)
class FeatureBuild:
    """What `build_features` wrote: the summary of its rows (features.build.summarise), and at how many
    cutoffs."""

    engine: str
    cutoffs: int
    summary: dict[str, Any]


@dataclass(frozen=True)
class BacktestRun:
    """A backtest, the Parquet file its predictions went to, and its MLflow run (None: not tracked)."""

    result: Backtest
    predictions: Path
    run_id: str | None


@dataclass(frozen=True)
class RollingRun:
    """A rolling backtest: one summary row per (horizon, cutoff) (training.rolling), the worst value of each
    metric, the Parquet file of every prediction, and the parent MLflow run (None: not tracked)."""

    summary: pd.DataFrame
    worst: dict[str, dict[str, Any]]
    predictions: Path
    run_id: str | None


@dataclass(frozen=True)
class ScoreRun:
    """A batch-scoring run on one machine (DuckDB): scores, tiers, alerts, drift, webhooks, snapshot."""

    as_of: datetime
    tiers: tuple[str, ...]  # the champion's tiers, highest first
    result: BatchResult
    outcomes: Recorded | None = None  # None: alerts are off
    value: str = "revenue"  # what predicted value measures: the champion's value target (features.value)


@dataclass(frozen=True)
class SparkScoreRun:
    """A batch-scoring run on Spark: the raw score table only."""

    as_of: datetime
    tiers: tuple[str, ...]  # the champion's tiers, highest first
    result: SparkBatchResult


@dataclass(frozen=True)
class DemoRun:
    """Everything `demo` made, and where it is."""

    history_dir: Path
    history: History
    backtest: BacktestRun  # the classic CDNOW protocol
    trained: TrainResult  # on all the data, registered and gated
    scored: BatchResult  # every customer scored with the champion, tiered, alerts raised
    top_alerts: pd.DataFrame | None  # the five live alerts with the most value at risk (None: alerts off)
    serving: ServingConfig  # the demo's own store and score folder


def build_features(
    settings: EngineConfig,
    data: str,
    out: str,
    cutoffs: list[datetime] | None,
    horizon_days: int,
    feature_set: str,
    labels: bool,
    as_of: datetime | None,
    progress: Progress = _silent,
    value: ValueTarget | None = None,
) -> FeatureBuild:
    """Feature rows (and labels, for training sets) of every eligible customer at each cutoff (None: monthly),
    written as Parquet to `out`, on the engine `settings` names (on Spark, `out` is a folder); future_value
    measures `value` (training.yaml's `value:`; None: revenue)."""
    from features.value import REVENUE

    value = value or REVENUE
    if settings.engine == "spark":
        return _build_features_spark(
            settings, data, out, cutoffs, horizon_days, feature_set, labels, as_of, progress, value
        )
    from features import build
    from features.history import load_history

    history = load_history(data, as_of=as_of)
    progress(FEATURE_STEPS[0])
    cuts = cutoffs if cutoffs is not None else build.monthly_cutoffs(history, horizon_days)
    spine = build.build_spine(history, cuts)
    progress(FEATURE_STEPS[1])
    table = build.build_features(history, spine, feature_set, horizon_days)
    progress(FEATURE_STEPS[2])
    if labels:
        lab = build.build_labels(history, spine, horizon_days, value=value)
        table = table.append_column("churned", lab.column("churned")).append_column(
            "future_value", lab.column("future_value")
        )
    progress(FEATURE_STEPS[3])
    _write_parquet(table, Path(out))
    progress(FEATURE_STEPS[4])
    return FeatureBuild(settings.engine, len(cuts), build.summarise(table))


def _build_features_spark(
    settings: EngineConfig,
    data: str,
    out: str,
    cutoffs: list[datetime] | None,
    horizon_days: int,
    feature_set: str,
    labels: bool,
    as_of: datetime | None,
    progress: Progress,
    value: ValueTarget,
) -> FeatureBuild:
    from features import build
    from features import spark as fsp

    spark = settings.session()
    progress("session")
    history = fsp.load_history(spark, data, as_of=as_of)
    cuts = cutoffs if cutoffs is not None else fsp.monthly_cutoffs(history, horizon_days)
    if labels:
        table, fits = fsp.build_training_set(history, cuts, horizon_days, feature_set, value=value)
    else:
        table, fits = fsp.build_features(history, fsp.build_spine(history, cuts), feature_set, horizon_days)
    fsp.write_training_set(table, out, fits)
    progress("write")
    summary = build.summarise(spark.read.parquet(out).drop("cutoff_date").toArrow())
    return FeatureBuild(settings.engine, len(cuts), summary)


def backtest(
    data: Path,
    cutoff: str,
    horizon: str,
    config: TrainingConfig,
    out: Path,
    mlcfg: MlflowConfig | None,
    progress: Progress = _silent,
) -> BacktestRun:
    """Load the history, then `backtest_history`."""
    from features.history import load_history

    history = load_history(data)
    progress("load history")
    return backtest_history(history, cutoff, horizon, config, out, mlcfg, progress)


def backtest_history(
    history: History,
    cutoff: str,
    horizon: str,
    config: TrainingConfig,
    out: Path,
    mlcfg: MlflowConfig | None,
    progress: Progress = _silent,
) -> BacktestRun:
    """Train on data <= cutoff, predict every eligible customer over the horizon, write the predictions to
    `out`, and (with `mlcfg`) log the run, its holdout metrics and its model report to MLflow."""
    import pyarrow as pa

    from training.pipeline import backtest as run_backtest

    result = run_backtest(history, cutoff, horizon, config)
    progress(BACKTEST_STEPS[0])
    _write_parquet(pa.Table.from_pandas(result.predictions, preserve_index=False), out)
    progress(BACKTEST_STEPS[1])
    if mlcfg is None:
        return BacktestRun(result, out, None)
    run_id = _log_backtest(history, result, config, mlcfg)
    progress(BACKTEST_STEPS[2])
    return BacktestRun(result, out, run_id)


def _log_backtest(
    history: History,
    result: Backtest,
    config: TrainingConfig,
    mlcfg: MlflowConfig,
    tags: dict[str, str] | None = None,
) -> str:
    """One backtest as an MLflow run: the training run (never registered), its holdout metrics and quality
    by segment, and its model report (with both); returns the run id."""
    from training import report, tracking

    t = result.trained.artefact.cutoff
    logged = tracking.log_training(
        result.trained,
        history.until(t).fingerprint(),
        config,
        mlcfg,
        run_name=f"backtest {t:%Y-%m-%d} +{result.horizon_days}d",
        register=False,
        tags=tags,
    )
    tracking.log_backtest_metrics(logged.run_id, result.metrics, mlcfg)
    if result.segments:
        tracking.log_segments(logged.run_id, result.segments, result.horizon_days, config, mlcfg)
    report.log_report(mlcfg, logged.run_id)  # with the holdout metrics
    return logged.run_id


def rolling_backtest(
    data: Path,
    cutoffs: list[str] | None,
    horizons: list[str] | None,
    config: TrainingConfig,
    out: Path,
    mlcfg: MlflowConfig | None,
    progress: Progress = _silent,
) -> RollingRun:
    """Load the history, then `rolling_backtest_history`."""
    from features.history import load_history

    history = load_history(data)
    progress("load history")
    return rolling_backtest_history(history, cutoffs, horizons, config, out, mlcfg, progress)


def rolling_backtest_history(
    history: History,
    cutoffs: list[str] | None,
    horizons: list[str] | None,
    config: TrainingConfig,
    out: Path,
    mlcfg: MlflowConfig | None,
    progress: Progress = _silent,
) -> RollingRun:
    """A backtest at each cutoff (None: training.rolling's default ones) and horizon (None: training.yaml's
    `rolling.horizons_days`), each scored when its labels are complete; every prediction to `out` (one Parquet
    file, with cutoff, horizon and, where known, the labels). With `mlcfg`, one parent MLflow run holds the
    summary and the worst values, and each backtest is a nested run with its model, metrics and report."""
    import pandas as pd
    import pyarrow as pa

    from features.build import parse_horizon
    from training import rolling, segments, tracking
    from training.pipeline import backtest as run_backtest

    hs = [parse_horizon(h) for h in horizons] if horizons else None
    pairs = rolling.plan(history, cutoffs, hs, config)
    progress(f"plan: {len(pairs)} backtests")
    parent = tracking.start_rolling(mlcfg, history.fingerprint(), pairs) if mlcfg else None
    rows, parts = [], []
    try:
        for h, t in pairs:
            result = run_backtest(history, t, h, config)
            run_id = None
            if mlcfg is not None and parent is not None:
                run_id = _log_backtest(history, result, config, mlcfg, {"mlflow.parentRunId": parent})
            part = result.predictions.assign(cutoff=t, horizon_days=h)
            if result.truth is not None:
                part = part.merge(result.truth, on="customer_id", how="left", validate="1:1")
            parts.append(part)
            model = result.metrics.get("model") if result.metrics else None
            flagged = len(segments.flagged(result.segments)) if result.truth is not None else None
            rows.append(rolling.summary_row(h, t, len(part), model, flagged, run_id))
            progress(f"{h}d at {t:%Y-%m-%d}")
        summary = rolling.summarise(rows)
        worst = rolling.worst(summary)
        columns = ["customer_id", "cutoff", "horizon_days", "churn_probability", "predicted_value"]
        frame = pd.concat(parts, ignore_index=True).reindex(columns=[*columns, "churned", "future_value"])
        _write_parquet(pa.Table.from_pandas(frame, preserve_index=False), out)
        progress("write predictions")
        if mlcfg is not None and parent is not None:
            tracking.finish_rolling(parent, summary, worst, mlcfg)
            progress("log to MLflow")
    except BaseException:
        if mlcfg is not None and parent is not None:
            mlcfg.client().set_terminated(parent, "FAILED")
        raise
    return RollingRun(summary, worst, out, parent)


def train(
    data: Path,
    config: TrainingConfig,
    mlcfg: MlflowConfig,
    cutoff: str | None,
    progress: Progress = _silent,
) -> TrainResult:
    """Features -> tune -> fit -> log to MLflow -> register a challenger -> promotion gate
    (training.pipeline.train), on data at or before `cutoff` (None: the history's end)."""
    from features.history import load_history
    from training.pipeline import train as run_train

    history = load_history(data)
    progress("load history")
    result = run_train(history, config, mlcfg, cutoff)
    progress("train, log, register, gate")
    return result


def promote(
    data: Path,
    version: str,
    config: TrainingConfig,
    mlcfg: MlflowConfig,
    cutoff: datetime | None,
    force: bool,
    note: str,
) -> Decision:
    """Apply the promotion gate to a registered version against the champion on the validation window as of
    `cutoff` (None: the history's end), or force it; the decision is logged (training.registry.decide)."""
    from features.build import end_of
    from features.history import load_history
    from training import registry
    from training.pipeline import validation_window

    history = load_history(data)
    t = cutoff if cutoff is not None else end_of(history)
    return registry.decide(
        mlcfg,
        version,
        lambda a: validation_window(history, t, config, a),
        config.gate,
        force=force,
        note=note,
    )


def score(
    settings: EngineConfig,
    data: str,
    as_of: datetime | None,
    config: ServingConfig,
    mlcfg: MlflowConfig,
    out: str | None,
    progress: Progress = _silent,
) -> ScoreRun | SparkScoreRun:
    """Score every eligible customer as of `as_of` (None: the history's end) with the champion, on the engine
    `settings` names. DuckDB: the score table, tier hysteresis, alerts, drift, webhooks and the service's
    snapshot (serving.batch), one run at a time per store (a second raises serving.store.StoreBusy naming
    the first). Spark: the raw score table only, in `out` (None: <scores_dir>/spark)."""
    from serving import runs, store

    if settings.engine == "spark":
        return _score(settings, data, as_of, config, mlcfg, out, progress)
    # the store is written: a store of another revision or a read-only one is refused first, then a
    # concurrent run
    eng = store.prepare(store.engine(config.store_url))
    runs.probe(eng)
    with store.score_lock(eng):
        return _score(settings, data, as_of, config, mlcfg, out, progress)


def _score(
    settings: EngineConfig,
    data: str,
    as_of: datetime | None,
    config: ServingConfig,
    mlcfg: MlflowConfig,
    out: str | None,
    progress: Progress,
) -> ScoreRun | SparkScoreRun:
    from features.build import end_of
    from serving import runs, store
    from serving.champion import ChampionHolder

    with ThreadPoolExecutor(1, thread_name_prefix="diamond-load-history") as pool:
        # the history is read and checked (Arrow and DuckDB, mostly without the GIL) while MLflow loads the
        # model; a missing model is still reported first
        loading = pool.submit(_load_history, data) if settings.engine != "spark" else None
        holder = ChampionHolder(mlcfg, config.model_alias)
        holder.refresh()
        if holder.current is None:
            raise ValueError(f"no model behind {holder.uri}: {holder.last_error} (run `diamond train` first)")
        served = holder.current
        progress(f"load {holder.uri} (version {served.version})")
        history = loading.result() if loading is not None else None
    tiers = tuple(served.artefact.tiers)
    if settings.engine == "spark":
        from features import spark as fsp
        from serving import spark_batch

        spark_history = fsp.load_history(settings.session(), data)
        t = as_of if as_of is not None else spark_history.end()
        target = out or str(Path(config.scores_dir) / "spark")
        done = spark_batch.score_history(spark_history, t, served, config, target)
        progress("score and write on spark")
        return SparkScoreRun(t, tiers, done)
    from features.history import check_run_time
    from serving.batch import score_history

    assert history is not None
    progress("load history")
    # a model predicting margin is judged on margins: refused before anything is written without them
    served.artefact.value_target.check(history)
    t = as_of if as_of is not None else end_of(history)
    check_run_time(history, t)
    runs.checkpoint(store.engine(config.store_url), t)  # what `diamond runs rollback` restores
    result = score_history(history, t, served, config, mlcfg, progress)
    found = None
    if result.alerts is not None:  # what became of earlier alerts and controls, as known at this run
        from serving import outcomes

        found = outcomes.record(
            store.engine(config.store_url, store.BATCH_CACHE_MIB),
            history,
            served.artefact.horizon_days,
            t,
            served.artefact.value_target,
        )
        progress("outcomes")
    return ScoreRun(t, tiers, result, found, served.artefact.value_target.target)


def _load_history(data: str) -> History:
    from features.history import load_history

    return load_history(data)


def record_outcomes(
    data: str, config: ServingConfig, horizon_days: int | None, mlcfg: MlflowConfig | None = None
) -> Recorded:
    """The outcome of every stored alert and control from the history in `data`, to its end
    (serving.outcomes.record); episodes never recorded before take `horizon_days`. Value is measured as the
    served model measures it (its value target; revenue without `mlcfg` or without a served model)."""
    from features.history import load_history
    from serving import outcomes, runs, store

    eng = store.prepare(store.engine(config.store_url))
    runs.probe(eng)  # a read-only store is refused before the history is loaded
    target, _ = outcome_value(config, mlcfg)
    return outcomes.record(eng, load_history(data), horizon_days, value=target)


def outcome_value(config: ServingConfig, mlcfg: MlflowConfig | None) -> tuple[ValueTarget, str | None]:
    """The value target outcomes measure `value_after` in, and so `diamond effect` its incremental value:
    the served model's (and its version), else revenue (and None: no served model, or no `mlcfg`)."""
    from features.value import REVENUE
    from serving.champion import ChampionHolder

    if mlcfg is not None:
        holder = ChampionHolder(mlcfg, config.model_alias)
        holder.refresh()
        if holder.current is not None:
            return holder.current.artefact.value_target, str(holder.current.version)
    return REVENUE, None


@dataclass(frozen=True)
class EffectReport:
    """`diamond effect`: the effect table, the programme's indicators (empty without a history) and the
    tier migration matrix, the MLflow run they were logged to (None: not logged), and the value target the
    incremental value is measured in, with the served model version it is that of (None: no served model,
    revenue)."""

    table: pd.DataFrame
    rates: pd.DataFrame
    migration: pd.DataFrame
    tier_order: list[str]
    run_id: str | None
    value_target: ValueTarget
    model_version: str | None

    def value_record(self) -> dict[str, Any]:
        """What the incremental value measures, for `--json`: the target, its costs-to-serve, in words, and
        the served model version whose target it is (None: no served model: revenue)."""
        return {
            **self.value_target.to_dict(),
            "text": self.value_target.text(),
            "model_version": self.model_version,
        }


def effect(
    config: ServingConfig,
    by_run: bool,
    mlcfg: MlflowConfig | None = None,
    data: str | None = None,
    horizon_days: int | None = None,
    models: MlflowConfig | None = None,
) -> EffectReport:
    """The effect table of the stored outcomes (serving.effect.report), playbook costs from the config; the
    tier migration matrix of the store's tier history and, with a history folder `data`, the realised
    rates by tier per run over `horizon_days` (default: the stored outcomes' horizon) (serving.indicators);
    with `mlcfg`, all of it logged as one MLflow run. The value target is the one `diamond outcomes`
    measures with (`outcome_value`: the served model's, looked up in `models` or `mlcfg`)."""
    import pandas as pd

    from serving import effect as fx
    from serving import indicators, store

    eng = store.prepare(store.engine(config.store_url))
    table = fx.stored_report(eng, config.alerts, str(config.file or "serving.yaml"), by_run)
    tiers, order = indicators.tier_history(eng)
    moves = indicators.migration(tiers)
    found = pd.DataFrame(columns=indicators.RATE_COLUMNS)
    if data is not None:
        from features.history import load_history

        if horizon_days is None:
            known = fx.load(eng)["horizon_days"]
            if known.empty:
                raise ValueError("the realised rates need a horizon: give --horizon (e.g. 90d)")
            horizon_days = int(known.mode().iloc[0])
        found = indicators.stored_rates(eng, load_history(data), horizon_days)
    target, version = outcome_value(config, models or mlcfg)
    run_id = None
    if mlcfg is not None and not (table.empty and moves.empty and found.empty):
        run_id = fx.log_to_mlflow(mlcfg, table, found, moves, target.target)
    return EffectReport(table, found, moves, order, run_id, target, version)


def list_runs(config: ServingConfig) -> pd.DataFrame:
    """The store's batch runs, newest first (serving.runs.list_runs)."""
    from serving import runs, store

    return runs.list_runs(store.prepare(store.engine(config.store_url)))


def rollback_run(config: ServingConfig, as_of: datetime) -> Rollback:
    """Undo the latest batch run, as of `as_of`: tiers, alerts, outbox and snapshot as the previous run left
    them (serving.runs.rollback)."""
    from serving import runs, store

    return runs.rollback(store.prepare(store.engine(config.store_url)), as_of)


def retrain(
    data: Path,
    config: TrainingConfig,
    mlcfg: MlflowConfig,
    store_url: str,
    force: bool,
    cutoff: str | None,
) -> Outcome:
    """Retrain when drift or the schedule says so (or `force`): under the retrain lock, read the latest drift
    from the serving store and hand it to training.retrain, which decides and trains a gated challenger.
    Raises training.retrain.Busy at once when another retrain holds the lock."""
    from serving import monitoring, store
    from training import retrain as retraining

    with retraining.exclusive(retraining.lock_path(mlcfg)):
        drift = monitoring.latest_drift(store.engine(store_url))
        return retraining.run(data, config, mlcfg, drift, force, cutoff)


def demo(
    out_dir: Path,
    config: TrainingConfig,
    mlcfg: MlflowConfig,
    serving: ServingConfig,
    progress: Progress = _silent,
) -> DemoRun:
    """The whole product on the bundled CDNOW data, in `out_dir`: the classic backtest, a model trained on
    all the data (registered and gated), and every customer scored with the champion into the demo's own
    store (started afresh on each run), tiers and alerts included."""
    from features.build import end_of
    from features.datasets import cdnow
    from features.history import load_history
    from serving import alert_store, store
    from serving.batch import score_history
    from serving.champion import ChampionHolder
    from training.pipeline import train as run_train

    history_dir = cdnow.write(out_dir / "cdnow", overwrite=True)
    progress(DEMO_STEPS[0])
    history = load_history(history_dir)
    progress(DEMO_STEPS[1])
    # the classic CDNOW protocol: everything dated <= 1997-09-30, scored on the next 39 weeks
    predictions = out_dir / f"cdnow_backtest_{DEMO_CUTOFF}_{DEMO_HORIZON}.parquet"
    backtested = backtest_history(history, DEMO_CUTOFF, DEMO_HORIZON, config, predictions, mlcfg, progress)
    # then the model a retention team would use: trained on all the data, registered and gated
    trained = run_train(history, config, mlcfg)
    progress(DEMO_STEPS[5])
    # and what a retention team gets: every customer scored and tiered, alerts raised, in the demo's own
    # store and score folder: re-running the demo starts its tiers and alerts afresh
    (out_dir / "diamond.db").unlink(missing_ok=True)
    serving = serving.model_copy(
        update={
            "store_url": f"sqlite:///{(out_dir / 'diamond.db').resolve()}",
            "scores_dir": str((out_dir / "scores").resolve()),
        }
    )
    holder = ChampionHolder(mlcfg, serving.model_alias)
    holder.refresh()
    if holder.current is None:
        raise ValueError(f"no champion to score with: {holder.last_error}")
    scored = score_history(history, end_of(history), holder.current, serving, mlcfg)
    progress(DEMO_STEPS[6])
    top = None
    if scored.alerts is not None:
        top = alert_store.list_alerts(store.engine(serving.store_url), status="live").head(5)
    return DemoRun(history_dir, history, backtested, trained, scored, top, serving)


def admin_identity(key: str | None, what: str, required: bool) -> tuple[str, str | None]:
    """Who runs an admin command from the CLI: the name and role of the API key `key` ($DIAMOND_API_KEY),
    checked against the service's keys ($DIAMOND_API_KEYS / $DIAMOND_API_KEY_FILE) and required to be
    admin; without a key, the login name (or $DIAMOND_USER) and no role, unless `required`. ValueError
    naming `what` otherwise."""
    from serving import access
    from training.registry import _who

    if not key:
        if required:
            raise ValueError(f"{what}: set ${access.CLI_KEY_ENV} to an admin's API key (it is audited)")
        return _who(), None
    found = access.KeyRing.from_env().match(key)
    if found is None:
        raise ValueError(f"{what}: ${access.CLI_KEY_ENV} is not an accepted API key")
    if not access.at_least(found.role, "admin"):
        raise ValueError(f"{what}: the key {found.name!r} has role {found.role}; this needs admin")
    return found.name, found.role


def forget_customers(store_url: str, customer_ids: list[str], key: str | None) -> Forgotten:
    """Erase these customers from the serving store (serving.erasure), as the admin whose API key is `key`
    (`admin_identity`, required: an erasure is always attributed to a key)."""
    from serving import erasure, store

    who, role = admin_identity(key, "customers forget", required=True)
    return erasure.forget(store.prepare(store.engine(store_url)), customer_ids, who, role, "cli")


def record_promotion(store_url: str, decision: Decision, who: str, role: str | None) -> None:
    """A `diamond promote` decision in the serving store's audit table (who, the version, the gate's reason,
    which says promoted, forced or refused)."""
    from serving import audit, store

    eng = store.prepare(store.engine(store_url))
    audit.record(eng, "promote", who, role, decision.challenger, "cli", decision.reason)


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write atomically: a failed run leaves any previous file intact."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


@dataclass(frozen=True)
class SimulationRun:
    """What `simulate` found (docs/effect.md, Simulation): per run and overall, the estimate of `diamond
    effect` beside the world's true effect, the uplift fits and gate decisions, and at a capacity of
    `top_k` alerts the true value saved by each ranking. Everything also in `out_dir/simulation.json`."""

    out_dir: Path
    runs: pd.DataFrame  # per scoring run: alerts, controls, worked, uplift version ranking them
    effect: pd.DataFrame  # `diamond effect` on the simulation's store (serving.effect.report)
    truth: pd.DataFrame  # per run and "(all)": estimate, interval, true incremental saves and value, within
    ranking: pd.DataFrame  # per run: top-k true saves and value by P x value, by uplift, by the oracle
    uplift: list[dict[str, Any]]  # per fit: both learners' Qini and AUUC, the version, the gate's reason


def simulate(
    out_dir: Path,
    customers: int,
    seed: int,
    periods: int,
    first: datetime,
    period_days: int,
    capacity: int | None,
    top_k: int | list[int],
    control_share: float | None,
    settings: EngineConfig,
    training: TrainingConfig,
    serving: ServingConfig,
    mlcfg: MlflowConfig,
    progress: Progress = _silent,
) -> SimulationRun:
    """The retention loop in a world whose effects are known (features/datasets/world.py), all in
    `out_dir` (its own history, serving store and MLflow store, started afresh): the world's history to
    `first` -> a churn model trained on it (horizon `period_days`) -> for each of `periods` runs `period_days`
    apart: `score` (the real batch run: alerts, controls) -> the uplift model refitted and gated once enough
    outcomes are mature -> the world acts on the treated alerts (all, or the `capacity` of highest priority)
    -> the history goes on. Then outcomes to the end of the last window, `effect`, and the truth."""
    import json

    import pandas as pd

    from features.datasets.world import ACTION_DELAY, World, actions_frame
    from features.history import load_history
    from serving import alert_store, control, simulation, store
    from serving import outcomes as outcome_store
    from serving.alert_rules import MODEL_ID
    from serving.champion import ChampionHolder
    from serving.effect import ALL, playbook_costs
    from serving.uplift_rank import priority
    from training import uplift
    from training.pipeline import train as run_train

    if serving.alerts is None:
        raise ValueError("simulate: the serving config has no alerts section: nothing would be acted on")
    times = simulation.schedule(first, periods, period_days)
    if control_share is not None and not 0.0 <= control_share < 1.0:
        raise ValueError(f"simulate: --control-share must be in [0, 1), got {control_share}")
    capacities = [top_k] if isinstance(top_k, int) else sorted(set(top_k))
    if (
        customers < 1
        or not capacities
        or min(capacities) < 1
        or (capacity is not None and capacity < 0)
        or period_days < 1
    ):
        raise ValueError(
            "simulate: --customers, --top-k and --period-days must be at least 1 and --capacity at least 0, "
            f"got {customers}, {capacities}, {period_days} and {capacity}"
        )
    out_dir = out_dir.absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("diamond.db", "mlflow.db", "simulation.json"):
        (out_dir / stale).unlink(missing_ok=True)
    alerts = serving.alerts
    if control_share is not None:
        alerts = alerts.model_copy(update={"control_share": control_share})
    serving = serving.model_copy(
        update={
            "store_url": f"sqlite:///{out_dir / 'diamond.db'}",
            "scores_dir": str(out_dir / "scores"),
            "alerts": alerts,
            "webhooks": serving.webhooks.model_copy(update={"endpoints": ()}),  # the world acts, nobody else
        }
    )
    mlcfg = mlcfg.model_copy(
        update={
            "tracking_uri": f"sqlite:///{out_dir / 'mlflow.db'}",
            "artifact_root": (out_dir / "mlartifacts").as_uri(),
        }
    )
    training = training.model_copy(update={"horizon_days": period_days, "label_horizon_days": period_days})
    world = World.draw(customers, seed)
    progress(f"draw a world of {customers:,} customers")
    data = out_dir / "history"
    actions = actions_frame([], [])
    world.write(data, actions, times[0])
    run_train(load_history(data), training, mlcfg, times[0])
    progress(f"train the churn model at {times[0]:%Y-%m-%d}")
    holder = ChampionHolder(mlcfg, serving.model_alias)
    holder.refresh()
    if holder.current is None:
        raise ValueError(f"simulate: no churn champion after training: {holder.last_error}")
    served = holder.current
    costs = playbook_costs(alerts, list(served.artefact.tiers), str(serving.file or "serving.yaml"))
    eng = store.engine(serving.store_url)
    inputs: dict[pd.Timestamp, pd.DataFrame] = {}
    potentials, run_rows, ranking, fits = [], [], [], []
    for i, t in enumerate(times):
        world.write(data, actions, t)
        run = score(settings, str(data), t, serving, mlcfg, None)
        assert isinstance(run, ScoreRun)
        scores = run.result.scores[
            ["customer_id", "churn_probability", "predicted_value", "value_at_risk", "tier"]
        ]
        rows = served.artefact.feature_rows(load_history(data), t).drop(columns=["cutoff"], errors="ignore")
        known = rows.merge(scores, on="customer_id", how="inner")
        inputs[pd.Timestamp(t)] = known
        known.to_parquet(out_dir / f"inputs_{t:%Y%m%d}.parquet", index=False)  # for a look afterwards
        alerted = alert_store.list_alerts(eng, status=None)
        alerted = alerted[
            (pd.to_datetime(alerted["opened_at"]) == pd.Timestamp(t)) & (alerted["customer_id"] != MODEL_ID)
        ]
        held = control.list_controls(eng)
        held = held[pd.to_datetime(held["opened_at"]) == pd.Timestamp(t)]
        episodes = pd.concat(
            [
                pd.DataFrame({"arm": "treated", "customer_id": alerted["customer_id"].astype(str)}),
                pd.DataFrame({"arm": "control", "customer_id": held["customer_id"].astype(str)}),
            ],
            ignore_index=True,
        ).drop_duplicates("customer_id")  # one action per customer and run, whatever the rule
        candidates = episodes.merge(known, on="customer_id", how="left").assign(opened_at=t)
        # the uplift model: refitted on the outcomes mature by now, judged on the latest mature run
        fitted = _simulated_uplift(
            eng, inputs, times[: i + 1], period_days, alerts.uplift, mlcfg, training.seed
        )
        if fitted is not None:
            fits.append(fitted)
            progress(f"uplift at {t:%Y-%m-%d}: {fitted['reason']}")
        champion = uplift.load_champion(mlcfg)
        model = champion[1] if champion is not None else None
        rank = priority(candidates, model, costs)  # the one place alerts are ranked (serving.uplift_rank)
        treated = candidates["arm"] == "treated"
        worked = treated.copy()
        if capacity is not None:
            order = rank[treated].sort_values(ascending=False, kind="stable").index[:capacity]
            worked[:] = False
            worked[order] = True
        when = t + ACTION_DELAY
        acted_ids = candidates.loc[worked, "customer_id"].tolist()
        actions = pd.concat([actions, actions_frame(acted_ids, [when] * len(acted_ids))], ignore_index=True)
        pot = simulation.potential_outcomes(
            world, actions, candidates[["customer_id", "opened_at"]], period_days
        )
        exp = simulation.expected_outcomes(
            world, actions, candidates[["customer_id", "opened_at"]], period_days
        )
        pot = pd.concat([pot, exp.drop(columns=["customer_id", "opened_at"])], axis=1)
        pot["acted"] = worked.to_numpy()
        pot["treated"] = treated.to_numpy()
        potentials.append(pot)
        rankings = {
            "p_x_value": candidates["value_at_risk"],
            "priority": rank,
            "oracle": pot["expected_effect_value"],  # the best any ranking could do, in expectation
        }
        for k in capacities:
            ranking.append(
                {
                    "as_of": t,
                    "k": k,
                    "candidates": len(candidates),
                    "uplift_version": champion[0] if champion is not None else None,
                    **{
                        f"{name}_{a}": b
                        for name, prio in rankings.items()
                        for a, b in simulation.top_k(pot, prio.reset_index(drop=True), k).items()
                        if a != "k"
                    },
                }
            )
        run_rows.append(
            {
                "as_of": t,
                "alerts": int(treated.sum()),
                "controls": int((~treated).sum()),
                "worked": int(worked.sum()),
                "ranked_by": f"uplift v{champion[0]}" if champion is not None else "p x value",
            }
        )
        progress(
            f"run {i + 1}/{len(times)} at {t:%Y-%m-%d}: "
            f"{int(treated.sum())} alerts, {int((~treated).sum())} controls"
        )
    # every outcome window complete: the history to the end of the last one, then the effect
    end = times[-1] + timedelta(days=period_days)
    world.write(data, actions, end)
    outcome_store.record(store.prepare(eng), load_history(data), period_days)
    table = effect(serving, True, mlcfg).table
    progress("outcomes and effect")
    pots = pd.concat(potentials, ignore_index=True)
    truth = []
    overall = table[(table["tier"] == ALL) & (table["scope"] == "cumulative")]
    per_run = table[(table["tier"] == ALL) & (table["scope"] == "run")]
    for label, est, mine in [
        (ALL, overall, pots),
        *[
            (
                f"{pd.Timestamp(r):%Y-%m-%d}",
                per_run[pd.to_datetime(per_run["run"]) == pd.Timestamp(r)],
                pots[pots["opened_at"] == r],
            )
            for r in times
        ],
    ]:
        real = simulation.true_effect(mine, mine["acted"])
        row = est.iloc[0] if len(est) else None
        lo = float(row["incremental_saved_low"]) if row is not None else float("nan")
        hi = float(row["incremental_saved_high"]) if row is not None else float("nan")
        truth.append(
            {
                "run": label,
                "treated": int(row["treated"]) if row is not None else 0,
                "control": int(row["control"]) if row is not None else 0,
                "estimated_saved": float(row["incremental_saved"]) if row is not None else float("nan"),
                "estimated_low": lo,
                "estimated_high": hi,
                "true_saved": real["incremental_saved"],
                "saved_within": simulation.within(0.0, lo, hi, real["incremental_saved"]),
                "estimated_value": float(row["incremental_value"]) if row is not None else float("nan"),
                "estimated_value_low": float(row["incremental_value_low"])
                if row is not None
                else float("nan"),
                "estimated_value_high": float(row["incremental_value_high"])
                if row is not None
                else float("nan"),
                "true_value": real["incremental_value"],
            }
        )
    result = SimulationRun(
        out_dir, pd.DataFrame(run_rows), table, pd.DataFrame(truth), pd.DataFrame(ranking), fits
    )
    summary = {
        "customers": customers,
        "seed": seed,
        "periods": periods,
        "period_days": period_days,
        "capacity": capacity,
        "top_k": capacities,
        "runs": json.loads(result.runs.to_json(orient="records", date_format="iso")),
        "truth": json.loads(result.truth.to_json(orient="records", date_format="iso")),
        "ranking": json.loads(result.ranking.to_json(orient="records", date_format="iso")),
        "uplift": json.loads(pd.DataFrame(fits).to_json(orient="records", date_format="iso")) if fits else [],
    }
    (out_dir / "simulation.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    pots.to_parquet(out_dir / "potential_outcomes.parquet", index=False)
    return result


def _simulated_uplift(
    eng: Any,
    inputs: dict[Any, pd.DataFrame],
    times: list[datetime],
    horizon_days: int,
    config: Any,
    mlcfg: MlflowConfig,
    seed: int,
) -> dict[str, Any] | None:
    """`fit_uplift` on the outcomes mature at times[-1], with the inputs the simulation kept per run."""
    import pandas as pd

    from serving import outcomes as outcome_store

    found = fit_uplift(uplift_frame(outcome_store.read(eng), inputs), config, mlcfg, seed)
    if found is not None:
        found["as_of"] = f"{pd.Timestamp(times[-1]):%Y-%m-%d}"
    return found


def fit_uplift(frame: pd.DataFrame, config: Any, mlcfg: MlflowConfig, seed: int) -> dict[str, Any] | None:
    """Fit both learners (`alerts.uplift`: outcome, params, shrinkage) on the mature outcomes of every run
    but the latest mature one (`frame`, uplift_frame), judge them on that run's (later) outcomes, log and
    register the configured learner and gate it (training.uplift.decide). None while fewer than
    `config.min_outcomes` outcomes are there to learn from (or an arm has too few)."""
    import pandas as pd

    from training import uplift

    if frame.empty:
        return None
    mature_runs = sorted(frame["opened_at"].unique())
    if len(mature_runs) < 2:
        return None
    latest = mature_runs[-1]
    learn, judge = frame[frame["opened_at"] < latest], frame[frame["opened_at"] == latest]
    if len(learn) < config.min_outcomes:
        return None
    options = {
        "outcome": config.outcome,
        "prior_outcomes": config.prior_outcomes,
        "params": dict(config.params),
        "rounds": config.rounds,
    }
    try:
        models = {name: uplift.fit(learn, name, seed, **options) for name in uplift.LEARNERS}
    except ValueError:
        return None  # an arm too small to learn from
    scores = {name: uplift.evaluate(m, judge) for name, m in models.items()}
    metrics = {f"{name}_{k}": v for name, s in scores.items() for k, v in s.items()}
    metrics.update(scores[config.learner])
    logged = uplift.log(
        mlcfg,
        models[config.learner],
        metrics,
        {
            "learned_until": f"{pd.Timestamp(latest):%Y-%m-%d}",
            "judged_on": f"{pd.Timestamp(latest):%Y-%m-%d}",
        },
    )
    decision = uplift.decide(mlcfg, logged.version, judge, config.min_qini_gain)
    return {
        "as_of": f"{pd.Timestamp(latest):%Y-%m-%d}",
        "learned_from": len(learn),
        "judged_on": len(judge),
        "version": logged.version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        **{k: round(float(v), 5) for k, v in metrics.items()},
        **{k: round(float(v), 5) for k, v in decision.scores.items() if k.startswith("p_x_value_")},
    }


def uplift(
    data: str, serving: ServingConfig, mlcfg: MlflowConfig, seed: int = 0, progress: Progress = _silent
) -> dict[str, Any] | None:
    """`diamond uplift`: fit the uplift model from the production store's outcomes (treated alerts and
    controls of `diamond score` runs, as recorded by `diamond score`/`diamond outcomes`) and register
    `<registered_model>-uplift` through the gate (`fit_uplift`). Each opening run's inputs are rebuilt:
    the run's scores from its Parquet table (churn probability, predicted value, value at risk, tier as
    served then) joined to the served model's feature rows at that run's as_of from the history in `data`
    (point-in-time: nothing after the run enters). None (nothing registered) while too few outcomes are
    mature. ValueError when the alerts section is off or a run's score table is missing."""
    import pandas as pd

    from features.history import load_history
    from serving import outcomes as outcome_store
    from serving import runs, store
    from serving.champion import ChampionHolder

    if serving.alerts is None:
        raise ValueError(
            "uplift: the serving config has no alerts section: there are no outcomes to learn from"
        )
    holder = ChampionHolder(mlcfg, serving.model_alias)
    holder.refresh()
    if holder.current is None:
        raise ValueError(
            f"uplift: no model behind {holder.uri}: {holder.last_error} (run `diamond train` first)"
        )
    art = holder.current.artefact
    eng = store.prepare(store.engine(serving.store_url))
    stored = outcome_store.read(eng)
    done = stored[stored["mature"].astype(bool) & (stored["outcome"] != "pending")]
    progress(f"{len(done):,} mature outcomes")
    if done.empty:
        return None
    listed = runs.list_runs(eng)
    tables = {pd.Timestamp(r["as_of"]): r["parquet"] for r in listed.to_dict("records")}
    history = load_history(data)
    inputs: dict[Any, pd.DataFrame] = {}
    for when in sorted(pd.to_datetime(done["opened_at"]).unique()):
        t = pd.Timestamp(when)
        path = tables.get(t)
        if path is None or not Path(str(path)).exists():
            raise ValueError(
                f"uplift: the score table of the run at {t:%Y-%m-%d %H:%M:%S} is missing ({path}); "
                "its alerts' inputs cannot be rebuilt"
            )
        scores = pd.read_parquet(
            path, columns=["customer_id", "churn_probability", "predicted_value", "value_at_risk", "tier"]
        )
        rows = art.feature_rows(history, t.to_pydatetime()).drop(columns=["cutoff"], errors="ignore")
        inputs[t] = rows.merge(scores, on="customer_id", how="inner")
        progress(f"inputs of the run at {t:%Y-%m-%d}")
    return fit_uplift(uplift_frame(stored, inputs), serving.alerts.uplift, mlcfg, seed)


def uplift_frame(stored: pd.DataFrame, inputs: dict[Any, pd.DataFrame]) -> pd.DataFrame:
    """Mature outcomes (serving.outcomes.read) joined to the inputs of their opening run (by as_of and
    customer): treated, saved, value_after, opened_at and every input column. Episodes of runs without
    inputs are left out."""
    import pandas as pd

    done = stored[stored["mature"].astype(bool) & (stored["outcome"] != "pending")]
    parts = []
    for when, rows in done.groupby(pd.to_datetime(done["opened_at"])):
        known = inputs.get(pd.Timestamp(when))
        if known is None:
            continue
        part = rows[["customer_id", "arm", "outcome", "value_after"]].drop_duplicates("customer_id")
        part = part.merge(known, on="customer_id", how="inner")
        parts.append(
            part.assign(
                opened_at=pd.Timestamp(when),
                treated=part["arm"] == "treated",
                saved=(part["outcome"] == "saved").astype(int),
            ).drop(columns=["outcome"])
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
