"""The `diamond` command: each subcommand parses its options, loads the config, calls one flow (diamond.flows)
or one library function, and prints what came back. What runs in which order lives in diamond.flows."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from diamond import flows

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from serving.batch import BatchResult
    from serving.config import ServingConfig
    from serving.monitoring import DriftResult
    from serving.outcomes import Recorded
    from training.artefact import ScoringArtefact
    from training.pipeline import TrainResult
    from training.tracking import MlflowConfig

app = typer.Typer(
    help="Diamond: churn risk and customer value from CRM history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Bundled and synthetic histories; validate a history folder.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
features_app = typer.Typer(help="Point-in-time feature rows and training sets.", no_args_is_help=True)
app.add_typer(features_app, name="features")
alerts_app = typer.Typer(help="Retention alerts: list, export, acknowledge, deliver.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")

# markup off: data (ids, values, file and column names) is printed as it is, never read as Rich markup (a
# value "[/x]" once crashed every message that quoted it); styled words are Text with a style
console = Console(stderr=True, markup=False)
out = Console(markup=False)


def _styled(label: str, style: str, rest: str = "") -> Text:
    """`label` in `style`, then `rest` as plain text."""
    return Text.assemble((label, style), rest)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Known bad input becomes a clear message and exit code 2, never a traceback."""
    from sqlalchemy.exc import OperationalError

    from core.config import ConfigError
    from features.history import HistoryError
    from features.sets import FeatureSetError

    try:
        yield
    except (
        HistoryError,
        ConfigError,
        FeatureSetError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        _error(str(exc))
    except OperationalError as exc:  # a store that turned read-only, full or unreachable mid-command
        _error(
            f"the store cannot be written or read ({exc.orig}); each step of a run is one transaction: "
            "run the command again once the store is writable (`diamond runs` lists and undoes runs)"
        )
    except OSError as exc:  # a full disk or a read-only folder for a file the command writes
        _error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))


