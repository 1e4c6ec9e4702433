"""Model-report figures: pure functions of (actual, predicted) arrays that return matplotlib Figures.

Figures are built with `matplotlib.figure.Figure` directly, not pyplot, so there is no global state, no
backend to choose and nothing to close: safe in servers, workers and tests. Save with `fig.savefig(...)`
or log with `mlflow.log_figure(fig, "roc.png")`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from training.metrics import decile_table

MAX_STRIP_ROWS = 2_000
SEED = 0


def _pair(actual: npt.ArrayLike, predicted: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert two 1-d, equal-length, non-empty arrays (predictions free of NaN)."""
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if a.ndim != 1 or p.ndim != 1 or a.shape != p.shape:
        raise ValueError(f"actual and predicted must be 1-d and the same length, got {a.shape} and {p.shape}")
    if not a.size:
        raise ValueError("no rows to plot")
    if np.isnan(p).any():
        raise ValueError(f"{int(np.isnan(p).sum())} predictions are NaN")
    return a, p


def _labels(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Like `_pair`, and also require 0/1 labels with both classes present (curves need both)."""
    a, s = _pair(y, p)
    if not np.isin(a, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if a.min() == a.max():
        raise ValueError("labels must contain both classes (0 and 1)")
    return a, s


def _bins(bins: int, n: int) -> None:
    if not 1 <= bins <= n:
        raise ValueError(f"bins must be between 1 and the number of rows ({n}), got {bins}")


def roc_figure(
    y: npt.ArrayLike, p: npt.ArrayLike, baselines: Mapping[str, npt.ArrayLike] | None = None
) -> Figure:
    """ROC curve of churn probability `p` against labels `y`, with the AUC in the legend, so the model can be
    compared with baseline scores (higher score = more likely to churn) and the random diagonal."""
    a, s = _labels(y, p)
    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.subplots()
    for name, score in {"model": s, **(baselines or {})}.items():
        _, b = _pair(a, score)
        fpr, tpr, _ = roc_curve(a, b)
        ax.plot(fpr, tpr, label=f"{name} (AUC = {roc_auc_score(a, b):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    ax.set(title="ROC curve (churn)", xlabel="false positive rate", ylabel="true positive rate")
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return fig


def pr_figure(
    y: npt.ArrayLike, p: npt.ArrayLike, baselines: Mapping[str, npt.ArrayLike] | None = None
) -> Figure:
    """Precision-recall curve with average precision (AP) in the legend and the base rate as the no-skill
    line: more telling than ROC when churners are rare."""
    a, s = _labels(y, p)
    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.subplots()
    for name, score in {"model": s, **(baselines or {})}.items():
        _, b = _pair(a, score)
        precision, recall, _ = precision_recall_curve(a, b)
        ax.step(recall, precision, where="post", label=f"{name} (AP = {average_precision_score(a, b):.3f})")
    rate = float(a.mean())
    ax.axhline(rate, linestyle="--", color="grey", label=f"base rate ({rate:.3f})")
    ax.set(title="Precision-recall curve (churn)", xlabel="recall", ylabel="precision")
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right")
    return fig


def calibration_figure(y: npt.ArrayLike, p: npt.ArrayLike, bins: int = 10) -> Figure:
    """Reliability diagram over equal-count bins of `p` (mean predicted vs observed churn rate), so one can
    see whether probabilities can be read as rates; a histogram of `p` below shows where the mass lies."""
    a, s = _labels(y, p)
    _bins(bins, a.size)
    groups = np.array_split(np.argsort(s, kind="stable"), bins)
    mean_p = np.array([s[g].mean() for g in groups])
    observed = np.array([a[g].mean() for g in groups])
    brier = float(np.mean((s - a) ** 2))
    fig = Figure(figsize=(6, 7), layout="constrained")
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(mean_p, observed, marker="o", label=f"model (Brier = {brier:.4f})")
    ax.set(title=f"Calibration ({bins} equal-count bins)", ylabel="observed churn rate", ylim=(0, 1.01))
    ax.legend(loc="upper left")
    hist.hist(s, bins=20, range=(0, 1), color="grey")
    hist.set(xlabel="predicted churn probability", ylabel="customers", xlim=(0, 1))
    return fig


def gain_lift_figure(y: npt.ArrayLike, p: npt.ArrayLike) -> Figure:
    """Cumulative gain (share of churners captured vs share of customers contacted, highest `p` first) with
    random and perfect lines, and lift per decile: what a retention campaign of a given size would catch."""
    a, s = _labels(y, p)
    order = np.argsort(-s, kind="stable")
    contacted = np.arange(a.size + 1) / a.size
    captured = np.concatenate([[0.0], np.cumsum(a[order])]) / a.sum()
    rate = float(a.mean())
    fig = Figure(figsize=(12, 5), layout="constrained")
    gain, lift = fig.subplots(1, 2)
    gain.plot(contacted, captured, label="model")
    gain.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    gain.plot([0, rate, 1], [0, 1, 1], linestyle=":", color="black", label="perfect")
    gain.set(title="Cumulative gain", xlabel="share of customers contacted (highest p first)")
    gain.set(ylabel="share of churners captured", xlim=(0, 1), ylim=(0, 1.01))
    gain.legend(loc="lower right")
    deciles = np.array_split(order, min(10, a.size))
    lifts = [a[d].mean() / rate for d in deciles]
    lift.bar(np.arange(1, len(deciles) + 1), lifts, label="model")
    lift.axhline(1.0, linestyle="--", color="grey", label="random")
    lift.set(title="Lift by decile", xlabel="decile by churn probability (1 = highest)", ylabel="lift")
    lift.set_xticks(np.arange(1, len(deciles) + 1))
    lift.legend(loc="upper right")
    return fig


def decile_figure(actual: npt.ArrayLike, predicted: npt.ArrayLike, bins: int = 10) -> Figure:
    """Mean predicted vs mean actual spend per equal-size bin by prediction (the bins of decile MAPE), to see
    where the value model over- or under-shoots."""
    a, _ = _pair(actual, predicted)
    _bins(bins, a.size)
    table = decile_table(actual, predicted, bins)
    x = np.arange(1, len(table) + 1)
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    ax.bar(x - 0.2, [d["mean_predicted"] for d in table], width=0.4, label="mean predicted")
    ax.bar(x + 0.2, [d["mean_actual"] for d in table], width=0.4, label="mean actual")
    ax.set(title="Spend by bin of predicted value", xlabel="bin by predicted value (1 = highest)")
    ax.set(ylabel="mean spend per customer")
    ax.set_xticks(x)
    ax.legend(loc="upper right")
    return fig


def importance_figure(importance: dict[str, float], top: int = 20) -> Figure:
    """Horizontal bars of the `top` largest feature importances (e.g. XGBoost gain), largest at the top."""
    if not importance:
        raise ValueError("no feature importances to plot")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    items = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig = Figure(figsize=(7, 0.3 * len(items) + 2), layout="constrained")
    ax = fig.subplots()
    ax.barh(np.arange(len(items)), [v for _, v in items], tick_label=[k for k, _ in items])
    ax.set(title=f"Feature importance (top {len(items)})", xlabel="importance", ylabel="feature")
    return fig


def contributions_figure(contribs: npt.ArrayLike, columns: list[str], top: int = 20) -> Figure:
    """SHAP-style summary of XGBoost `pred_contribs` (last column = bias, dropped): mean |contribution| of the
    `top` features as bars, and a strip of individual contributions (at most 2,000 rows, fixed seed)."""
    c = np.asarray(contribs, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != len(columns) + 1:
        raise ValueError(
            f"contribs must have shape (n_rows, {len(columns) + 1}) for {len(columns)} columns plus bias, "
            f"got {c.shape}"
        )
    if not c.shape[0] or not columns:
        raise ValueError("no rows or no features to plot")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    c = c[:, :-1]
    mean_abs = np.abs(c).mean(axis=0)
    keep = np.argsort(-mean_abs, kind="stable")[:top][::-1]  # largest last, so it is drawn at the top
    rng = np.random.default_rng(SEED)
    if c.shape[0] > MAX_STRIP_ROWS:
        c = c[np.sort(rng.choice(c.shape[0], MAX_STRIP_ROWS, replace=False))]
    pos = np.arange(keep.size)
    fig = Figure(figsize=(12, 0.3 * keep.size + 2), layout="constrained")
    bars, strip = fig.subplots(1, 2, sharey=True)
    bars.barh(pos, mean_abs[keep], tick_label=[columns[i] for i in keep])
    bars.set(title="Mean |contribution|", xlabel="mean |SHAP value|", ylabel="feature")
    for k, j in enumerate(keep):
        values = c[:, j]
        jitter = rng.uniform(-0.3, 0.3, values.size)
        strip.scatter(values, k + jitter, s=4, alpha=0.4, c=np.where(values >= 0, "tab:red", "tab:blue"))
    strip.axvline(0.0, color="grey", linewidth=0.8)
    strip.set(title=f"Contributions per row ({c.shape[0]} rows)", xlabel="SHAP value (margin)")
    fig.suptitle(f"Feature contributions (top {keep.size})")
    return fig
