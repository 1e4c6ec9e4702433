"""The model report: one self-contained HTML page per training run, built from what MLflow holds.

Everything comes from the tracking store, so a report can be rebuilt at any time for any run: params,
metrics (model and baselines), tags, the data fingerprint, the columns and tier thresholds, the logged plots
(embedded as base64 PNG) and the promotion decisions on the run's registered version. No CDN, no script, no
external link: the file opens offline and can be mailed. `diamond train` logs it as `report.html` on the
run; `diamond report RUN_ID` writes it again. `gather` reads; `render` is pure and lays the page out with
the Jinja template `training/templates/report.html`.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from training.tracking import SEGMENTS, MlflowConfig

ARTIFACT = "report.html"
PLOTS = {  # section -> logged plots (plots/NAME.png), in order
    "calibration": ["calibration"],
    "gain": ["gain_lift", "roc", "precision_recall"],
    "deciles": ["value_deciles"],
    "drivers": [  # a hurdle's value has two boosters: E[value | any] ("value") and P(any value)
        "churn_importance",
        "churn_contributions",
        "value_importance",
        "value_contributions",
        "value_buyer_importance",
        "value_buyer_contributions",
    ],
}
METRICS = {  # metric suffix -> label
    "churn_auc": "churn ROC-AUC",
    "churn_brier": "churn Brier",
    "churn_logloss": "churn log loss",
    "churn_rate": "churn rate (actual)",
    "churn_mean_probability": "churn probability (mean)",
    "value_gini": "value normalized Gini",
    "value_aggregate_error": "value aggregate error",
    "value_decile_mape": "value decile MAPE",
}
WHO = {"model": "", "RFM rank": "baseline_rfm_", "BG/NBD": "baseline_bgnbd_"}
VALUE_MODELS = {  # the value_model tag (training.tracking) in words; runs before it had one booster
    "single": "one booster of everybody's value",
    "hurdle": "hurdle: P(any value) x E[value | any]",
}
HOLDOUT = {"model": "holdout_model_", "RFM rank": "holdout_rfm_", "BG/NBD": "holdout_bgnbd_"}


@dataclass
class ReportData:
    """What a report shows, as read from the tracking store."""

    run_id: str
    run_name: str
    started: datetime
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    fingerprint: dict[str, Any]
    columns: list[str]
    tiers: dict[str, float]
    plots: dict[str, bytes]  # name -> PNG
    version: str | None  # the registered version (None: a backtest, never registered)
    aliases: list[str] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # promotion log entries, newest first
    segments: list[dict[str, Any]] = field(default_factory=list)  # quality by segment per window (tracking)


def gather(mlcfg: MlflowConfig, run_id: str) -> ReportData:
    """Read one training or backtest run and its registry decisions; a clear error for anything else."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from training import registry, tracking

    tracking._quiet()
    client = mlcfg.client()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"no MLflow run {run_id!r} in {mlcfg.tracking_uri}") from None
    if "feature_set" not in run.data.tags:
        raise ValueError(f"MLflow run {run_id} is not a Diamond training run (no feature_set tag)")
    with tempfile.TemporaryDirectory() as tmp:

        def artifact(path: str) -> Path:
            return Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=mlcfg.tracking_uri
                )
            )

        fingerprint = json.loads(artifact("data/fingerprint.json").read_text(encoding="utf-8"))
        model = json.loads(artifact("model/columns_and_tiers.json").read_text(encoding="utf-8"))
        plots = {p.stem: p.read_bytes() for p in sorted(artifact("plots").glob("*.png"))}
        logged = {Path(f.path).name for f in client.list_artifacts(run_id, "quality")}
        windows = [
            json.loads(artifact(SEGMENTS.format(window=w)).read_text(encoding="utf-8"))
            for w in ("validation", "holdout")
            if Path(SEGMENTS.format(window=w)).name in logged
        ]
    found = client.search_model_versions(f"run_id = '{run_id}'")
    version = str(found[0].version) if found else None
    aliases = []
    if version is not None:
        named = client.get_registered_model(found[0].name).aliases
        aliases = sorted(a for a, v in named.items() if str(v) == version)
    decisions = [d for d in registry.promotion_log(mlcfg) if version and d.get("challenger") == version]
    return ReportData(
        run_id,
        run.info.run_name or "",
        datetime.fromtimestamp(run.info.start_time / 1000, UTC),
        dict(run.data.tags),
        dict(run.data.params),
        dict(run.data.metrics),
        fingerprint,
        list(model["columns"]),
        dict(model["tiers"]),
        plots,
        version,
        aliases,
        decisions,
        windows,
    )