def _error(message: str) -> NoReturn:
    console.print(_styled("error:", "bold red", f" {message}"), highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None


@contextmanager
def _progress(total: int | None, label: str) -> Iterator[Callable[[str], None]]:
    """A progress bar over named stages (total None: count unknown); yields `advance(stage_name)`."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=total)

        def advance(stage: str) -> None:
            bar.update(task, advance=1, description=f"{label}: {stage}")

        yield advance
        bar.update(task, total=total or bar.tasks[0].completed, description=f"{label}: done")
        bar.update(task, completed=bar.tasks[0].total)


def _parse_time(value: str | None) -> datetime | None:
    from features.config import parse_as_of

    return parse_as_of(value, "--as-of")


def _print_summary(summary: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        shown = (
            f"{value:,}"
            if isinstance(value, int)
            else f"{value:,.2f}"
            if isinstance(value, float)
            else str(value)
        )
        table.add_row(key, shown)
    out.print(table)


@app.callback()
def main() -> None:
    """Diamond: churn risk and customer value from CRM history."""
    from core.memory import keep_freed_memory

    keep_freed_memory()  # every command is a run that ends: what it frees, it reuses (core.memory)


@data_app.command("cdnow")
def data_cdnow(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the history into.")],
    overwrite: Annotated[bool, typer.Option(help="Replace the folder if it exists.")] = False,
) -> None:
    """Write the bundled CDNOW history (real data, 23,570 customers) as a history folder."""
    from features.datasets import cdnow

    with _user_errors():
        path = cdnow.write(out_dir, overwrite=overwrite)
    out.print(f"CDNOW history written to {path}")


@data_app.command("synthetic")
def data_synthetic(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the history into.")],
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same history.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace the folder if it exists.")] = False,
) -> None:
    """Write a synthetic history with all four tables and each customer's true churn time (truth.parquet)."""
    from features.datasets import synthetic

    with _user_errors(), _progress(None, "synthetic") as advance:
        counts = synthetic.write(out_dir, customers, seed, progress=advance, overwrite=overwrite)
    out.print(
        f"synthetic history written to {out_dir}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )


@data_app.command("validate")
def data_validate(
    folder: Annotated[Path, typer.Argument(help="History folder.")],
    config: Annotated[
        Path | None, typer.Option(help="Dataset config (default: FOLDER/dataset.yaml).")
    ] = None,
    as_of: Annotated[str | None, typer.Option(help="Declared as-of date; later events are invalid.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Load and validate a history folder; print its summary, or every problem found."""
    from features.config import DatasetConfig
    from features.history import load_history

    with _user_errors():
        cfg = DatasetConfig.from_yaml(config) if config else None
        history = load_history(folder, cfg, _parse_time(as_of))
    summary = history.summary()
    if as_json:
        out.print_json(json.dumps(summary, default=str))
        return
    _print_summary(summary, f"history {folder}")
    for problem in history.report.dropped:
        console.print(_styled("dropped:", "yellow", f" {problem}"), highlight=False)
    for table, columns in history.report.ignored_columns.items():
        ignored = f" {table}: columns not in the contract: {', '.join(columns)}"
        console.print(_styled("ignored:", "yellow", ignored), highlight=False)


@features_app.command("build")
def features_build(
    data: Annotated[str, typer.Option("--data", help="History folder (with Spark: any path Spark reads).")],
    out_file: Annotated[
        str, typer.Option("--out", help="Parquet file to write (with Spark: a folder, one part per cutoff).")
    ],
    cutoffs: Annotated[
        str | None,
        typer.Option(help="Comma-separated cutoffs (a date means the end of that day); default: monthly."),
    ] = None,
    horizon: Annotated[str, typer.Option(help="Label horizon, e.g. 90d or 13w.")] = "90d",
    feature_set: Annotated[str, typer.Option(help="Versioned feature set, e.g. core_v1.")] = "core_v1",
    labels: Annotated[bool, typer.Option(help="Attach churned and future_value (training sets).")] = True,
    as_of: Annotated[str | None, typer.Option(help="Declared as-of date of the history.")] = None,
    engine: Annotated[str | None, typer.Option(help="duckdb | spark (default: engine.yaml).")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Training config whose `value:` the labels follow (default: training.yaml)."),
    ] = None,
) -> None:
    """Build feature rows (and labels) for every eligible customer at each cutoff; write Parquet."""
    from features.build import parse_cutoff, parse_horizon
    from features.engine import EngineConfig
    from training.config import TrainingConfig

    with _user_errors():
        settings = EngineConfig.load(engine=engine)
        value = TrainingConfig.load(config).value.spec() if labels else None
    on_spark = settings.engine == "spark"
    steps = None if on_spark else len(flows.FEATURE_STEPS)  # Spark: the count is not known ahead
    with _user_errors(), _progress(steps, "features on spark" if on_spark else "features") as advance:
        cuts = [parse_cutoff(c) for c in cutoffs.split(",") if c.strip()] if cutoffs else None
        built = flows.build_features(
            settings,
            data,
            out_file,
            cuts,
            parse_horizon(horizon),
            feature_set,
            labels,
            _parse_time(as_of),
            advance,
            value,
        )
    where = " on Spark" if on_spark else ""
    _print_summary(built.summary, f"{feature_set} at {built.cutoffs} cutoff(s){where} -> {out_file}")


@features_app.command("list")
def features_list(
    feature_set: Annotated[str | None, typer.Option(help="Only the features of this set.")] = None,
) -> None:
    """List the registered features (name, family, source, description) and the feature sets."""
    from features.definitions import REGISTRY
    from features.sets import FEATURE_SETS, get_feature_set

    with _user_errors():
        names = get_feature_set(feature_set).features if feature_set else tuple(REGISTRY)
    table = Table("feature", "family", "source", "description")
    for name in names:
        f = REGISTRY[name]
        table.add_row(f.name, f.family, f.source, f.description)
    out.print(table)
    for fs in FEATURE_SETS.values():
        extra = " + every customer attribute" if fs.attributes else ""
        out.print(f"{fs.key}: {len(fs.features)} features{extra}. {fs.description}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the demo's results.")] = Path(
        "demo-output"
    ),
    config: Annotated[Path | None, typer.Option(help="Training config (default: training.yaml).")] = None,
) -> None:
    """Run the whole product end to end on the bundled CDNOW data and say where the results are."""
    from serving.config import ServingConfig
    from training import tracking
    from training.config import TrainingConfig

    with _user_errors(), _progress(len(flows.DEMO_STEPS), "demo") as advance:
        cfg, mlcfg = TrainingConfig.load(config), tracking.MlflowConfig.load()
        run = flows.demo(out_dir, cfg, mlcfg, ServingConfig.load(), advance)
    _print_summary(run.history.summary(), "CDNOW history")
    out.print(
        _styled("\nThe classic CDNOW protocol", "bold", " (train <= 1997-09-30, score the next 39 weeks):")
    )
    _print_backtest(run.backtest)
    out.print(_styled("\nTrained on all the data", "bold", " (to 1998-06-30):"))
    _print_training(run.trained, mlcfg)
    _print_alerts(run.scored, run.top_alerts)
    _print_drift(run.scored.drift)
    out.print("\nResults:")
    out.print(f"  history folder : {run.history_dir.resolve()}")
    out.print(f"  score table    : {run.scored.parquet}")
    out.print(f"  predictions    : {run.backtest.predictions.resolve()}")
    out.print(f"  MLflow UI      : {mlcfg.ui_command()}  (then open http://127.0.0.1:5000)")
    out.print(
        f"  dashboard      : DIAMOND_STORE_URL={run.serving.store_url} DIAMOND_API_KEYS=change-me "
        f"diamond serve  (then open http://127.0.0.1:{run.serving.port}/ui/ and sign in with change-me)"
    )


def _print_alerts(scored: BatchResult, top: pd.DataFrame | None) -> None:
    """The tier counts, then the top alerts (None: alerts off)."""
    counts = scored.scores["tier"].value_counts()
    scored_line = (
        f" {len(scored.scores):,} customers as of {scored.as_of:%Y-%m-%d} (version {scored.version}): "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )
    out.print(_styled("\nScored", "bold", scored_line))
    if scored.alerts is None or top is None:
        return
    table = Table("customer", "tier", "P(churn)", "at risk", "why (top reason)", "playbook")
    for r in top.to_dict("records"):
        why = str(r["reasons"][0]) if r["reasons"] else ""
        table.add_row(
            str(r["customer_id"]),
            r["tier"],
            f"{r['churn_probability']:.2f}",
            f"{r['value_at_risk']:,.0f}",
            why,
            r["playbook"] or "",
        )
    a = scored.alerts
    queue = f", {a.queued:,} queued, {a.entered:,} entered from the queue" if a.queued + a.entered else ""
    out.print(f"retention alerts: {a.opened:,} opened{queue}; the five with the highest priority:")
    out.print(table)


@app.command()
def backtest(
    data: Annotated[Path, typer.Option("--data", help="History folder.")],
    out_file: Annotated[
        Path, typer.Option("--out", help="Parquet file for the predictions (with --rolling: all of them).")
    ],
    cutoff: Annotated[
        list[str] | None,
        typer.Option(
            help="Train with data at or before this time; predict from it. With --rolling: repeat for "
            "several (default: every quarter end with complete labels)."
        ),
    ] = None,
    horizon: Annotated[
        list[str] | None,
        typer.Option(
            help="Prediction horizon, e.g. 273d or 39w. With --rolling: repeat for several "
            "(default: rolling.horizons_days in training.yaml)."
        ),
    ] = None,
    rolling: Annotated[
        bool,
        typer.Option(
            "--rolling", help="Backtest at several cutoffs and horizons; report each and the worst."
        ),
    ] = False,
    config: Annotated[Path | None, typer.Option(help="Training config (default: training.yaml).")] = None,
    track: Annotated[bool, typer.Option(help="Log the run (and holdout metrics) to MLflow.")] = True,
) -> None:
    """Train on data <= cutoff, predict every eligible customer, and score against what happened next."""
    from training import tracking
    from training.config import TrainingConfig

    with _user_errors():
        if not rolling and (len(cutoff or []) != 1 or len(horizon or []) != 1):
            raise ValueError("backtest needs one --cutoff and one --horizon (or --rolling for several)")
    with _user_errors(), _progress(None, "rolling backtest" if rolling else "backtest") as advance:
        cfg = TrainingConfig.load(config)
        mlcfg = tracking.MlflowConfig.load() if track else None
        run: flows.RollingRun | flows.BacktestRun
        if rolling:
            run = flows.rolling_backtest(data, cutoff, horizon, cfg, out_file, mlcfg, advance)
        else:
            assert cutoff and horizon
            run = flows.backtest(data, cutoff[0], horizon[0], cfg, out_file, mlcfg, advance)
    if isinstance(run, flows.RollingRun):
        _print_rolling(run)
    else:
        _print_backtest(run)


ROLLING_COLUMNS = {  # summary column -> (heading, format)
    "churn_auc": ("AUC", ".4f"),
    "churn_brier": ("Brier", ".4f"),
    "churn_rate": ("churn rate", ".3f"),
    "churn_mean_probability": ("mean P", ".3f"),
    "value_gini": ("Gini", ".4f"),
    "value_aggregate_error": ("aggregate", "+.1%"),
    "value_decile_mape": ("decile MAPE", ".3f"),
}


def _print_rolling(run: flows.RollingRun) -> None:
    """One row per (horizon, cutoff), then the worst value of each metric and where it happened."""
    import math

    table = Table("horizon", "cutoff", "customers", *(h for h, _ in ROLLING_COLUMNS.values()), "parity flags")
    for r in run.summary.to_dict("records"):
        cells = [
            "not yet known" if not r["scored"] or math.isnan(r[k]) else format(r[k], spec)
            for k, (_, spec) in ROLLING_COLUMNS.items()
        ]
        flags = "—" if r["parity_flags"] is None or not r["scored"] else str(int(r["parity_flags"]))
        table.add_row(
            f"{r['horizon_days']}d", f"{r['cutoff']:%Y-%m-%d}", f"{r['customers']:,}", *cells, flags
        )
    out.print(table)
    if run.worst:
        out.print("worst over the scored backtests:")
        for metric, w in run.worst.items():
            heading, spec = ROLLING_COLUMNS[metric]
            where = f"{w['horizon_days']}d at {w['cutoff']:%Y-%m-%d}"
            out.print(f"  {heading:<12} {format(w['value'], spec):>8}  ({where})")
    else:
        out.print("no backtest could be scored: the history ends before every cutoff + horizon")
    out.print(f"predictions: {run.predictions.resolve()} ({len(run.summary)} backtests)")
    if run.run_id:
        out.print(f"MLflow run {run.run_id} (each backtest a nested run under it)")


def _labels(art: ScoringArtefact) -> str:
    """What the boosters learned: h-day labels mapped to H (the churn model's own H-day labels said), or
    H-day labels (both models learned the target horizon itself)."""
    if art.label_horizon_days >= art.horizon_days:
        return f"{art.horizon_days}-day labels"
    days = art.churn.label_days
    churn = f" (churn on {days}-day labels)" if days is not None else ""
    return f"{art.label_horizon_days}-day labels mapped to {art.horizon_days} days{churn}"


def _print_backtest(run: flows.BacktestRun) -> None:
    result = run.result
    trained, art = result.trained, result.trained.artefact
    out.print(
        f"trained at {len(trained.origins)} origins "
        f"({', '.join(f'{o:%Y-%m-%d}' for o in trained.origins)}) on {trained.training_rows:,} rows, "
        f"{_labels(art)}, feature set {art.feature_set}, value {art.value.describe()}; "
        + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in trained.seconds.items())
    )
    if result.metrics:
        shown = {m: values for m, values in result.metrics.items() if m != "by_model"}
        names = sorted({k for m in shown.values() for k in m if "total" not in k})
        table = Table("metric", *shown)
        for name in names:
            cells = [shown[m].get(name) for m in shown]
            table.add_row(name, *("—" if v is None else f"{v:.4f}" for v in cells))
        out.print(table)
        for key, v in result.metrics.get("by_model", {}).items():  # which churn model scored whom
            out.print(f"{key}: {'—' if v is None else f'{v:.4f}'}")
    else:
        out.print("the history ends before cutoff + horizon: predictions only, nothing to score")
    out.print(f"predictions: {run.predictions.resolve()} ({len(result.predictions):,} customers)")
    if run.run_id:
        out.print(f"MLflow run {run.run_id}")


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="History folder.")],
    cutoff: Annotated[
        str | None, typer.Option(help="Train with data at or before this time (default: the history's end).")
    ] = None,
    horizon: Annotated[str | None, typer.Option(help="Prediction horizon (default: training.yaml).")] = None,
    config: Annotated[Path | None, typer.Option(help="Training config (default: training.yaml).")] = None,
) -> None:
    """Features -> tune -> fit -> log to MLflow -> register a challenger -> promotion gate."""
    from features.build import parse_horizon
    from training import tracking
    from training.config import TrainingConfig

    with _user_errors(), _progress(None, "train") as advance:
        cfg = TrainingConfig.load(config)
        if horizon:
            cfg = cfg.model_copy(update={"horizon_days": parse_horizon(horizon)})
        mlcfg = tracking.MlflowConfig.load()
        result = flows.train(data, cfg, mlcfg, cutoff, advance)
    _print_training(result, mlcfg)


