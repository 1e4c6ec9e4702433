"""The model-health alert's lifecycle in a real store (SQLite, PostgreSQL), beside customer alerts: opened by
drift, updated without a second notice, left alone when customer alerts resolve, resolved when the drift is
gone."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from serving import alert_rules, alert_store, monitoring, store
from serving.config import AlertConfig, DriftConfig

T0 = datetime(2025, 1, 31)


def test_model_health_alert_lifecycle_beside_customer_alerts(store_url: str) -> None:
    eng = store.engine(store_url)
    config = AlertConfig.model_validate(
        {"rules": [{"kind": "risk", "min_churn_probability": 0.5}], "cooldown_hours": 72}
    )
    scores = pd.DataFrame(
        {
            "customer_id": ["c1"],
            "tier": ["gold"],
            "churn_probability": [0.9],
            "predicted_value": [100.0],
            "value_at_risk": [90.0],
        }
    )
    store.prepare(eng)
    alert_store.sync_alerts(eng, T0, alert_rules.evaluate(scores, config, None, T0), config)
    drifted = monitoring.assess({"amount_90d": 1.2, "predicted_value": 0.1}, DriftConfig())
    opened = monitoring.raise_health(eng, drifted, T0, config)
    assert opened.opened == 1 and len(opened.notify) == 1
    live = alert_store.list_alerts(eng, status="live")
    model = live[live["customer_id"] == alert_rules.MODEL_ID].iloc[0]
    assert model["kind"] == "model-health" and model["reasons"] == ["feature amount_90d: PSI 1.200 >= 0.25"]

    # the same drift a day later: the same alert, updated, not re-notified within the cool-down
    again = monitoring.raise_health(eng, drifted, T0 + timedelta(days=1), config)
    assert (again.opened, again.updated, again.notify) == (0, 1, [])
    # customer alerts synced without candidates resolve customer alerts only
    none = alert_rules.evaluate(scores.iloc[:0], config, None, T0)
    cleared = alert_store.sync_alerts(eng, T0 + timedelta(days=1), none, config)
    assert cleared.resolved == 1
    assert list(alert_store.list_alerts(eng, status="live")["customer_id"]) == [alert_rules.MODEL_ID]
    # back under the threshold: the model-health alert resolves itself
    calm = monitoring.assess({"amount_90d": 0.05, "predicted_value": 0.01}, DriftConfig())
    resolved = monitoring.raise_health(eng, calm, T0 + timedelta(days=2), config)
    assert resolved.resolved == 1 and alert_store.list_alerts(eng, status="live").empty
    row = alert_store.list_alerts(eng, status="resolved").set_index("customer_id").loc[alert_rules.MODEL_ID]
    assert row["resolved_by"] == "auto"
    with pytest.raises(ValueError, match="reserved for model alerts"):
        alert_store.sync_alerts(eng, T0, monitoring.health_candidates(drifted, T0), config)