def build(mlcfg: MlflowConfig, run_id: str) -> str:
    return render(gather(mlcfg, run_id))


def log_report(mlcfg: MlflowConfig, run_id: str) -> str:
    """Build the report and log it on the run as `report.html`; returns the HTML."""
    page = build(mlcfg, run_id)
    mlcfg.client().log_text(run_id, page, ARTIFACT)
    return page


def write(mlcfg: MlflowConfig, run_id: str, out: str | Path) -> Path:
    """Build the report and write it to `out` atomically."""
    page = build(mlcfg, run_id)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target


# --- rendering (pure) ---------------------------------------------------------------------------------------


def render(d: ReportData) -> str:
    """The report as one HTML document (templates/report.html): inline CSS, plots as data: URIs, nothing
    fetched. Python shapes the values; the template lays them out and escapes every one of them."""
    p, t = d.params, d.tags
    return (
        _templates()
        .get_template("report.html")
        .render(
            title=f"Diamond model report: {t.get('feature_set', '')} at {t.get('cutoff', '')[:10]}",
            kind=t.get("kind", "train"),
            run_id=d.run_id,
            built=f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
            summary={
                "MLflow run": f"{d.run_id} ({d.run_name})",
                "kind": t.get("kind", "train"),
                "started (UTC)": f"{d.started:%Y-%m-%d %H:%M:%S}",
                "feature set": t.get("feature_set", ""),
                "model columns": p.get("n_columns", len(d.columns)),
                "value objective": t.get("value_objective", ""),
                "value model": VALUE_MODELS.get(t.get("value_model", "single"), ""),
                "value target": p.get("value_target", t.get("value_target", "revenue")),
                "registered version": d.version or "not registered (backtest)",
                "aliases now": ", ".join(d.aliases) or "none",
            },
            data=_data(d),
            design=_design(d),
            metrics=_metric_table(d.metrics, WHO),
            holdout=_metric_table(d.metrics, HOLDOUT)
            if any(k.startswith("holdout_") for k in d.metrics)
            else None,
            plots={section: _plots(d, section) for section in PLOTS},
            tiers=[[name, f"{value:,.2f}"] for name, value in d.tiers.items()],
            version=d.version,
            promotion=_promotion(d),
            segments=[_segment_window(w) for w in d.segments],
        )
        + "\n"
    )