def _print_training(result: TrainResult, mlcfg: MlflowConfig) -> None:
    trained, art, d = result.trained, result.trained.artefact, result.decision
    out.print(
        f"trained at {art.cutoff:%Y-%m-%d} on {trained.training_rows:,} rows "
        f"({len(trained.origins)} origins, {_labels(art)}), "
        f"feature set {art.feature_set}, value target: {art.value_target.target}, value "
        f"{art.value.describe()}; "
        + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in trained.seconds.items())
    )
    table = Table("validation (latest origin)", "model", "RFM rank", "BG/NBD")
    v = trained.validation
    table.add_row(
        "churn ROC-AUC",
        *(f"{v[k]:.4f}" for k in ("churn_auc", "baseline_rfm_churn_auc", "baseline_bgnbd_churn_auc")),
    )
    table.add_row(
        "value Gini",
        *(f"{v[k]:.4f}" for k in ("value_gini", "baseline_rfm_value_gini", "baseline_bgnbd_value_gini")),
    )
    table.add_row("churn Brier", f"{v['churn_brier']:.4f}", "—", "—")
    out.print(table)
    out.print(
        f"tiers (predicted value over {art.horizon_days} days): "
        + ", ".join(f"{k} >= {x:,.2f}" for k, x in art.tiers.items())
    )
    out.print(
        f"MLflow run {result.logged.run_id}, "
        f"registered {mlcfg.registered_model} version {result.logged.version}"
    )
    out.print(f"gate: {d.reason}")
    out.print(f"look at it: {mlcfg.ui_command()}")


@app.command()
def retrain(
    data: Annotated[Path, typer.Option("--data", help="History folder to train on.")],
    force: Annotated[bool, typer.Option(help="Train even without drift or schedule.")] = False,
    cutoff: Annotated[
        str | None, typer.Option(help="Train with data at or before this time (default: the history's end).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Training config (default: training.yaml).")] = None,
) -> None:
    """Retrain when drift or the schedule says so (or --force): a challenger, gated. Cron-safe: one at a
    time (a second run exits 0 saying who holds the lock), and never twice on the same data for one reason."""
    from serving.config import ServingConfig
    from training.config import TrainingConfig
    from training.retrain import Busy
    from training.tracking import MlflowConfig

    with _user_errors():
        cfg, mlcfg = TrainingConfig.load(config), MlflowConfig.load()
        try:
            outcome = flows.retrain(data, cfg, mlcfg, ServingConfig.load().store_url, force, cutoff)
        except Busy as busy:
            out.print(str(busy))
            return
    out.print(outcome.message)
    if outcome.result is not None:  # trained
        _print_training(outcome.result, mlcfg)


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a training or backtest run.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="HTML file to write (default: report_RUN_ID.html).")
    ] = None,
) -> None:
    """Write the model report of a run: one self-contained HTML page built from MLflow."""
    from training import report as model_report
    from training.tracking import MlflowConfig

    with _user_errors():
        target = model_report.write(MlflowConfig.load(), run_id, out_file or Path(f"report_{run_id}.html"))
    out.print(f"model report of run {run_id}: {target.resolve()}")


