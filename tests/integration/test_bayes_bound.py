"""The benchmark's Bayes bound (bench/bayes_bound.py) on a small synthetic history: it is issue 16's measure
of what any model can reach, so it must be calibrated (its derivation matches the generator) and the
evidence it reads must help."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bench import bayes_bound
from features.build import build_labels
from features.datasets import synthetic as S
from features.history import load_history
from training import metrics

T = datetime(2025, 6, 30, 23, 59, 59, 999999)
H = 182


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("bayes") / "history"
    S.write(folder, 4000, seed=3)
    history = load_history(str(folder))
    customers = history.customers.to_pandas()
    cancelled = history.cancellations.to_pandas()
    gone = set(cancelled.loc[cancelled["timestamp"] <= T, "customer_id"])
    eligible = customers[(customers["signup_date"] <= T) & ~customers["customer_id"].isin(gone)]
    ids = eligible["customer_id"].reset_index(drop=True)
    spine = pa.table({"customer_id": ids.to_numpy(), "cutoff": pa.array([T] * len(ids), pa.timestamp("us"))})
    labels = build_labels(history, spine, H).to_pandas().set_index("customer_id").loc[ids]
    t = (T - S.START) / timedelta(days=1)
    seen = bayes_bound.observed(Path(folder), ids, t)
    full = bayes_bound.bayes(seen, t, H, 300, seed=0)
    blind = bayes_bound.bayes(seen, t, H, 300, seed=0, ignore=frozenset({"campaigns", "decay", "service"}))
    return {"y": labels["churned"].to_numpy(), "value": labels["future_value"].to_numpy(), "sub": seen.sub,
            "full": full, "blind": blind}  # fmt: skip


def test_the_bound_is_calibrated_by_group(scored: dict) -> None:
    y, sub, (p, v, ess) = scored["y"], scored["sub"], scored["full"]
    assert len(y) > 2500 and 200 < sub.sum() < 0.2 * len(y)
    for group in (sub, ~sub):  # within three binomial standard errors of the realised rate
        se = np.sqrt(y[group].mean() * (1 - y[group].mean()) / group.sum())
        assert abs(p[group].mean() - y[group].mean()) < 3 * se
    assert abs(metrics.aggregate_error(scored["value"], v)) < 0.10
    assert np.all((p >= 0) & (p <= 1 + 1e-9)) and np.all(ess >= 1 - 1e-9)  # weights sum to 1 in floats


def test_the_evidence_it_reads_improves_the_ranking(scored: dict) -> None:
    y, (p, v, _), (p0, v0, _) = scored["y"], scored["full"], scored["blind"]
    assert metrics.roc_auc(y, p) > metrics.roc_auc(y, p0) + 0.002
    assert metrics.roc_auc(y, p) > 0.9
    assert metrics.normalized_gini(scored["value"], v) > metrics.normalized_gini(scored["value"], v0)
