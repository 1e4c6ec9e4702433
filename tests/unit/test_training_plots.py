"""Report figures: the data drawn on each Figure checked against hand-computed or sklearn values."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sklearn.metrics import average_precision_score, roc_auc_score

from training import plots


@pytest.fixture
def churn() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = (rng.random(200) < 0.3).astype(int)
    p = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    return y, p


def _bars(ax) -> list[Rectangle]:
    return [patch for patch in ax.patches if isinstance(patch, Rectangle)]


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _png(fig: Figure) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue().startswith(b"\x89PNG")


def test_roc_curve_runs_from_origin_to_corner_with_sklearn_auc(churn) -> None:
    y, p = churn
    rank = np.random.default_rng(1).random(y.size)
    fig = plots.roc_figure(y, p, baselines={"RFM rank": rank})
    ax = fig.axes[0]
    model = ax.lines[0]
    assert (model.get_xdata()[0], model.get_ydata()[0]) == (0, 0)
    assert (model.get_xdata()[-1], model.get_ydata()[-1]) == (1, 1)
    assert np.all(np.diff(model.get_xdata()) >= 0)
    labels = _legend(ax)
    assert labels[0] == f"model (AUC = {roc_auc_score(y, p):.3f})"
    assert labels[1] == f"RFM rank (AUC = {roc_auc_score(y, rank):.3f})"
    assert labels[2] == "random"
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    _png(fig)


def test_pr_curve_reports_average_precision_and_base_rate(churn) -> None:
    y, p = churn
    fig = plots.pr_figure(y, p)
    ax = fig.axes[0]
    labels = _legend(ax)
    assert labels[0] == f"model (AP = {average_precision_score(y, p):.3f})"
    base = ax.lines[-1]
    assert base.get_ydata()[0] == pytest.approx(y.mean())
    assert max(ax.lines[0].get_xdata()) == 1.0  # recall reaches 1
    _png(fig)


def test_calibration_uses_equal_count_bins_and_reports_brier() -> None:
    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    fig = plots.calibration_figure(y, p, bins=3)
    ax, hist = fig.axes
    model = ax.lines[1]
    np.testing.assert_allclose(model.get_xdata(), [0.15, 0.35, 0.85])
    np.testing.assert_allclose(model.get_ydata(), [0.0, 0.5, 1.0])
    brier = np.mean((p - y) ** 2)
    assert f"Brier = {brier:.4f}" in _legend(ax)[1]
    assert sum(patch.get_height() for patch in hist.patches) == 6  # histogram of every p
    _png(fig)
    with pytest.raises(ValueError, match="bins"):
        plots.calibration_figure(y, p, bins=7)


def test_perfect_predictor_gain_reaches_one_at_the_churn_rate() -> None:
    y = np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 0] * 2)  # churn rate 0.3
    fig = plots.gain_lift_figure(y, y.astype(float))
    gain, lift = fig.axes
    contacted, captured = gain.lines[0].get_xdata(), gain.lines[0].get_ydata()
    assert captured[0] == 0 and captured[-1] == pytest.approx(1.0)
    first_full = contacted[np.argmax(captured >= 1.0 - 1e-12)]
    assert first_full == pytest.approx(0.3)
    heights = [bar.get_height() for bar in _bars(lift)]
    assert len(heights) == 10
    # 20 rows, 2 per decile: the first three deciles hold all 6 churners -> lift 1 / 0.3
    np.testing.assert_allclose(heights, [1 / 0.3] * 3 + [0.0] * 7)
    _png(fig)


def test_decile_bars_equal_hand_computed_means() -> None:
    predicted = np.arange(20, dtype=float)  # bins by prediction, highest first: {19, 18}, {17, 16}, ...
    actual = predicted * 2 + 1
    fig = plots.decile_figure(actual, predicted)
    ax = fig.axes[0]
    heights = [bar.get_height() for bar in _bars(ax)]
    assert len(heights) == 20  # 10 bins, two bars each
    expected_pred = [(19 - 2 * i) + (18 - 2 * i) for i in range(10)]
    np.testing.assert_allclose(heights[:10], np.array(expected_pred) / 2)
    np.testing.assert_allclose(heights[10:], np.array(expected_pred) / 2 * 2 + 1)
    assert _legend(ax) == ["mean predicted", "mean actual"]
    _png(fig)


def test_importance_is_sorted_largest_at_top_and_limited() -> None:
    importance = {f"f{i}": float(i) for i in range(30)}
    fig = plots.importance_figure(importance, top=5)
    ax = fig.axes[0]
    bars = sorted(_bars(ax), key=lambda b: b.get_y(), reverse=True)  # top of the chart first
    assert [b.get_width() for b in bars] == [29.0, 28.0, 27.0, 26.0, 25.0]
    names = {round(t.get_position()[1]): t.get_text() for t in ax.get_yticklabels()}
    assert names[max(names)] == "f29"
    _png(fig)
    with pytest.raises(ValueError):
        plots.importance_figure({})


def test_contributions_bars_equal_mean_abs_and_strip_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    columns = ["a", "b", "c"]
    contribs = rng.normal(size=(3_000, 4)) * np.array([1.0, 3.0, 0.1, 5.0])  # last column is bias
    fig = plots.contributions_figure(contribs, columns, top=2)
    bars_ax, strip_ax = fig.axes
    widths = sorted((b.get_width() for b in _bars(bars_ax)), reverse=True)
    expected = np.abs(contribs[:, :3]).mean(axis=0)
    np.testing.assert_allclose(widths, [expected[1], expected[0]])  # bias ignored, top 2 only
    strips = [c for c in strip_ax.collections if isinstance(c, PathCollection)]
    assert len(strips) == 2 and all(len(s.get_offsets()) == 2_000 for s in strips)
    again = plots.contributions_figure(contribs, columns, top=2)
    again_strips = [c for c in again.axes[1].collections if isinstance(c, PathCollection)]
    for s, t in zip(strips, again_strips, strict=True):
        np.testing.assert_array_equal(s.get_offsets(), t.get_offsets())
    _png(fig)
    with pytest.raises(ValueError, match="shape"):
        plots.contributions_figure(contribs[:, :3], columns)


@pytest.mark.parametrize(
    "call",
    [
        lambda: plots.roc_figure([0, 1, 1], [0.1, 0.9]),
        lambda: plots.pr_figure([0, 1], [0.1, 0.9, 0.5]),
        lambda: plots.calibration_figure([], []),
        lambda: plots.gain_lift_figure([0, 1, 0], [0.2, 0.3]),
        lambda: plots.decile_figure([1.0, 2.0], [1.0]),
        lambda: plots.roc_figure([0, 1], [0.2, 0.8], baselines={"rank": [1, 2, 3]}),
        lambda: plots.roc_figure([0, 0], [0.2, 0.8]),
    ],
)
def test_bad_inputs_raise_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()
