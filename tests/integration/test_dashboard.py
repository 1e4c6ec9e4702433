"""The retention dashboard's store and pages in process: the score history written with each snapshot, and the
overview of a store no batch run has measured drift in. The served dashboard is tested in
tests/e2e/test_dashboard.py."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pandas as pd
import pytest

from serving import dashboard, monitoring, store


def test_score_history_is_written_with_the_snapshot_and_a_rerun_replaces_its_rows(store_url: str) -> None:
    eng = store.prepare(store.engine(store_url))

    def run(as_of: str, p: list[float]) -> None:
        scores = pd.DataFrame(
            {
                "customer_id": ["a", "b"][: len(p)],
                "as_of": datetime.fromisoformat(as_of),
                "churn_probability": p,
                "predicted_value": 100.0,
                "value_at_risk": [100.0 * x for x in p],
                "tier": "gold",
                "model_version": "3",
                "reasons": "[]",
            }
        )
        store.write_snapshot(eng, scores[["customer_id"]], scores, {"as_of": as_of})

    run("2024-01-01", [0.1, 0.2])
    run("2024-02-01", [0.3, 0.4])
    run("2024-02-01", [0.5])  # the same as_of again: its rows replaced, b drops out of that run
    a, b = store.score_history(eng, "a"), store.score_history(eng, "b")
    assert a["churn_probability"].tolist() == [0.1, 0.5] and a["model_version"].tolist() == ["3", "3"]
    assert a["as_of"].tolist() == [datetime(2024, 1, 1), datetime(2024, 2, 1)]
    assert b["churn_probability"].tolist() == [0.2]
    with pytest.raises(ValueError, match="tier"):  # refused before anything is written
        only_ids = pd.DataFrame({"customer_id": ["c"]})
        store.write_snapshot(eng, only_ids, only_ids, {})
    assert store.read_rows(eng, store.SCORES, ["a", "c"])["customer_id"].tolist() == ["a"]


def test_overview_before_any_drift_says_so(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store no batch run has measured drift in (e.g. a model without a drift reference), in process."""
    url = store_url
    monkeypatch.setenv("DIAMOND_STORE_URL", url)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=dashboard.create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
            return await client.get("/overview")

    dashboard._state.cache_clear()  # the per-worker state, here read from this empty store
    try:
        with ThreadPoolExecutor(1) as pool:  # a thread of its own: Playwright's loop runs in this one
            reply = pool.submit(asyncio.run, get()).result()
    finally:
        dashboard._state.cache_clear()
    assert monitoring.latest_drift(store.engine(url)) is None and reply.status_code == 200
    assert "No drift measured yet" in reply.text and 'class="drift"' not in reply.text