@app.command()
def promote(
    version: Annotated[str, typer.Option(help="Registered version to promote to champion.")],
    data: Annotated[Path, typer.Option("--data", help="History folder for the validation window.")],
    cutoff: Annotated[
        str | None, typer.Option(help="Window as of this time (default: the history's end).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Promote even if the gate refuses (logged as forced).")] = False,
    note: Annotated[str, typer.Option(help="Why (kept in the promotion log).")] = "",
    config: Annotated[Path | None, typer.Option(help="Training config (default: training.yaml).")] = None,
) -> None:
    """Apply the promotion gate to a registered version against the champion (or force it); the decision
    also goes to the serving store's audit table, under the name of the admin key in $DIAMOND_API_KEY if
    set (any other role is refused), else the login name."""
    import os

    from features.build import parse_cutoff
    from serving.access import CLI_KEY_ENV
    from serving.config import ServingConfig
    from training import tracking
    from training.config import TrainingConfig

    with _user_errors():
        cfg, mlcfg = TrainingConfig.load(config), tracking.MlflowConfig.load()
        who, role = flows.admin_identity(os.environ.get(CLI_KEY_ENV), "promote", required=False)
        t = parse_cutoff(cutoff) if cutoff else None
        decision = flows.promote(data, version, cfg, mlcfg, t, force, note)
        flows.record_promotion(ServingConfig.load().store_url, decision, who, role)
    out.print(decision.reason)
    if not decision.promoted and decision.champion != version:  # refused (already champion is fine)
        raise typer.Exit(1)


@app.command()
def score(
    data: Annotated[str, typer.Option("--data", help="History folder (with Spark: any path Spark reads).")],
    as_of: Annotated[
        str | None, typer.Option(help="Score as of this time (default: the history's end).")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="duckdb | spark (default: engine.yaml).")] = None,
    out_dir: Annotated[
        str | None,
        typer.Option("--out", help="Spark only: score table folder (default: <scores_dir>/spark)."),
    ] = None,
) -> None:
    """Score every eligible customer with the champion: a Parquet score table and the service's snapshot."""
    from features.build import parse_cutoff
    from features.engine import EngineConfig
    from serving.config import ServingConfig
    from training.tracking import MlflowConfig

    with _user_errors(), _progress(None, "score") as advance:
        settings = EngineConfig.load(engine=engine)
        config, mlcfg = ServingConfig.load(), MlflowConfig.load()
        t = parse_cutoff(as_of) if as_of else None
        run = flows.score(settings, data, t, config, mlcfg, out_dir, advance)
    if isinstance(run, flows.SparkScoreRun):
        done = run.result
        out.print(
            f"scored {done.customers:,} customers as of {run.as_of:%Y-%m-%d %H:%M} with version "
            f"{done.version} on Spark; "
            + ", ".join(f"{k} {done.tiers.get(k, 0):,}" for k in run.tiers)
            + " (raw tiers: hysteresis, alerts and the service snapshot run on the single-machine path)"
        )
        out.print(f"score table: {done.path}/as_of_date={run.as_of:%Y-%m-%d}")
        return
    result = run.result
    counts = result.scores["tier"].value_counts()
    out.print(
        f"scored {len(result.scores):,} customers as of {run.as_of:%Y-%m-%d %H:%M} with version "
        f"{result.version} (value: {run.value}); "
        + ", ".join(f"{k} {counts.get(k, 0):,}" for k in run.tiers)
        + f" ({int((result.scores['tier'] != result.scores['tier_raw']).sum()):,} held by hysteresis)"
    )
    if result.alerts is not None:
        a = result.alerts
        out.print(
            f"alerts: {a.opened:,} opened, {a.updated:,} updated, {a.resolved:,} resolved, "
            f"{len(a.notify):,} to notify"
        )
    _print_outcomes(run.outcomes)
    _print_drift(result.drift)
    if result.delivery is not None:
        d = result.delivery
        out.print(f"webhooks: {d.delivered:,} delivered, {d.retried:,} to retry, {d.dead:,} dead")
    out.print(f"score table: {result.parquet}")
    out.print(f"snapshot for the service: {config.store_url}")


def _print_drift(found: DriftResult | None) -> None:
    if found is None:
        out.print("drift: not measured (watch off, or the model ships no drift reference)")
        return
    a = found.assessment
    worst, top = a.worst
    line = f"drift: max PSI {top:.3f} ({worst}), {len(a.over)} column(s) over the threshold"
    if a.alert:
        out.print(Text.assemble(f"{line}; ", ("model-health alert", "bold red"), ": " + "; ".join(a.reasons)))
    else:
        out.print(f"{line}; no model-health alert" + (" (resolved)" if found.alerts.resolved else ""))


def _alert_store() -> tuple[ServingConfig, sa.Engine]:
    from serving import store
    from serving.config import ServingConfig

    config = ServingConfig.load()
    return config, store.prepare(store.engine(config.store_url))


@alerts_app.command("list")
def alerts_list(
    status: Annotated[
        str, typer.Option(help="open | acknowledged | snoozed | resolved | live | all")
    ] = "live",
    tier: Annotated[str | None, typer.Option(help="Only this tier.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, highest value at risk first.")] = 50,
) -> None:
    """Alerts ranked by value at risk."""
    from serving import alert_rules, alert_store

    with _user_errors():
        _, eng = _alert_store()
        rows = alert_store.list_alerts(eng, status=None if status == "all" else status, tier=tier)
    table = Table(
        "id", "customer", "kind", "status", "tier", "P(churn)", "value", "at risk", "due", "playbook"
    )
    model = rows["customer_id"] == alert_rules.MODEL_ID  # model-health alerts first: they concern every score
    for r in [*rows[model].to_dict("records"), *rows[~model].head(limit).to_dict("records")]:
        if r["customer_id"] == alert_rules.MODEL_ID:
            blank = [""] * 5
            table.add_row(str(r["id"]), "(the model)", r["kind"], r["status"], *blank, r["playbook"])
            table.add_row("", "", "", "", *blank, "; ".join(r["reasons"]))
            continue
        table.add_row(
            str(r["id"]),
            str(r["customer_id"]),
            r["kind"],
            r["status"],
            r["tier"],
            f"{r['churn_probability']:.2f}",
            f"{r['predicted_value']:,.2f}",
            f"{r['value_at_risk']:,.2f}",
            str(r["due_at"])[:16],
            r["playbook"] or "",
        )
    out.print(table)
    out.print(f"{len(rows):,} {status} alert(s)")


@alerts_app.command("export")
def alerts_export(
    path: Annotated[Path, typer.Argument(help="File to write: .csv or .json.")],
    status: Annotated[
        str, typer.Option(help="open | acknowledged | snoozed | resolved | live | all")
    ] = "live",
    pseudonymise: Annotated[
        bool,
        typer.Option(
            help="Replace customer ids by a keyed hash (HMAC-SHA256, key from $DIAMOND_EXPORT_KEY): the same "
            "customer gets the same pseudonym in every export with that key."
        ),
    ] = False,
) -> None:
    """Write alerts to CSV or JSON (by the file's extension). CSV cells that a spreadsheet would run as a
    formula (starting with = + - @) are written with a leading apostrophe."""
    import os

    from serving import alert_store

    with _user_errors():
        key = None
        if pseudonymise:
            key = os.environ.get(alert_store.EXPORT_KEY_ENV, "")
            if len(key) < 16:
                raise ValueError(
                    f"--pseudonymise needs a key of at least 16 characters in ${alert_store.EXPORT_KEY_ENV}"
                )
        _, eng = _alert_store()
        n = alert_store.export_alerts(
            eng, path, status=None if status == "all" else status, key=key.encode() if key else None
        )
    out.print(f"{n:,} alert(s) written to {path.resolve()}" + (" (ids pseudonymised)" if key else ""))


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[int, typer.Argument(help="Alert id (from `diamond alerts list`).")],
    who: Annotated[
        str | None, typer.Option(help="Who takes it (default: $DIAMOND_USER or the login name).")
    ] = None,
) -> None:
    """Acknowledge an alert: someone owns it now."""
    from serving import alert_store
    from training.registry import _who

    with _user_errors():
        _, eng = _alert_store()
        row = alert_store.acknowledge(eng, alert_id, who or _who())
    out.print(f"alert {alert_id} acknowledged by {row.get('owner') or who}")


