"""The setup the effect tests and the capacity tests share (tests/{unit,integration}/test_effect.py and
test_effect_capacity.py): the scores that fire, the batch run's alert step on them, serving configs, the
dashboard in process and the CLI's store and environment on the CDNOW champion."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd
import sqlalchemy as sa
import yaml

from serving import alert_store, batch
from serving.config import ServingConfig
from serving.scoring import Reasons
from tests.helpers import ROOT, copy_store, write_serving_config
from tests.helpers.frames import TIERS, score_table
from tests.helpers.webhooks import WebhookReceiver

if TYPE_CHECKING:
    from serving.champion import Served

SECRET_ENV = "EFFECT_TEST_SECRET"
"""The environment variable the webhook endpoint of `serving_config` reads its signing secret from."""

ROWS = {
    "a": ("a", "diamond", 0.7, 1000.0),
    "b": ("b", "gold", 0.7, 500.0),
    "e": ("e", "gold", 0.65, 300.0),
    "f": ("f", "gold", 0.8, 200.0),
    "h": ("h", "gold", 0.9, 100.0),
    "x": ("x", "silver", 0.9, 100.0),  # silver: the at-risk rule (min_tier gold) does not fire
}
"""(customer_id, tier, churn_probability, predicted_value) of the customers the tests score; value at risk
a 700, b 350, e 195, f 160, h 90, x 90. Assignment numbers of rule at-risk opening at T0 (pinned in
tests/unit/test_effect.py): a .482, b .027, e .536, f .864, h .011."""


def scores(customers: str) -> tuple[tuple[str, str, float, float], ...]:
    """The ROWS of these customers, in this order: scores("aefhx")."""
    return tuple(ROWS[c] for c in customers)


def serving_config(
    store_url: str, base: dict[str, Any], receiver: WebhookReceiver | None = None, **alerts: Any
) -> ServingConfig:
    """A serving config on `store_url` with the `base` alerts section (`alerts` overriding its settings)
    and, with a receiver, one webhook endpoint to it signed with the secret in SECRET_ENV."""
    hooks = (
        {"endpoints": [{"name": "crm", "url": receiver.url, "secret_env": SECRET_ENV, "timeout_s": 2}]}
        if receiver is not None
        else {}
    )
    return ServingConfig(store_url=store_url, alerts={**base, **alerts}, webhooks=hooks)


def alert_step(
    eng: sa.Engine,
    config: ServingConfig,
    at: datetime,
    *rows: tuple[str, str, float, float],
    lapse: pd.DataFrame | None = None,
) -> alert_store.SyncResult:
    """The batch run's alert step (serving.batch._raise_alerts) on a hand-built score table at `at`, then
    delivery when the config has endpoints."""
    table = score_table(*rows).assign(previous_tier=None)
    n = len(table)
    why = Reasons(
        np.zeros((n, 1), dtype=bool),
        np.zeros((n, 1)),
        np.full((n, 1), "", dtype=object),
        np.full((n, 1), "", dtype=object),
    )
    rules = config.alert_rules(TIERS)
    assert rules is not None
    candidates = batch.evaluate_rules(table, at, rules, lapse)
    synced = batch._raise_alerts(eng, table, why, at, config, rules, None, candidates)
    if config.endpoints():
        batch.deliver(eng, config)
    return synced


def dashboard_get(path: str, served: Served | None = None) -> httpx.Response:
    """GET a dashboard page in process (the store and config from the environment), on a fresh state;
    `served` is the model the service would be serving (default: none loaded)."""
    from serving import dashboard

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=dashboard.create_app(lambda: served))
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
            return await client.get(path)

    dashboard._state.cache_clear()
    try:
        with ThreadPoolExecutor(1) as pool:  # a thread of its own: an event loop may run in this one
            return pool.submit(asyncio.run, get()).result()
    finally:
        dashboard._state.cache_clear()


def load_serving(folder: Path, alerts: dict[str, Any]) -> ServingConfig:
    """`folder/serving.yaml` with this alerts section, loaded as `diamond` loads it."""
    path = folder / "serving.yaml"
    path.write_text(yaml.safe_dump({"alerts": alerts}), encoding="utf-8")
    return ServingConfig.load(path)


def yaml_alerts(control_share: float, costs: dict[str, float]) -> dict[str, Any]:
    """The repository's serving.yaml alerts section with a control share and these playbook costs."""
    section = yaml.safe_load((ROOT / "serving.yaml").read_text(encoding="utf-8"))["alerts"]
    section["control_share"] = control_share
    for tier, cost in costs.items():
        section["playbooks"][tier]["cost"] = cost
    return dict(section)


def cli_store(champion: Path, work: Path, alerts: dict[str, Any]) -> tuple[dict[str, str], str]:
    """A private copy of the CDNOW champion's MLflow store in `work`, its serving.yaml with this alerts
    section and a fresh SQLite serving store: the environment for `run_diamond`, and the store's URL."""
    copy_store(champion / "trained", work)
    write_serving_config(work, {"alerts": alerts})
    url = f"sqlite:///{work / 'diamond.db'}"
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "DIAMOND_STORE_URL": url,
        "DIAMOND_SERVING_CONFIG": str(work / "serving.yaml"),
    }
    return env, url