@cache
def _templates() -> jinja2.Environment:
    """The report's templates, autoescaped: a run name, tag or note is text, never markup."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _data(d: ReportData) -> dict[str, Any]:
    f = d.fingerprint
    rows = {f"rows: {k}": f"{v:,}" for k, v in (f.get("rows") or {}).items()}
    return {
        **rows,
        "first event": f.get("first_event", ""),
        "last event": f.get("last_event", ""),
        "history as of (cutoff T)": f.get("as_of", ""),
        "training rows (customer x origin)": _int(d.params.get("training_rows")),
        "data sha256": f.get("sha256", ""),
    }


def _design(d: ReportData) -> dict[str, Any]:
    p = d.params
    origins = [o for o in p.get("origins", "").split(",") if o]
    table = {
        "cutoff T": d.tags.get("cutoff", p.get("cutoff", "")),
        "horizon H (days)": p.get("horizon_days", ""),
        "label horizon h (days)": p.get("label_horizon_days", ""),
        "training origins": ", ".join(origins[:-1]),
        "validation origin": origins[-1] if origins else "",
        "Optuna trials per model (configured)": p.get("trials", ""),
        "trials run (churn / value)": f"{_int(d.metrics.get('churn_tuning_trials'))} / "
        f"{_int(d.metrics.get('value_tuning_trials'))}",
        "seed": p.get("seed", ""),
        "churn stacker (w_margin, w_rfm, b)": p.get("churn_stack", ""),
        "churn horizon map": p.get("churn_horizon_map", ""),
        "value horizon map": p.get("value_horizon_map", ""),
        "churn models (who is scored by which)": p.get("churn_models", "purchase silence for every customer"),
        "recalibrated levels": p.get("levels", "none"),
    }
    for key in sorted(k for k in d.metrics if k.startswith("holdout_by_model_")):
        shown = f"{d.metrics[key]:,.0f}" if key.endswith("_customers") else f"{d.metrics[key]:.4f}"
        table[f"holdout, {key.removeprefix('holdout_by_model_').replace('_', ' ')}"] = shown
    return {
        "label_horizon": p.get("label_horizon_days", "?"),
        "horizon": p.get("horizon_days", "?"),
        "n_origins": len(origins),
        "table": table,
    }


def _metric_table(m: dict[str, float], who: dict[str, str]) -> dict[str, list[Any]]:
    """Header and rows of one metrics table: a row per metric anyone logged, "—" where one did not."""
    rows = []
    for key, label in METRICS.items():
        cells = [m.get(f"{prefix}{key}") for prefix in who.values()]
        if all(c is None for c in cells):
            continue
        rows.append([label, *("—" if c is None else f"{c:.4f}" for c in cells)])
    return {"header": ["metric", *who], "rows": rows}


def _promotion(d: ReportData) -> dict[str, Any] | None:
    """The latest gate decision on the run's version and the whole log of them (None: none yet)."""
    if d.version is None or not d.decisions:
        return None
    latest = d.decisions[0]
    scores = {k: v for k, v in latest.items() if k.startswith(("challenger_", "champion_"))}
    scores.pop("champion_before", None)
    return {
        "decision": latest.get("decision", ""),
        "verdict": "promoted to champion" if latest.get("decision") == "promoted" else "refused",
        "reason": latest.get("reason", ""),
        "rows": [
            [
                str(x.get("when", ""))[:19],
                x.get("who", ""),
                x.get("decision", ""),
                x.get("champion_before", "") or "none",
                x.get("reason", ""),
            ]
            for x in d.decisions
        ],
        "scores": {k: f"{v:.4f}" for k, v in scores.items()},
    }


SEGMENT_HEADER = [
    "segment",
    "customers",
    "churn rate",
    "mean P(churn)",
    "gap",
    "churn AUC",
    "Brier",
    "value / customer",
    "predicted / customer",
    "value error",
]
WINDOW_TITLES = {
    "validation": "the latest validation origin",
    "holdout": "what happened after T (holdout)",
}


def _segment_window(w: dict[str, Any]) -> dict[str, Any]:
    """One window's segment tables (one per segmentation) and its parity verdict, as text cells."""

    def num(x: Any, spec: str) -> str:
        return "—" if x is None else format(x, spec)

    groups: dict[str, list[list[str]]] = {}
    for r in w["rows"]:
        groups.setdefault(r["by"], []).append(
            [
                r["segment"],
                f"{r['customers']:,}",
                num(r["churn_rate"], ".3f"),
                num(r["mean_probability"], ".3f"),
                num(r["calibration_gap"], "+.3f"),
                num(r["churn_auc"], ".3f"),
                num(r["churn_brier"], ".3f"),
                num(r["actual_value"], ",.2f"),
                num(r["predicted_value"], ",.2f"),
                num(r["value_error"], "+.1%"),
            ]
            + (["; ".join(r["flags"]) or "—"] if r["by"] != "all" else [""])
        )
    par = w["parity"]
    return {
        "title": WINDOW_TITLES.get(w["window"], w["window"]),
        "horizon": w["horizon_days"],
        "header": [*SEGMENT_HEADER, "parity flags"],
        "groups": groups,
        "flagged": [
            [r["by"], r["segment"], f"{r['customers']:,}", "; ".join(r["flags"])]
            for r in w["rows"]
            if r["flags"]
        ],
        "margins": {
            "smallest segment judged (customers)": f"{par['min_customers']:,}",
            "churn AUC below the window's by more than": f"{par['max_auc_drop']:.3f}",
            "|mean P(churn) - churn rate| above": f"{par['max_calibration_gap']:.3f}",
            "|predicted / realised value - 1| above": f"{par['max_value_error']:.0%}",
        },
    }


def _plots(d: ReportData, section: str) -> list[tuple[str, str]]:
    """(name, base64 PNG) of the section's logged plots, in order; the template embeds them as data: URIs."""
    return [
        (name, base64.b64encode(d.plots[name]).decode("ascii")) for name in PLOTS[section] if name in d.plots
    ]


def _int(value: Any) -> str:
    try:
        return f"{int(float(value)):,}"
    except (TypeError, ValueError):
        return "—"