@alerts_app.command("resolve")
def alerts_resolve(
    alert_id: Annotated[int, typer.Argument(help="Alert id (from `diamond alerts list`).")],
    who: Annotated[
        str | None, typer.Option(help="Who resolves it (default: $DIAMOND_USER or the login name).")
    ] = None,
) -> None:
    """Resolve an alert by hand; with capacity queues, the budget it frees lets queued alerts enter."""
    from serving import alert_store, capacity
    from training.registry import _who

    with _user_errors():
        config, eng = _alert_store()
        alert_store.resolve(eng, alert_id, who or _who())
        entered = capacity.release(eng, config)
    out.print(f"alert {alert_id} resolved" + (f"; {entered:,} queued alert(s) entered" if entered else ""))


@alerts_app.command("queue")
def alerts_queue(
    as_json: Annotated[bool, typer.Option("--json", help="Print the teams and the queue as JSON.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many queued alerts per team.")] = 20,
) -> None:
    """Each team's budget this period, what is used, and its queue in the order alerts would enter (`next`:
    they would enter now with the budget free), as of the latest run (docs/effect.md, Capacity)."""
    from serving import capacity
    from serving import effect as fx

    with _user_errors():
        config, eng = _alert_store()
        when = capacity.clock(eng)
        waiting, teams = capacity.queue(eng, capacity.rules_of(eng, config), when)
    if as_json:
        body = {
            "as_of": when.isoformat(),
            "teams": [
                {
                    **t.__dict__,
                    "used": t.used,
                    "free": t.free,
                    "period_start": t.period_start.isoformat(),
                    "period_end": t.period_end.isoformat(),
                }
                for t in teams
            ],
            "queue": fx.records(waiting),
        }
        out.print_json(json.dumps(body))
        return
    grid = Table("team", "budget", "live", "done this period", "free", "queued", "period", title="capacity")
    for t in teams:
        grid.add_row(
            t.team, f"{t.budget:,}", f"{t.live:,}", f"{t.done:,}", f"{t.free:,}", f"{t.queued:,}",
            f"{t.period_start:%Y-%m-%d} to {t.period_end:%Y-%m-%d}",
        )  # fmt: skip
    out.print(grid)
    queue = Table(
        "team", "#", "id", "customer", "kind", "tier", "priority", "waiting since", "next", title="queue"
    )
    for _, rows in waiting.groupby("team", sort=True):
        for r in rows.head(limit).to_dict("records"):
            queue.add_row(
                str(r["team"]),
                str(r["position"]),
                str(r["id"]),
                str(r["customer_id"]),
                str(r["kind"]),
                str(r["tier"]),
                f"{r['priority']:,.2f}",
                f"{r['opened_at']:%Y-%m-%d}",
                "yes" if r["next"] else "",
            )
    out.print(queue)
    out.print(f"{len(waiting):,} queued alert(s) as of {when:%Y-%m-%d %H:%M}")


@alerts_app.command("deliver")
def alerts_deliver() -> None:
    """Deliver what is due in the outbox (safe from cron: backoff retries, dead-letters when exhausted)."""
    from serving import delivery, outbox

    with _user_errors():
        config, eng = _alert_store()
        report = delivery.deliver_all(eng, config.endpoints(), config.webhooks)
    out.print(
        f"webhooks: {report.delivered:,} delivered, {report.retried:,} to retry, {report.dead:,} dead; "
        f"{outbox.pending_count(eng):,} pending"
    )


@alerts_app.command("dead")
def alerts_dead() -> None:
    """The dead-letter list: deliveries that exhausted their retries."""
    from serving import outbox

    with _user_errors():
        _, eng = _alert_store()
        rows = outbox.dead_letters(eng)
    for r in rows:
        out.print(f"{r['webhook_id']}  {r['destination']}  attempts {r['attempts']}  {r['last_error']}")
    out.print(f"{len(rows):,} dead letter(s)")


@app.command()
def outcomes(
    data: Annotated[str, typer.Option("--data", help="History folder, to its end.")],
    horizon: Annotated[
        str | None,
        typer.Option(help="Horizon (e.g. 90d) for alerts never recorded by a `diamond score` run."),
    ] = None,
) -> None:
    """What became of every alert and every control: saved, lost or pending, and the value brought after
    (revenue, or margin minus cost-to-serve when the served model predicts margin; docs/effect.md)."""
    from features.build import parse_horizon
    from serving.config import ServingConfig
    from training.tracking import MlflowConfig

    with _user_errors():
        h = parse_horizon(horizon) if horizon else None
        done = flows.record_outcomes(data, ServingConfig.load(), h, MlflowConfig.load())
    _print_outcomes(done)


@app.command()
def uplift(
    data: Annotated[str, typer.Option("--data", help="History folder the runs were scored from.")],
    seed: Annotated[int, typer.Option(help="XGBoost seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fit as JSON.")] = False,
) -> None:
    """Fit the uplift model from the store's treated and control outcomes, judge it on the latest mature
    run's, register `<registered_model>-uplift` and gate it; `diamond score` ranks alerts by uplift x value
    - cost while a gated one is champion, else by value at risk (docs/effect.md, Uplift ranking)."""
    import json

    from serving.config import ServingConfig
    from training.tracking import MlflowConfig

    with _user_errors(), _progress(None, "uplift") as advance:
        fitted = flows.uplift(data, ServingConfig.load(), MlflowConfig.load(), seed, advance)
    if as_json:
        out.print_json(json.dumps(fitted))
        return
    if fitted is None:
        need = ServingConfig.load().alerts
        floor = need.uplift.min_outcomes if need is not None else 0
        out.print(
            f"not enough mature outcomes yet: the uplift model needs {floor:,} to learn from beyond the "
            "latest mature run's, and both arms; alerts stay ranked by value at risk"
        )
        return
    out.print(
        f"uplift version {fitted['version']}: learned from {fitted['learned_from']:,} outcomes, judged on "
        f"{fitted['judged_on']:,} (run {fitted['as_of']}): Qini {fitted['qini']:.4f}, "
        f"AUUC {fitted['auuc']:.4f}"
    )
    out.print(f"gate: {fitted['reason']}")


