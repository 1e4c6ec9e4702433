"""The retention alert store: de-duplication, notification, auto-resolve and people's actions, with hand-built
score tables and real stores (a SQLite file and a PostgreSQL database). The rules alone are tested in
tests/unit/test_alerts.py."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import store
from serving.alert_rules import alert_payload, evaluate, webhook_id
from serving.alert_store import (
    OUTCOME_COLUMNS,
    acknowledge,
    export_alerts,
    get_alert,
    list_alerts,
    resolve,
    snooze,
    sync_alerts,
)
from serving.config import AlertConfig
from tests.helpers.frames import AT_RISK, SCORES, T0, H, alert_config, score_table


def _sync(engine: sa.Engine, at: datetime, scores: pd.DataFrame, config: AlertConfig = AT_RISK) -> Any:
    return sync_alerts(engine, at, evaluate(scores, config, None, at), config)


def _open(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    return {r["customer_id"]: r for r in list_alerts(engine, status="live").to_dict("records")}


# --- sync: de-duplication, notification, auto-resolve ------------------------------------------------------


def test_one_alert_per_customer_and_kind_updated_in_place_and_renotified_on_cooldown_or_worsening(
    engine: sa.Engine,
) -> None:
    r1 = _sync(engine, T0, SCORES)
    alerts = _open(engine)
    a_id, e_id = alerts["a"]["id"], alerts["e"]["id"]
    assert (r1.opened, r1.updated, r1.resolved, r1.notify) == (2, 0, 0, [(a_id, 1), (e_id, 1)])
    assert alerts["a"]["due_at"] == T0 + 24 * H

    # +24 h: a slightly worse (+2.9 %), e inside the margin (0.57 >= 0.55): both updated in place, no notice
    run2 = score_table(("a", "diamond", 0.72, 1000.0), ("e", "gold", 0.57, 300.0), ("b", "gold", 0.1, 500.0))
    r2 = _sync(engine, T0 + 24 * H, run2)
    assert (r2.opened, r2.updated, r2.resolved, r2.notify) == (0, 2, 0, [])
    alerts = _open(engine)
    assert (alerts["a"]["id"], alerts["a"]["version"]) == (a_id, 1)
    assert alerts["a"]["value_at_risk"] == pytest.approx(720.0)
    assert alerts["a"]["notified_value_at_risk"] == pytest.approx(700.0)
    assert alerts["a"]["updated_at"] == T0 + 24 * H and alerts["a"]["opened_at"] == T0

    # +36 h: a worsened by 200 >= 25 % of 700: re-notified with a new due time; e fell below 0.55: resolved
    r3 = _sync(engine, T0 + 36 * H, score_table(("a", "diamond", 0.9, 1000.0), ("e", "gold", 0.54, 300.0)))
    assert (r3.opened, r3.updated, r3.renotified, r3.resolved, r3.notify) == (0, 1, 1, 1, [(a_id, 2)])
    a = get_alert(engine, a_id)
    assert (a["version"], a["last_notified_at"], a["due_at"]) == (2, T0 + 36 * H, T0 + 60 * H)
    e = get_alert(engine, e_id)
    assert (e["status"], e["resolved_by"], e["resolved_at"]) == ("resolved", "auto", T0 + 36 * H)

    # +83 h: 47 h since the last notice, nothing worse: quiet; +84 h: cool-down passed: reminded
    assert _sync(engine, T0 + 83 * H, score_table(("a", "diamond", 0.9, 1000.0))).notify == []
    assert _sync(engine, T0 + 84 * H, score_table(("a", "diamond", 0.9, 1000.0))).notify == [(a_id, 3)]
    assert len(list_alerts(engine, status=None)) == 2  # never a second row for (a, at-risk)


def test_rerunning_the_same_as_of_changes_and_notifies_nothing(engine: sa.Engine) -> None:
    first = _sync(engine, T0, SCORES)
    before = list_alerts(engine, status=None)
    again = _sync(engine, T0, SCORES)
    assert (again.opened, again.resolved, again.notify) == (0, 0, [])
    pd.testing.assert_frame_equal(list_alerts(engine, status=None), before)
    assert first.opened == 2


@pytest.mark.parametrize(
    ("customer", "expect"),
    [
        (("a", "diamond", 0.56, 1000.0), "open"),  # below 0.6 but within the 0.05 margin
        (("a", "diamond", 0.54, 1000.0), "resolved"),  # below 0.55
        (("a", "silver", 0.95, 1000.0), "resolved"),  # no longer gold or better: no margin for tiers
        (("z", "gold", 0.9, 10.0), "resolved"),  # a not scored this run
    ],
)
def test_auto_resolve_with_margin(
    engine: sa.Engine, customer: tuple[str, str, float, float], expect: str
) -> None:
    _sync(engine, T0, score_table(("a", "diamond", 0.7, 1000.0)))
    result = _sync(engine, T0 + H, score_table(customer))
    (a,) = list_alerts(engine, status=None).query("customer_id == 'a'").to_dict("records")
    assert a["status"] == expect
    assert result.resolved == (expect == "resolved")


def test_top_k_alert_resolves_when_the_customer_leaves_the_top(engine: sa.Engine) -> None:
    config = alert_config({"kind": "top", "top_k_value_at_risk": 1})
    _sync(engine, T0, SCORES, config)
    assert list(_open(engine)) == ["a"]
    later = score_table(("a", "diamond", 0.7, 1000.0), ("b", "gold", 0.9, 1000.0))
    result = _sync(engine, T0 + H, later, config)
    assert (result.opened, result.resolved) == (1, 1)
    assert list(_open(engine)) == ["b"]


def test_acknowledged_alerts_are_renotified_only_when_worse(engine: sa.Engine) -> None:
    _sync(engine, T0, score_table(("a", "diamond", 0.7, 1000.0)))
    (a_id,) = list_alerts(engine)["id"].tolist()
    row = acknowledge(engine, a_id, "maria", at=T0 + H)
    assert (row["status"], row["owner"], row["updated_at"]) == ("acknowledged", "maria", T0 + H)
    assert list_alerts(engine, status="open").empty
    assert list_alerts(engine, status="acknowledged", owner="maria")["id"].tolist() == [a_id]
    assert list_alerts(engine, status="acknowledged", owner="li").empty

    quiet = _sync(engine, T0 + 100 * H, score_table(("a", "diamond", 0.7, 1000.0)))  # cool-down passed
    assert quiet.notify == []
    worse = _sync(engine, T0 + 101 * H, score_table(("a", "diamond", 0.9, 1000.0)))
    assert worse.notify == [(a_id, 2)]
    assert get_alert(engine, a_id)["status"] == "acknowledged"


def test_snoozed_alerts_stay_quiet_until_the_snooze_ends(engine: sa.Engine) -> None:
    _sync(engine, T0, score_table(("a", "diamond", 0.7, 1000.0)))
    (a_id,) = list_alerts(engine)["id"].tolist()
    assert snooze(engine, a_id, T0 + 120 * H)["status"] == "snoozed"
    during = _sync(
        engine, T0 + 72 * H, score_table(("a", "diamond", 0.95, 1000.0))
    )  # worse and cooled: quiet
    assert during.notify == []
    assert get_alert(engine, a_id)["status"] == "snoozed"
    after = _sync(engine, T0 + 120 * H, score_table(("a", "diamond", 0.95, 1000.0)))
    assert after.notify == [(a_id, 2)]
    a = get_alert(engine, a_id)
    assert (a["status"], a["snoozed_until"]) == ("open", None)


def test_resolved_by_hand_then_a_new_alert_if_it_still_fires(engine: sa.Engine) -> None:
    _sync(engine, T0, score_table(("a", "diamond", 0.7, 1000.0)))
    (a_id,) = list_alerts(engine)["id"].tolist()
    done = resolve(engine, a_id, "maria", at=T0 + 2 * H)
    assert (done["status"], done["resolved_by"], done["resolved_at"]) == ("resolved", "maria", T0 + 2 * H)
    with pytest.raises(ValueError, match="resolved"):
        acknowledge(engine, a_id, "li")
    with pytest.raises(KeyError):
        snooze(engine, 999, T0)
    again = _sync(engine, T0 + 24 * H, score_table(("a", "diamond", 0.7, 1000.0)))
    (new_id,) = list_alerts(engine)["id"].tolist()
    assert new_id != a_id and again.notify == [(new_id, 1)]


def test_list_alerts_ranks_by_value_at_risk_and_filters_by_tier(engine: sa.Engine) -> None:
    config = alert_config({"kind": "churn", "min_churn_probability": 0.1})
    _sync(engine, T0, SCORES, config)
    listed = list_alerts(engine)
    assert listed["customer_id"].tolist() == ["a", "b", "e", "c", "d"]
    assert listed["value_at_risk"].is_monotonic_decreasing
    assert list_alerts(engine, tier="gold")["customer_id"].tolist() == ["b", "e"]
    with pytest.raises(ValueError, match="closed"):
        list_alerts(engine, status="closed")


def test_a_failure_mid_sync_leaves_nothing_behind(engine: sa.Engine) -> None:
    _sync(engine, T0, SCORES)  # a and e open
    before = list_alerts(engine, status=None)

    def fail_on_auto_resolve(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE alerts") and "resolved_by" in statement:
            raise RuntimeError("connection lost")

    # run 2 opens b, updates a, then fails while resolving e
    run2 = score_table(("a", "diamond", 0.9, 1000.0), ("b", "gold", 0.9, 500.0), ("e", "gold", 0.1, 300.0))
    sa.event.listen(engine, "before_cursor_execute", fail_on_auto_resolve)
    try:
        with pytest.raises(RuntimeError, match="connection lost"):
            _sync(engine, T0 + 72 * H, run2)
    finally:
        sa.event.remove(engine, "before_cursor_execute", fail_on_auto_resolve)
    pd.testing.assert_frame_equal(list_alerts(engine, status=None), before)
    result = _sync(engine, T0 + 72 * H, run2)
    assert (result.opened, result.updated, result.resolved) == (1, 1, 1)


def test_duplicate_candidates_are_refused(engine: sa.Engine) -> None:
    candidates = evaluate(SCORES, AT_RISK, None, T0)
    with pytest.raises(ValueError, match="repeat"):
        sync_alerts(engine, T0, pd.concat([candidates, candidates.iloc[[0]]]), AT_RISK)
    assert list_alerts(engine, status=None).empty


# --- payload and export -------------------------------------------------------------------------------------


def test_alert_payload_and_webhook_id(engine: sa.Engine) -> None:
    result = _sync(engine, T0, score_table(("a", "diamond", 0.7, 1000.0)))
    ((alert_id, version),) = result.notify
    payload = alert_payload(get_alert(engine, alert_id))
    assert payload == {
        "alert_id": alert_id,
        "version": 1,
        "customer_id": "a",
        "kind": "at-risk",
        "tier": "diamond",
        "churn_probability": 0.7,
        "predicted_value": 1000.0,
        "value_at_risk": pytest.approx(700.0),
        "reasons": ["reason of a"],
        "playbook": "account manager call",
        "due_at": "2024-06-02T00:00:00",
    }
    assert json.loads(json.dumps(payload)) == payload
    assert alert_payload(list_alerts(engine).iloc[0]) == payload
    assert webhook_id(alert_id, version) == f"alert-{alert_id}-v1"


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_export_round_trip(engine: sa.Engine, tmp_path: Path, suffix: str) -> None:
    config = alert_config({"kind": "churn", "min_churn_probability": 0.1})
    _sync(engine, T0, SCORES, config)
    acknowledge(engine, int(list_alerts(engine)["id"].iloc[0]), "maria", at=T0 + H)
    stored = list_alerts(engine, status=None)
    path = tmp_path / f"alerts{suffix}"
    assert export_alerts(engine, path) == 5
    if suffix == ".json":
        back = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
    else:
        back = pd.read_csv(path, dtype={"customer_id": str, "owner": object, "resolved_by": object})
        back["reasons"] = back["reasons"].map(json.loads)
    assert back.columns.tolist() == [*stored.columns, *OUTCOME_COLUMNS]  # outcomes: none recorded yet
    assert back[OUTCOME_COLUMNS].isna().all().all()
    assert back["id"].tolist() == stored["id"].tolist()
    assert back["customer_id"].tolist() == ["a", "b", "e", "c", "d"]
    assert back["reasons"].tolist() == stored["reasons"].tolist()
    assert back["value_at_risk"].tolist() == pytest.approx(stored["value_at_risk"].tolist())
    assert back["status"].tolist() == stored["status"].tolist()
    assert pd.to_datetime(back["due_at"]).tolist()[:4] == stored["due_at"].tolist()[:4]
    assert back["due_at"].isna().tolist() == stored["due_at"].isna().tolist()  # bronze d: no playbook
    assert back["owner"].iloc[0] == "maria"
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        export_alerts(engine, tmp_path / "alerts.xlsx")


# --- property -----------------------------------------------------------------------------------------------

_run = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["diamond", "gold", "silver", "bronze"]),
        st.floats(0.0, 1.0),
        st.floats(0.0, 1000.0),
    ),
    max_size=3,
    unique_by=lambda r: r[0],
)
_action = st.tuples(st.sampled_from(["ack", "snooze", "resolve", "none"]), st.integers(0, 5))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(st.tuples(_run, _action, st.integers(0, 60)), min_size=1, max_size=6))
def test_never_more_than_one_live_alert_per_customer_and_kind(runs: list[Any]) -> None:
    config = alert_config(
        {"kind": "at-risk", "min_tier": "gold", "min_churn_probability": 0.5},
        {"kind": "top", "top_k_value_at_risk": 2},
        {"kind": "drop", "tier_drop": 1},
        cooldown_hours=24,
    )
    with tempfile.TemporaryDirectory() as folder:
        engine = store.prepare(sa.create_engine(f"sqlite:///{Path(folder) / 'alerts.db'}"))
        at, previous = T0, None
        for rows, (action, pick), gap in runs:
            at += gap * H
            scores = score_table(*rows)
            result = sync_alerts(engine, at, evaluate(scores, config, previous, at), config)
            previous = dict(zip(scores["customer_id"], scores["tier"], strict=True))
            assert len({alert_id for alert_id, _ in result.notify}) == len(result.notify)
            live = list_alerts(engine, status="live")
            assert not live.duplicated(["customer_id", "kind"]).any()
            if action != "none" and not live.empty:
                alert_id = int(live["id"].iloc[pick % len(live)])
                if action == "ack":
                    acknowledge(engine, alert_id, "maria", at=at)
                elif action == "snooze":
                    snooze(engine, alert_id, at + 12 * H, at=at)
                else:
                    resolve(engine, alert_id, "maria", at=at)
        engine.dispose()


def test_a_run_queues_every_notified_alert_for_every_endpoint_in_one_write(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What serving.batch queues: each notified (alert, version) once per endpoint, highest value at risk
    first, with the payload of the stored alert; an alert marked "do not contact" is left out; a re-run
    queues nothing twice."""
    from serving import batch, consent
    from serving.config import ServingConfig
    from serving.outbox import OUTBOX

    synced = _sync(engine, T0, SCORES)
    alerts = _open(engine)
    a_id, e_id = alerts["a"]["id"], alerts["e"]["id"]
    assert synced.notify == [(a_id, 1), (e_id, 1)]
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    hooks = [
        {"name": n, "url": f"http://127.0.0.1:9/{n}", "secret_env": "HOOK_SECRET"} for n in ("crm", "ops")
    ]
    (tmp_path / "serving.yaml").write_text(json.dumps({"webhooks": {"endpoints": hooks}}), encoding="utf-8")
    config = ServingConfig.load(tmp_path / "serving.yaml")
    batch._enqueue(engine, synced.notify, config)
    batch._enqueue(engine, synced.notify, config)  # a re-run of the step
    query = sa.select(OUTBOX.c.webhook_id, OUTBOX.c.destination, OUTBOX.c.payload).order_by(
        OUTBOX.c.created_at
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    assert [(r.webhook_id, r.destination) for r in rows] == [
        (f"{webhook_id(a_id, 1)}-crm", "crm"),
        (f"{webhook_id(a_id, 1)}-ops", "ops"),
        (f"{webhook_id(e_id, 1)}-crm", "crm"),
        (f"{webhook_id(e_id, 1)}-ops", "ops"),
    ]
    assert json.loads(rows[2].payload) == alert_payload(get_alert(engine, e_id))

    with engine.begin() as conn:
        conn.execute(OUTBOX.delete())
    consent.mark(engine, {"e"})
    batch._enqueue(engine, synced.notify, config)
    with engine.connect() as conn:
        assert [r.webhook_id for r in conn.execute(query)] == [
            f"{webhook_id(a_id, 1)}-crm",
            f"{webhook_id(a_id, 1)}-ops",
        ]
