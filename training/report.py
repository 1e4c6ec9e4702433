"""The model report: one self-contained HTML page per training run, built from what MLflow holds.

Everything comes from the tracking store, so a report can be rebuilt at any time for any run: params,
metrics (model and baselines), tags, the data fingerprint, the columns and tier thresholds, the logged plots
(embedded as base64 PNG) and the promotion decisions on the run's registered version. No CDN, no script, no
external link: the file opens offline and can be mailed. `diamond train` logs it as `report.html` on the
run; `diamond report RUN_ID` writes it again. `gather` reads, `render` is pure.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.tracking import MlflowConfig

ARTIFACT = "report.html"
PLOTS = {  # section -> logged plots (plots/NAME.png), in order
    "calibration": ["calibration"],
    "gain": ["gain_lift", "roc", "precision_recall"],
    "deciles": ["value_deciles"],
    "drivers": ["churn_importance", "churn_contributions", "value_importance", "value_contributions"],
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
    """The report as one HTML document: inline CSS, plots as data: URIs, nothing fetched."""
    p, t = d.params, d.tags
    kind = t.get("kind", "train")
    sections = [
        _section(
            "summary",
            "Run",
            _kv(
                {
                    "MLflow run": f"{d.run_id} ({d.run_name})",
                    "kind": kind,
                    "started (UTC)": f"{d.started:%Y-%m-%d %H:%M:%S}",
                    "feature set": t.get("feature_set", ""),
                    "model columns": p.get("n_columns", len(d.columns)),
                    "value objective": t.get("value_objective", ""),
                    "registered version": d.version or "not registered (backtest)",
                    "aliases now": ", ".join(d.aliases) or "none",
                }
            ),
        ),
        _section("data", "Data summary", _data(d)),
        _section("design", "Validation design", _design(d)),
        _section("metrics", "Metrics beside the baselines", _metrics(d)),
        _section(
            "calibration",
            "Calibration",
            "<p>Predicted churn probability against the observed rate, in equal-count bins of the latest "
            "validation window (label horizon).</p>" + _plots(d, "calibration"),
        ),
        _section(
            "gain",
            "Gain and lift",
            "<p>Share of churners found when contacting customers by descending churn probability, the "
            "lift per decile, and the ROC and precision-recall curves beside the RFM rank.</p>"
            + _plots(d, "gain"),
        ),
        _section(
            "deciles",
            "Value by decile",
            "<p>Mean predicted and actual spend over the label horizon per bin of predicted value.</p>"
            + _plots(d, "deciles"),
        ),
        _section(
            "drivers",
            "Drivers",
            "<p>XGBoost total-gain importance and per-customer contributions (SHAP values, "
            "<code>pred_contribs</code>) of both models on a sample of the customers at T.</p>"
            + _plots(d, "drivers"),
        ),
        _section("tiers", "Tier thresholds", _tiers(d)),
        _section("promotion", "Promotion decision", _promotion(d)),
    ]
    title = f"Diamond model report: {t.get('feature_set', '')} at {t.get('cutoff', '')[:10]}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class='muted'>{_e(kind)} run {_e(d.run_id)}; built "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC from the MLflow tracking store</p>"
        + "".join(sections)
        + "</body></html>\n"
    )


def _data(d: ReportData) -> str:
    f = d.fingerprint
    rows = {f"rows: {k}": f"{v:,}" for k, v in (f.get("rows") or {}).items()}
    return _kv(
        {
            **rows,
            "first event": f.get("first_event", ""),
            "last event": f.get("last_event", ""),
            "history as of (cutoff T)": f.get("as_of", ""),
            "training rows (customer x origin)": _int(d.params.get("training_rows")),
            "data sha256": f.get("sha256", ""),
        }
    )


def _design(d: ReportData) -> str:
    p = d.params
    origins = [o for o in p.get("origins", "").split(",") if o]
    text = (
        f"<p>The models learn {p.get('label_horizon_days', '?')}-day labels at {len(origins)} month-end "
        "origins whose labels end by the cutoff T. The latest origin validates, with models fitted only on "
        "origins whose labels end by it (a gap of one label horizon, as between the final model's newest "
        "origin and T); Optuna tunes on that validation. The final models are refit on every origin and "
        f"mapped to the {p.get('horizon_days', '?')}-day horizon with BG/NBD (docs/training.md).</p>"
    )
    return text + _kv(
        {
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
        }
    )


def _metrics(d: ReportData) -> str:
    out = (
        "<p>On the latest validation origin at the label horizon, model and baselines on the same customers. "
        "The baselines log ranking metrics only.</p>" + _metric_table(d.metrics, WHO)
    )
    if any(k.startswith("holdout_") for k in d.metrics):
        out += "<h3>Holdout (what happened after T)</h3>" + _metric_table(d.metrics, HOLDOUT)
    return out


def _metric_table(m: dict[str, float], who: dict[str, str]) -> str:
    rows = []
    for key, label in METRICS.items():
        cells = [m.get(f"{prefix}{key}") for prefix in who.values()]
        if all(c is None for c in cells):
            continue
        rows.append([label, *("—" if c is None else f"{c:.4f}" for c in cells)])
    return _table(["metric", *who], rows)


def _tiers(d: ReportData) -> str:
    h = d.params.get("horizon_days", "?")
    rows = [[name, f"{value:,.2f}"] for name, value in d.tiers.items()]
    return (
        f"<p>A customer gets the first tier whose lowest predicted value over {_e(h)} days they reach; "
        "cut points are learned on the customers at T and ship with the model.</p>"
        + _table(["tier", "lowest predicted value"], rows)
    )


def _promotion(d: ReportData) -> str:
    if d.version is None:
        return "<p>A backtest: never registered, never promoted.</p>"
    if not d.decisions:
        return f"<p>Version {_e(d.version)}: the gate has not decided on it yet.</p>"
    latest = d.decisions[0]
    verdict = "promoted to champion" if latest.get("decision") == "promoted" else "refused"
    head = (
        f"<p class='decision {_e(latest.get('decision', ''))}'>Version {_e(d.version)}: <b>{verdict}</b>. "
        f"{_e(latest.get('reason', ''))}</p>"
    )
    rows = [
        [
            str(x.get("when", ""))[:19],
            x.get("who", ""),
            x.get("decision", ""),
            x.get("champion_before", "") or "none",
            x.get("reason", ""),
        ]
        for x in d.decisions
    ]
    scores = {k: v for k, v in latest.items() if k.startswith(("challenger_", "champion_"))}
    scores.pop("champion_before", None)
    table = _table(["when (UTC)", "who", "decision", "champion before", "why"], rows)
    return head + table + (_kv({k: f"{v:.4f}" for k, v in scores.items()}) if scores else "")


def _plots(d: ReportData, section: str) -> str:
    parts = []
    for name in PLOTS[section]:
        png = d.plots.get(name)
        if png is None:
            continue
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<figure><img alt='{_e(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(name.replace('_', ' '))}</figcaption></figure>"
        )
    return "".join(parts) or "<p class='muted'>no plot logged (the window lacked both classes or rows)</p>"


def _section(anchor: str, title: str, body: str) -> str:
    return f"<section id='{anchor}'><h2>{_e(title)}</h2>{body}</section>"


def _kv(values: dict[str, Any]) -> str:
    return _table(None, [[k, v] for k, v in values.items()])


def _table(header: list[str] | None, rows: list[list[Any]]) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _int(value: Any) -> str:
    try:
        return f"{int(float(value)):,}"
    except (TypeError, ValueError):
        return "—"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1d2430;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #d8dee8;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #d8dee8;padding:.25em .7em;text-align:left;vertical-align:top}
th{background:#f1f4f8}td:not(:first-child){font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em 1em .5em 0}img{max-width:520px;border:1px solid #e3e7ee}
figcaption{font-size:.85em;color:#5a6473}.muted{color:#5a6473}
.decision{padding:.6em 1em;border-radius:6px}.promoted{background:#e5f5e8}.refused{background:#fbeaea}
""".strip()