def _print_outcomes(done: Recorded | None) -> None:
    if done is None:
        return
    line = ", ".join(
        f"{arm} {done.count(arm):,} (saved {done.count(arm, 'saved'):,}, lost {done.count(arm, 'lost'):,}, "
        f"pending {done.count(arm, 'pending'):,})"
        for arm in ("treated", "control")
    )
    out.print(f"outcomes as of {done.end:%Y-%m-%d %H:%M}: {line}")


@app.command()
def effect(
    as_json: Annotated[bool, typer.Option("--json", help="Print the tables as JSON.")] = False,
    by_run: Annotated[
        bool, typer.Option("--by-run/--overall", help="Also each opening run, and cumulative through it.")
    ] = True,
    mlflow: Annotated[bool, typer.Option("--mlflow", help="Also log it as an MLflow run.")] = False,
    data: Annotated[
        str | None,
        typer.Option("--data", help="History folder: adds the realised rates by tier per run."),
    ] = None,
    horizon: Annotated[
        str | None,
        typer.Option(help="Window of the realised rates (e.g. 90d; default: the alerts' horizon)."),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the report as an HTML file.")
    ] = None,
) -> None:
    """Treated alerts against their held-out controls: save rates with 95 % intervals, incremental
    customers saved and value retained (in the served model's value target: revenue or margin), cost and
    ROI, by tier, alert kind, playbook and owner; the tier migration matrix between runs and, with --data,
    realised retention, churn and repeat-purchase rates by tier per run (docs/effect.md)."""
    from features.build import parse_horizon
    from serving import effect as fx
    from serving.config import ServingConfig
    from serving.dashboard import effect_report_html
    from training.tracking import MlflowConfig

    with _user_errors():
        models = MlflowConfig.load()  # whose value target the outcomes measure (the served model's)
        mlcfg = models if mlflow else None
        done = flows.effect(
            ServingConfig.load(),
            by_run,
            mlcfg,
            data,
            parse_horizon(horizon) if horizon else None,
            models,
        )
        value = fx.value_line(done.value_target, done.model_version)
        if html is not None:
            html.parent.mkdir(parents=True, exist_ok=True)
            html.write_text(
                effect_report_html(done.table, done.rates, done.migration, done.tier_order, value),
                encoding="utf-8",
            )
    table, run_id = done.table, done.run_id
    if mlcfg is not None and run_id is not None:
        console.print(f"logged to MLflow: run {run_id} in experiment {mlcfg.experiment}-effect")
    if html is not None:
        console.print(f"report written to {html.resolve()}")
    if as_json:
        body = {
            "value_target": done.value_record(),
            "effect": fx.records(table),
            "indicators": fx.records(done.rates),
            "migration": fx.records(done.migration),
        }
        out.print_json(json.dumps(body))
        return
    _print_programme(done.rates, done.migration, done.tier_order)
    out.print(f"value: {value}")
    if table.empty:
        out.print("no outcomes yet: run `diamond score` (with alerts) or `diamond outcomes`")
        return
    owners = table[table["scope"] == "owner"]
    if not owners.empty:
        grid = Table(
            "owner",
            "treated",
            "saved",
            "control (same tiers, kinds)",
            "saved",
            "difference (95 % CI)",
            "cost",
            title="effect by owner (descriptive: owners are not drawn)",
        )
        for r in owners.to_dict("records"):
            grid.add_row(
                str(r["owner"]),
                f"{r['treated']:,}",
                _rate(r["treated_rate"]),
                f"{r['control']:,}",
                _rate(r["control_rate"]),
                _ci(r["difference"], r["difference_low"], r["difference_high"], pct=True),
                _num(r["cost"], 2),
            )
        out.print(grid)
    for scope, title in (("cumulative", "effect, all runs"), ("run", "effect by opening run")):
        rows = table[table["scope"] == scope]
        if rows.empty:
            continue
        grid = Table(
            *("run", "tier", "kind", "playbook", "treated", "saved", "control", "saved"),
            *("difference (95 % CI)", "incr. saved", f"incr. {done.value_target.target} (95 % CI)"),
            *("cost", "ROI", "pending"),
            title=title,
        )
        for r in rows.to_dict("records"):
            grid.add_row(
                "all" if r["run"] is None or r["run"] != r["run"] else f"{r['run']:%Y-%m-%d}",
                str(r["tier"]),
                str(r["kind"]),
                str(r["playbook"]),
                f"{r['treated']:,}",
                _rate(r["treated_rate"]),
                f"{r['control']:,}",
                _rate(r["control_rate"]),
                _ci(r["difference"], r["difference_low"], r["difference_high"], pct=True),
                _num(r["incremental_saved"], 1),
                _ci(r["incremental_value"], r["incremental_value_low"], r["incremental_value_high"]),
                _num(r["cost"], 2),
                _rate(r["roi"]),
                f"{r['pending']:,}",
            )
        out.print(grid)


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the world's history and stores.")],
    customers: Annotated[int, typer.Option(help="Customers in the world.")] = 20_000,
    seed: Annotated[int, typer.Option(help="The world's seed.")] = 0,
    periods: Annotated[int, typer.Option(help="Scoring runs.")] = 6,
    first: Annotated[str, typer.Option(help="The first run's as_of (training cutoff).")] = "2024-04-01",
    period_days: Annotated[int, typer.Option(help="Days between runs; also the model's horizon.")] = 91,
    capacity: Annotated[
        int | None, typer.Option(help="Alerts the team works per run, by priority (default: all).")
    ] = None,
    top_k: Annotated[
        list[int] | None,
        typer.Option(help="Capacity at which the rankings are compared (repeat for several; default 100)."),
    ] = None,
    control_share: Annotated[
        float | None, typer.Option(help="Override alerts.control_share (default: serving.yaml's).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="training.yaml for the churn model.")] = None,
) -> None:
    """Diamond's retention loop in a synthetic world with known effects: score, act on the treated alerts,
    go on; then `diamond effect` against the true effect, and the uplift ranking against P x value at equal
    capacity (docs/effect.md, Simulation). Everything, stores included, lives in --out."""
    from features.engine import EngineConfig
    from serving.config import ServingConfig
    from training.config import TrainingConfig
    from training.tracking import MlflowConfig

    with _user_errors(), _progress(None, "simulate") as advance:
        t = _parse_time(first)
        assert t is not None
        run = flows.simulate(
            out_dir, customers, seed, periods, t, period_days, capacity, top_k or [100], control_share,
            EngineConfig.load(), TrainingConfig.load(config), ServingConfig.load(), MlflowConfig.load(),
            advance,
        )  # fmt: skip
    grid = Table(
        "run", "treated", "control", "est. incr. saved (95 % CI)", "true incr. saved", "within",
        "est. incr. value (95 % CI)", "true incr. value", title="estimated vs true effect",
    )  # fmt: skip
    for r in run.truth.to_dict("records"):
        grid.add_row(
            str(r["run"]), f"{r['treated']:,}", f"{r['control']:,}",
            _ci(r["estimated_saved"], r["estimated_low"], r["estimated_high"]), _num(r["true_saved"], 1),
            "yes" if r["saved_within"] else "no",
            _ci(r["estimated_value"], r["estimated_value_low"], r["estimated_value_high"]),
            _num(r["true_value"], 2),
        )  # fmt: skip
    out.print(grid)
    rank = Table(
        "run", "cand.", "ranked by", "k", "PxV", "PxV exp.", "priority", "prio. exp.", "oracle exp.",
        title="true incremental value of working the top k (realised; exp. = expected)",
    )  # fmt: skip
    for r in run.ranking.to_dict("records"):
        version = r["uplift_version"]
        rank.add_row(
            f"{r['as_of']:%Y-%m-%d}", f"{r['candidates']:,}",
            f"uplift v{version}" if isinstance(version, str) else "p x value", _num(r["k"], 0),
            _num(r["p_x_value_value"], 0), _num(r["p_x_value_expected_value"], 0),
            _num(r["priority_value"], 0), _num(r["priority_expected_value"], 0),
            _num(r["oracle_expected_value"], 0),
        )  # fmt: skip
    out.print(rank)
    for f in run.uplift:
        out.print(f"uplift at {f['as_of']}: version {f['version']}, {f['reason']}")
    out.print(f"written to {run.out_dir / 'simulation.json'}")


def _print_programme(rates: pd.DataFrame, moves: pd.DataFrame, order: list[str]) -> None:
    """The realised rates by tier per run and the migration matrix of the latest two runs."""
    from serving import indicators

    if not rates.empty:
        grid = Table(
            "run",
            "tier",
            "customers",
            "mature",
            "retention",
            "churn",
            "repeat purchase",
            "pending",
            title="realised rates by tier (over the horizon after each run)",
        )
        for r in rates.to_dict("records"):
            grid.add_row(
                f"{r['run']:%Y-%m-%d}",
                str(r["tier"]),
                f"{r['customers']:,}",
                f"{r['mature']:,}",
                _rate(r["retention_rate"]),
                _rate(r["churn_rate"]),
                _rate(r["repeat_rate"]),
                f"{r['pending']:,}",
            )
        out.print(grid)
    if moves.empty:
        return
    last = moves[moves["to_run"] == moves["to_run"].max()]
    rows, cols, counts = indicators.matrix(last, order)
    first = last["from_run"].iloc[0]
    title = f"tier migration {first:%Y-%m-%d} (rows) to {last['to_run'].iloc[0]:%Y-%m-%d} (columns)"
    grid = Table("from \\ to", *cols, title=title)
    for name, line in zip(rows, counts, strict=True):
        grid.add_row(name, *(f"{n:,}" for n in line))
    out.print(grid)


def _num(x: float | None, digits: int) -> str:
    return "—" if x is None or x != x else f"{x:,.{digits}f}"


def _rate(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f} %"


def _ci(x: float | None, low: float, high: float, pct: bool = False) -> str:
    if x is None or x != x:
        return "—"
    f = _rate if pct else (lambda v: _num(v, 2))
    return f"{f(x)} ({f(low)} to {f(high)})" if low == low else f(x)


runs_app = typer.Typer(help="Batch runs in the store: list them, undo the latest.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def runs_list() -> None:
    """The store's batch runs, newest first; the one `diamond runs rollback` can undo is marked."""
    from serving.config import ServingConfig

    with _user_errors():
        rows = flows.list_runs(ServingConfig.load())
    table = Table("as of", "model version", "customers", "run at", "score table", "rollback")
    for r in rows.to_dict("records"):
        table.add_row(
            f"{r['as_of']:%Y-%m-%dT%H:%M:%S}",
            str(r["model_version"] or "—"),
            "—" if r["customers"] is None else f"{int(r['customers']):,}",
            f"{r['created_at']:%Y-%m-%d %H:%M}",
            str(r["parquet"] or "—"),
            "yes" if r["can_roll_back"] else "",
        )
    out.print(table)
    out.print(f"{len(rows):,} run(s)")


@runs_app.command("rollback")
def runs_rollback(
    as_of: Annotated[
        str, typer.Argument(help="The as-of of the run to undo (the latest), as `runs list` shows.")
    ],
) -> None:
    """Undo the latest batch run: tiers, alerts, outbox and the service's snapshot go back to where the
    previous run left them (its score table file stays)."""
    from serving.config import ServingConfig

    with _user_errors():
        t = _parse_time(as_of)
        if t is None:
            raise ValueError("AS_OF: give the as-of of the run to undo")
        # as `runs list` shows it: to the second, or a bare date for the run of that day
        day = len(as_of.strip()) == 10
        listed = flows.list_runs(ServingConfig.load())["as_of"]
        same = [r for r in listed if (r.date() == t.date() if day else r.replace(microsecond=0) == t)]
        t = max(same) if same else t
        done = flows.rollback_run(ServingConfig.load(), t)
    back = f"{done.previous:%Y-%m-%dT%H:%M:%S}" if done.previous else "no run (an empty store)"
    out.print(f"rolled back the run as of {done.as_of:%Y-%m-%dT%H:%M:%S}; the store is back at {back}")
    out.print(
        f"tiers: {done.tiers_restored:,} customers restored; alerts: {done.alerts_removed:,} opened by the "
        f"run removed, {done.alerts_restored:,} restored; outbox: {done.outbox_removed:,} undelivered "
        f"notification(s) removed, {done.outbox_delivered:,} already delivered (cannot be recalled); "
        f"snapshot: {done.snapshot}"
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: serving.yaml, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serving.yaml).")] = None,
) -> None:
    """Start the scoring service (BentoML) and its retention dashboard (/ui) on the champion; needs
    DIAMOND_API_KEYS or DIAMOND_API_KEY_FILE. Refuses to start, saying why, when the champion cannot be
    loaded (tracking store down, no champion, an incompatible model)."""
    import os
    import secrets
    import sys

    from serving import store
    from serving.access import KeyRing
    from serving.champion import ChampionHolder
    from serving.config import SESSION_ENV, ServingConfig
    from training.tracking import MlflowConfig

    # a tracking server that is down should fail a start or a poll in seconds, not after MLflow's minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    with _user_errors():
        config = ServingConfig.load()
        if not KeyRing.from_env().accepted():
            raise ValueError("no API keys: set DIAMOND_API_KEYS (comma-separated) or DIAMOND_API_KEY_FILE")
        store.prepare(store.engine(config.store_url))  # a new store is created; another revision refused
        holder = ChampionHolder(MlflowConfig.load(), config.model_alias)
        if not holder.refresh():  # refuse to start on a model that cannot serve, rather than serve 503s
            raise ValueError(f"not starting: {holder.uri} cannot be served: {holder.last_error}")
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    args = [bentoml, "serve", "serving.service:Diamond", "--host", host or config.host]
    args += ["--port", str(port or config.port)]
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    os.environ.setdefault(SESSION_ENV, secrets.token_hex(32))  # one dashboard session key for all workers
    # serving.yaml `workers`: BentoML reads a service's settings from this variable as well as the decorator
    overrides = json.loads(os.environ.get("BENTOML_CONFIG_OVERRIDES") or "{}")
    overrides.setdefault("services", {}).setdefault("diamond", {})["workers"] = config.workers
    os.environ["BENTOML_CONFIG_OVERRIDES"] = json.dumps(overrides)
    os.execv(bentoml, args)


@app.command()
def models() -> None:
    """Registered versions, their aliases and metrics, and the promotion log."""
    from training import registry, tracking

    with _user_errors():
        mlcfg = tracking.MlflowConfig.load()
        rows, log = registry.versions(mlcfg), registry.promotion_log(mlcfg)
    if not rows:
        out.print(f"no registered versions of {mlcfg.registered_model} in {mlcfg.tracking_uri}")
        return
    table = Table("version", "aliases", "created", "feature set", "gate", "churn AUC", "Brier", "value Gini")
    for r in rows:
        fmt = [("—" if r[k] is None else f"{r[k]:.4f}") for k in ("churn_auc", "churn_brier", "value_gini")]
        table.add_row(r["version"], r["aliases"], r["created"], r["feature_set"], r["gate"], *fmt)
    out.print(table)
    log_table = Table("when", "who", "version", "decision", "champion before", "why")
    for e in log:
        log_table.add_row(
            e.get("when", "")[:19],
            e.get("who", ""),
            e.get("challenger", ""),
            e.get("decision", ""),
            e.get("champion_before", ""),
            e.get("reason", ""),
        )
    out.print("promotion log:")
    out.print(log_table)


customers_app = typer.Typer(help="Customers in the serving store: erasure.", no_args_is_help=True)
app.add_typer(customers_app, name="customers")
keys_app = typer.Typer(help="API keys: names, roles, the key file.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@customers_app.command("forget")
def customers_forget(
    customer_ids: Annotated[list[str], typer.Argument(help="Customer ids to erase.")],
) -> None:
    """Erase customers from the serving store: snapshots, score and tier history, alerts and their actions,
    outbox messages, recent events and the score tables; only a salted hash stays, in the audit table. Needs
    an admin's API key in $DIAMOND_API_KEY. What stays (trained models) and how retraining removes it:
    docs/dashboard.md, Privacy."""
    import os

    from serving.access import CLI_KEY_ENV
    from serving.config import ServingConfig

    with _user_errors():
        done = flows.forget_customers(
            ServingConfig.load().store_url, customer_ids, os.environ.get(CLI_KEY_ENV)
        )
    for table, n in done.deleted.items():
        if n:
            out.print(f"{table}: {n:,} row(s) deleted")
    out.print(
        f"forgot {len(set(customer_ids)):,} customer(s): {done.rows:,} row(s) deleted, "
        f"{done.parquet_files:,} score table(s) rewritten"
        + (
            ""
            if done.found
            else " (nothing was stored about them; recorded anyway, so no later run adds them)"
        )
    )


@keys_app.command("add")
def keys_add(
    name: Annotated[
        str, typer.Argument(help="Who the key is for: shown in the dashboard and the audit table.")
    ],
    role: Annotated[str, typer.Option(help="viewer | agent | admin")] = "viewer",
    key_file: Annotated[
        Path | None, typer.Option("--file", help="Key file (default: $DIAMOND_API_KEY_FILE).")
    ] = None,
) -> None:
    """Make a new random key, append `NAME ROLE sha256:DIGEST` to the key file and print the key once (it is
    stored nowhere). A running service picks it up at its next request."""
    from serving import access

    with _user_errors():
        key = access.add_key(_key_file(key_file), name, role)
    out.print(f"key for {name} ({role}), shown once: {key}", highlight=False)


@keys_app.command("remove")
def keys_remove(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    key_file: Annotated[
        Path | None, typer.Option("--file", help="Key file (default: $DIAMOND_API_KEY_FILE).")
    ] = None,
) -> None:
    """Remove a key from the key file: a running service refuses it, and ends its dashboard sessions, from
    its next request."""
    from serving import access

    with _user_errors():
        access.remove_key(_key_file(key_file), name)
    out.print(f"key {name} removed")


@keys_app.command("list")
def keys_list(
    key_file: Annotated[
        Path | None, typer.Option("--file", help="Key file (default: $DIAMOND_API_KEY_FILE).")
    ] = None,
) -> None:
    """The keys' names and roles (never the keys: only their digests are stored)."""
    from serving import access

    with _user_errors():
        keys = access.parse_key_file(
            _key_file(key_file).read_text(encoding="utf-8"), str(_key_file(key_file))
        )
    table = Table("name", "role", "digest")
    for k in keys:
        table.add_row(k.name, k.role, f"{k.digest[:12]}…")
    out.print(table)


def _key_file(given: Path | None) -> Path:
    import os

    from serving.access import KEY_FILE_ENV

    found = given or (Path(os.environ[KEY_FILE_ENV]) if os.environ.get(KEY_FILE_ENV) else None)
    if found is None:
        raise ValueError(f"no key file: pass --file or set ${KEY_FILE_ENV}")
    return found


@app.command()
def audit(
    limit: Annotated[int, typer.Option(help="At most this many, latest first.")] = 50,
    action: Annotated[
        list[str] | None, typer.Option(help="Only these actions (login, login-failed, forget, promote, ...).")
    ] = None,
) -> None:
    """The audit table: who did what and when (sign-ins, alert actions, erasures, promotions)."""
    from serving import audit as audit_log

    with _user_errors():
        _, eng = _alert_store()
        rows = audit_log.entries(eng, action, limit)
    from rich.text import Text

    table = Table(*audit_log.COLUMNS)
    for r in rows.itertuples(index=False):  # Text: a value is never read as console markup
        table.add_row(*(Text("" if v is None or v != v else str(v)) for v in r))
    out.print(table, highlight=False)
    out.print(f"{len(rows):,} row(s)")


db_app = typer.Typer(help="The serving store's schema: its revision, and migrating it.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the serving store (store_url) to this release's schema, in place and in one transaction: a new
    store is created; one written by an earlier release is migrated with its rows kept."""
    from serving import store
    from serving.config import ServingConfig

    with _user_errors():
        url = ServingConfig.load().store_url
        before, after = store.upgrade(store.engine(url))
    if before == after:
        out.print(f"store {url}: already at revision {after}, nothing to do")
    elif before == store.NEW:
        out.print(f"store {url}: created at revision {after}")
    else:
        out.print(f"store {url}: upgraded from {_revision_name(before)} to revision {after}")


@db_app.command("current")
def db_current() -> None:
    """The serving store's schema revision, and whether `diamond db upgrade` has work to do."""
    from serving import store
    from serving.config import ServingConfig

    with _user_errors():
        url = ServingConfig.load().store_url
        current, head = store.revision(store.engine(url)), store.head()
    if current == head:
        out.print(f"{current} (head): store {url}")
    elif current == store.NEW:
        out.print(f"none: store {url} is new; the first command creates it at revision {head}")
    else:
        out.print(f"{current}: {store.mismatch(store.engine(url), current)}")


def _revision_name(rev: str) -> str:
    from serving import store

    return "the schema before migrations" if rev == store.BEFORE_MIGRATIONS else f"revision {rev}"
