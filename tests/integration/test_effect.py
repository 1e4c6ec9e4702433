"""Control groups, outcomes and the effect table against real stores (a SQLite file and a PostgreSQL schema)
and a real webhook receiver: the batch run's alert step (serving.batch._raise_alerts) holds a share out,
delivers nothing for it, keeps the arms across re-runs and runs, and the outcomes recorded from a hand-built
history are the hand-computed ones. Pure parts: tests/unit/test_effect.py."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from features.history import history_from_frames
from serving import control, effect, outcomes, store
from serving.alert_store import export_alerts, list_alerts
from tests.helpers.effect import (
    SECRET_ENV,
    alert_step,
    cli_store,
    dashboard_get,
    scores,
    serving_config,
    yaml_alerts,
)
from tests.helpers.frames import T0, score_table
from tests.helpers.webhooks import WEBHOOK_SECRET, WebhookReceiver

D = timedelta(days=1)
RULES = {
    "control_share": 0.5,
    "cooldown_hours": 48,
    "rules": [{"kind": "at-risk", "min_tier": "gold", "min_churn_probability": 0.6}],
    "playbooks": {
        "diamond": {"text": "account manager call", "due_within_hours": 24, "cost": 40},
        "gold": {"text": "personal email with offer", "due_within_hours": 72, "cost": 5},
        "silver": None,
        "bronze": None,
    },
}
# assignment numbers of rule at-risk opening at T0 (tests/unit/test_effect.py pins them): a .482, b .027,
# c .328, d .125, e .536, f .864, g .138, h .011. With a share of 0.5: a, b, c, d, g, h held out.


FIRING = scores("aefhx")  # x is silver: no rule fires


def _purchases(**columns: list[float]) -> pd.DataFrame:
    """a and f before T0 only, e at T0 + 5 d and 6 d, h at T0 + 12 d (with `columns` added, e.g. margin)."""
    return pd.DataFrame(
        {
            "customer_id": ["a", "e", "e", "f", "h", "a"],
            "timestamp": [T0 + k * D for k in (-40, 5, 6, -30, 12, -20)],
            "amount": [10.0, 30.0, 20.0, 15.0, 90.0, 5.0],
            **columns,
        }
    )


def test_a_share_is_held_out_never_delivered_and_the_arms_stay_put(
    engine: sa.Engine, store_url: str, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, WEBHOOK_SECRET)
    config = serving_config(store_url, RULES, receiver)
    first = alert_step(engine, config, T0, *FIRING)
    assert first.opened == 2  # e and f alerted; a and h held out
    alerts = list_alerts(engine, status="live")
    assert sorted(alerts["customer_id"]) == ["e", "f"]
    held = control.list_controls(engine, live=True)
    assert sorted(held["customer_id"]) == ["a", "h"]
    assert set(held["share"]) == {0.5} and set(held["opened_at"]) == {T0}
    assert held.set_index("customer_id").loc["a", "playbook"] == "account manager call"
    sent = {json.loads(r.body)["customer_id"] for r in receiver.requests}
    assert sent == {"e", "f"}  # nothing delivered for a control

    # the same run again: the same arms, nothing new anywhere
    again = alert_step(engine, config, T0, *FIRING)
    assert (again.opened, again.notify) == (0, [])
    assert control.list_controls(engine)["id"].tolist() == held["id"].tolist()
    assert sorted(list_alerts(engine, status="live")["customer_id"]) == ["e", "f"]

    # a day later (new assignment numbers for new alerts): a and h stay controls while they fire or hold
    # (h at 0.56 >= 0.6 - 0.05 holds); b fires for the first time: drawn at T0 + 1 d
    later = T0 + D
    b_unit = control.unit("b", "at-risk", later)
    alert_step(
        engine, config, later,
        ("a", "diamond", 0.9, 1000.0), ("e", "gold", 0.65, 300.0), ("f", "gold", 0.8, 200.0),
        ("h", "gold", 0.56, 100.0), ("b", "gold", 0.7, 500.0),
    )  # fmt: skip
    live = control.list_controls(engine, live=True).set_index("customer_id")
    assert sorted(live.index) == sorted(["a", "h", *(["b"] if b_unit < 0.5 else [])])
    assert live.loc["a", "opened_at"] == T0 and live.loc["a", "value_at_risk"] == pytest.approx(900.0)
    assert ("b" in set(list_alerts(engine, status="live")["customer_id"])) == (b_unit >= 0.5)
    assert not ({"a", "h"} & set(list_alerts(engine, status=None)["customer_id"]))

    # h no longer holds: its control closes; a fires on: still a control, never an alert
    alert_step(engine, config, later + D, ("a", "diamond", 0.9, 1000.0), ("h", "gold", 0.3, 100.0))
    everyone = control.list_controls(engine).set_index("customer_id")
    assert everyone.loc["h", "closed_at"] == later + D and pd.isna(everyone.loc["a", "closed_at"])
    sent = {json.loads(r.body)["customer_id"] for r in receiver.requests}
    assert not ({"a", "h"} & sent)


def test_a_live_alert_stays_treated_when_controls_are_switched_on(engine: sa.Engine, store_url: str) -> None:
    alert_step(engine, serving_config(store_url, RULES, control_share=0.0), T0, *FIRING)
    assert sorted(list_alerts(engine, status="live")["customer_id"]) == ["a", "e", "f", "h"]
    # a's and h's numbers at T0 + 1 d decide nothing: their alerts are live, and they stay in them
    alert_step(engine, serving_config(store_url, RULES, control_share=0.9), T0 + D, *FIRING)
    assert sorted(list_alerts(engine, status="live")["customer_id"]) == ["a", "e", "f", "h"]
    assert control.list_controls(engine).empty


def test_outcomes_recorded_from_the_history_as_known_and_the_effect_table(
    engine: sa.Engine, store_url: str, tmp_path: Path
) -> None:
    config = serving_config(store_url, RULES)
    alert_step(engine, config, T0, *FIRING)  # treated e, f; control a, h
    tx = _purchases()
    history = history_from_frames(tx, as_of=T0 + 60 * D)

    # known at T0 + 10 d: e bought (saved, 5 days, 50 so far); the rest pending, never lost
    early = outcomes.record(engine, history, 30, T0 + 10 * D)
    assert early.count("treated", "saved") == 1 and early.count("treated", "pending") == 1
    assert early.count("control", "pending") == 2 and early.count("control", "lost") == 0
    got = outcomes.read(engine).set_index("customer_id")
    assert got.loc["e", "outcome"] == "saved" and got.loc["e", "days_to_outcome"] == pytest.approx(5.0)
    assert got.loc["e", "value_after"] == pytest.approx(50.0) and not got.loc["e", "mature"]
    assert got.loc["f", "outcome"] == "pending" and got.loc["a", "outcome"] == "pending"

    # to the history's end (T0 + 60 d, past every window): e saved (50), f lost; control h saved (90), a lost
    full = outcomes.record(engine, history, None)
    assert full.end == T0 + 60 * D
    got = outcomes.read(engine).set_index("customer_id")
    assert got["outcome"].to_dict() == {"a": "lost", "e": "saved", "f": "lost", "h": "saved"}
    assert got["arm"].to_dict() == {"a": "control", "e": "treated", "f": "treated", "h": "control"}
    assert got["value_after"].to_dict() == {"a": 0.0, "e": 50.0, "f": 0.0, "h": 90.0}
    assert got["mature"].all() and set(got["horizon_days"]) == {30}
    assert got.loc["f", "outcome_at"] == T0 + 30 * D and got.loc["h", "days_to_outcome"] == pytest.approx(
        12.0
    )

    # a backfill with an earlier end leaves what a later one saw
    back = outcomes.record(engine, history, 30, T0 + 2 * D)
    assert (
        back.skipped == 4
        and outcomes.read(engine)["outcome"].tolist()
        == got.loc[outcomes.read(engine)["customer_id"], "outcome"].tolist()
    )

    # the export carries each alert's outcome
    export_alerts(engine, tmp_path / "alerts.json", status=None)
    exported = {r["customer_id"]: r for r in json.loads((tmp_path / "alerts.json").read_text())}
    assert set(exported) == {"e", "f"}  # the controls are no alerts
    assert exported["e"]["outcome"] == "saved" and exported["e"]["value_after"] == 50.0
    assert exported["f"]["outcome"] == "lost" and exported["f"]["days_to_outcome"] == 30.0
    assert exported["f"]["outcome_at"] == (T0 + 30 * D).isoformat() and exported["f"]["outcome_final"] is True
    export_alerts(engine, tmp_path / "alerts.csv", status=None)
    flat = pd.read_csv(tmp_path / "alerts.csv").set_index("customer_id")
    assert flat.loc["e", "outcome"] == "saved" and flat.loc["f", "value_after"] == 0.0

    # the effect: gold treated e (saved), f (lost): 1 of 2, value 25 a head; control h (gold, saved) 1 of 1;
    # diamond: control a only. Gold: difference 0.5 - 1 = -0.5, -1 customer, value (25 - 90) * 2 = -130
    costs = effect.playbook_costs(
        config.alert_rules(["diamond", "gold", "silver", "bronze"]), ["diamond", "gold"]
    )  # type: ignore[arg-type]
    table = effect.report(effect.load(engine), costs | {"silver": 0.0, "bronze": 0.0})
    gold = table[(table["scope"] == "cumulative") & (table["tier"] == "gold")].iloc[0]
    assert (gold["treated"], gold["treated_saved"], gold["control"], gold["control_saved"]) == (2, 1, 1, 1)
    assert gold["incremental_saved"] == pytest.approx(-1.0)
    assert (gold["incremental_value"], gold["cost"]) == pytest.approx((-130.0, 10.0))
    assert gold["roi"] == pytest.approx(-14.0)  # (-130 - 10) / 10


def test_the_run_that_opens_episodes_records_them_pending_as_computed_from_every_event(
    engine: sa.Engine, store_url: str
) -> None:
    """Episodes opened at the history's end have nothing in (T0, end] to look at: recorded at the opening
    run inside the database, neither read back nor their events read, exactly as `compute` gives them from
    every event, a purchase at T0 itself included (outside the window); recorded again at the same end,
    they go through `compute` and stay the same."""
    alert_step(engine, serving_config(store_url, RULES), T0, *FIRING)  # treated e, f; control a, h
    tx = pd.concat(
        [_purchases(), pd.DataFrame({"customer_id": ["e"], "timestamp": [T0], "amount": [7.0]})],
        ignore_index=True,
    )
    history = history_from_frames(tx, as_of=T0 + 60 * D)
    assert outcomes._events(history, {"a", "e"}, T0, watched=set())[0].empty
    assert outcomes.episodes(engine, T0).empty and len(outcomes.episodes(engine, T0 + D)) == 4
    opened = outcomes.record(engine, history, 30, T0)
    assert opened.count("treated", "pending") == 2 and opened.count("control", "pending") == 2
    assert opened.count("treated") + opened.count("control") == 4
    got = outcomes.read(engine).sort_values(["arm", "episode_id"]).reset_index(drop=True)
    eps = outcomes.episodes(engine).sort_values(["arm", "episode_id"]).reset_index(drop=True)
    every = outcomes.compute(eps.assign(horizon_days=30), tx, T0)
    for column in outcomes.OUTCOME_COLUMNS:
        stored, computed = ([None if pd.isna(v) else v for v in f[column]] for f in (got, every))
        assert stored == computed, column
    assert (got["value_after"] == 0.0).all() and set(got["observed_until"]) == {T0}
    assert set(got["horizon_days"]) == {30} and set(got["computed_at"]) == {T0}
    assert len(outcomes.episodes(engine, T0)) == 4  # recorded now: read back from here on
    again = outcomes.record(engine, history, 30, T0)
    assert again.counts == opened.counts
    assert outcomes.read(engine).sort_values(["arm", "episode_id"]).reset_index(drop=True).equals(got)


def test_outcomes_and_the_effect_in_profit_when_the_model_predicts_margin(
    engine: sa.Engine, store_url: str
) -> None:
    """The same alerts as above, valued as a margin model values them (features.value): margin minus the
    cost-to-serve of the interactions in the window; a history without margins is refused, nothing written."""
    from features.value import ValueTarget, ValueTargetError

    config = serving_config(store_url, RULES)
    alert_step(engine, config, T0, *FIRING)  # treated e, f; control a, h
    tx = _purchases(margin=[3.0, 9.0, -2.0, 4.0, 30.0, 1.0])
    ix = pd.DataFrame(
        {
            "customer_id": ["e", "e", "f", "h", "h"],
            "timestamp": [T0 + k * D for k in (3, 40, 8, 1, 2)],  # e's second ticket is after the window
            "type": ["support_ticket", "support_ticket", "complaint", "support_ticket", "visit"],
        }
    )
    margin = ValueTarget("margin", {"support_ticket": 4.0, "complaint": 10.0})
    with pytest.raises(ValueTargetError, match="needs a 'margin' column"):
        outcomes.record(
            engine, history_from_frames(tx.drop(columns="margin"), as_of=T0 + 60 * D), 30, value=margin
        )
    assert outcomes.read(engine).empty
    outcomes.record(engine, history_from_frames(tx, interactions=ix, as_of=T0 + 60 * D), 30, value=margin)
    got = outcomes.read(engine).set_index("customer_id")
    # by hand over (T0, T0 + 30 d]: e 9 - 2 - 4 = 3; f 0 - 10 = -10 (lost, and cost a complaint);
    # h 30 - 4 = 26 (the visit costs nothing); a nothing
    assert got["value_after"].to_dict() == {"a": 0.0, "e": 3.0, "f": -10.0, "h": 26.0}
    assert got["outcome"].to_dict() == {"a": "lost", "e": "saved", "f": "lost", "h": "saved"}
    # gold: treated e, f at (3 - 10) / 2 = -3.5 a head, control h 26: (-3.5 - 26) x 2 = -59; cost 2 x 5
    costs = {"diamond": 40.0, "gold": 5.0, "silver": 0.0, "bronze": 0.0}
    table = effect.report(effect.load(engine), costs)
    gold = table[(table["scope"] == "cumulative") & (table["tier"] == "gold")].iloc[0]
    assert (gold["incremental_value"], gold["cost"]) == pytest.approx((-59.0, 10.0))
    assert gold["roi"] == pytest.approx(-6.9)  # (-59 - 10) / 10


def test_outcomes_of_a_mixed_history_judge_subscribers_by_cancellation(
    engine: sa.Engine, store_url: str
) -> None:
    from features.config import DatasetConfig

    alert_step(engine, serving_config(store_url, RULES), T0, *FIRING)  # treated e, f; control a, h
    history = history_from_frames(
        pd.DataFrame(
            {"customer_id": ["a", "e", "f", "h"], "timestamp": [T0 - 9 * D] * 4, "amount": [1.0] * 4}
        ),
        customers=pd.DataFrame(
            {"customer_id": ["a", "e", "f", "h"], "is_subscriber": [True, True, False, True]}
        ),
        cancellations=pd.DataFrame({"customer_id": ["e"], "timestamp": [T0 + 7 * D]}),
        config=DatasetConfig(churn="mixed"),
        as_of=T0 + 40 * D,
    )
    outcomes.record(engine, history, 30)
    got = outcomes.read(engine).set_index("customer_id")
    # subscribers a, h: no cancellation over the window: saved at its end; e cancelled after 7 days: lost;
    # f is judged by silence: no purchase in the window, lost at its end
    assert got["outcome"].to_dict() == {"a": "saved", "e": "lost", "f": "lost", "h": "saved"}
    assert got["days_to_outcome"].to_dict() == {"a": 30.0, "e": 7.0, "f": 30.0, "h": 30.0}


def test_outcomes_without_a_horizon_are_refused_before_anything_is_written(
    engine: sa.Engine, store_url: str
) -> None:
    alert_step(engine, serving_config(store_url, RULES), T0, *FIRING)
    history = history_from_frames(
        pd.DataFrame({"customer_id": ["e"], "timestamp": [T0 + D], "amount": [5.0]})
    )
    with pytest.raises(
        ValueError, match=r"4 alert\(s\) or control\(s\) have no outcome horizon yet.*--horizon"
    ):
        outcomes.record(engine, history, None)
    assert outcomes.read(engine).empty


def test_a_rollback_undoes_the_runs_controls_and_their_outcomes(engine: sa.Engine, store_url: str) -> None:
    from serving import runs

    config = serving_config(store_url, RULES)
    history = history_from_frames(
        pd.DataFrame({"customer_id": ["a"], "timestamp": [T0 - D], "amount": [1.0]}), as_of=T0 + 60 * D
    )
    runs.checkpoint(engine, T0)
    alert_step(engine, config, T0, *FIRING)  # controls a and h
    outcomes.record(engine, history, 30, T0)
    before = control.list_controls(engine)
    later = T0 + D
    newcomer = next(c for c in "bcdg" if control.unit(c, "at-risk", later) < 0.5)
    runs.checkpoint(engine, later)
    # h falls out (its control closes), the newcomer fires and is held out at T0 + 1 d
    alert_step(engine, config, later, ("a", "diamond", 0.7, 1000.0), (newcomer, "gold", 0.9, 100.0))
    outcomes.record(engine, history, 30, later)
    after = control.list_controls(engine).set_index("customer_id")
    assert after.loc["h", "closed_at"] == later and after.loc[newcomer, "opened_at"] == later
    assert newcomer in set(outcomes.read(engine, arm="control")["customer_id"])

    runs.rollback(engine, later)
    back = control.list_controls(engine)
    assert back[["id", "customer_id", "opened_at", "closed_at"]].equals(
        before[["id", "customer_id", "opened_at", "closed_at"]]
    )
    assert sorted(outcomes.read(engine, arm="control")["customer_id"]) == ["a", "h"]
    treated = outcomes.read(engine, arm="treated")
    assert set(treated["episode_id"]) == set(list_alerts(engine, status=None)["id"])


def test_the_effect_page(
    engine: sa.Engine, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    config = serving_config(store_url, RULES)
    alert_step(engine, config, T0, *FIRING)  # treated e, f (gold); control a (diamond), h (gold)
    tx = pd.DataFrame(
        {"customer_id": ["e", "h"], "timestamp": [T0 + 5 * D, T0 + 12 * D], "amount": [50.0, 90.0]}
    )
    outcomes.record(engine, history_from_frames(tx, as_of=T0 + 60 * D), 30)
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump({"alerts": RULES}), encoding="utf-8")
    monkeypatch.setenv("DIAMOND_STORE_URL", store_url)
    monkeypatch.setenv("DIAMOND_SERVING_CONFIG", str(tmp_path / "serving.yaml"))
    page = dashboard_get("/effect")
    assert page.status_code == 200
    gold = re.search(r'<tr data-tier="gold" data-kind="at-risk">(.*?)</tr>', page.text, re.S)
    assert gold is not None
    cells = [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", gold.group(1), re.S)
    ]
    # gold: treated e saved, f lost (1 of 2), control h saved (1 of 1): -50 points, -1 customer,
    # value (25 - 90) * 2 = -130, cost 2 * 5 = 10, ROI (-130 - 10) / 10 = -1400 %
    assert cells[3:7] == ["2", "50.0 %", "1", "100.0 %"]
    assert cells[7].startswith("-50.0 pts") and cells[8] == "-1.0"
    assert cells[9].startswith("-130.00") and cells[10:13] == ["10.00", "-1400 %", "0"]
    # no model served here (the dashboard in process): revenue, as `diamond effect` says without one
    assert (
        "Value: revenue: net amount (refunds negative) (no served model; value_after and incr. value "
        "measure it)."
    ) in " ".join(html.unescape(page.text).split())

    broken = {**RULES, "playbooks": {**RULES["playbooks"], "gold": {"text": "email", "due_within_hours": 1}}}
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump({"alerts": broken}), encoding="utf-8")
    refused = dashboard_get("/effect")
    assert refused.status_code == 200 and "alerts.playbooks.gold.cost: missing" in refused.text


def test_the_customer_page_shows_each_alerts_outcome(
    engine: sa.Engine, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = score_table(("e", "gold", 0.65, 300.0), ("f", "gold", 0.8, 200.0)).assign(
        as_of=T0, model_version="1", reasons="[]", rfm_segment="loyal", cold_start=False
    )
    store.write_snapshot(engine, table[["customer_id"]], table, {"as_of": T0.isoformat()})
    alert_step(engine, serving_config(store_url, RULES, control_share=0.0), T0, *FIRING[1:3])
    tx = pd.DataFrame({"customer_id": ["e"], "timestamp": [T0 + 3 * D], "amount": [42.0]})
    outcomes.record(engine, history_from_frames(tx, as_of=T0 + 10 * D), 30)
    monkeypatch.setenv("DIAMOND_STORE_URL", store_url)
    e, f = (dashboard_get(f"/customers/{c}") for c in "ef")
    assert e.status_code == 200 and f.status_code == 200
    assert 'data-outcome="saved"' in e.text and "saved after 3 day(s)" in e.text
    assert "window still open" in e.text
    assert 'data-outcome="pending"' in f.text and "lost" not in f.text  # 10 days into 30: pending, not lost


def test_the_cli_holds_out_records_outcomes_and_reports_the_effect(
    cdnow_champion: Path, cdnow_dir: Path, tmp_path: Path
) -> None:
    """The real commands on CDNOW: `diamond score` twice at the cutoff (the same arms), `diamond outcomes`
    to the history's end, `diamond effect --json`; outcomes checked against the history read here."""
    from mlflow import MlflowClient

    from features.history import load_history
    from tests.helpers import CUTOFF, run_diamond, write_serving_config

    alerts = yaml_alerts(control_share=0.3, costs={"diamond": 40, "gold": 5, "silver": 1})
    env, url = cli_store(cdnow_champion, tmp_path, alerts)
    first = " ".join(
        run_diamond(
            "score", "--data", str(cdnow_dir), "--as-of", CUTOFF, cwd=tmp_path, env=env
        ).stdout.split()
    )
    eng = store.engine(url)
    held = control.list_controls(eng)
    live = list_alerts(eng, status="live")
    assert not held.empty and not live.empty
    keys = set(zip(held["customer_id"], held["kind"], strict=True))
    assert not keys & set(zip(live["customer_id"], live["kind"], strict=True))
    stored = outcomes.read(eng)
    assert len(stored) == len(held) + len(live[live["customer_id"] != "__model__"])
    assert set(stored["outcome"]) == {"pending"}  # the history known at the run stops at the alerts
    assert f"control {len(held):,} (saved 0, lost 0, pending {len(held):,})" in first

    run_diamond("score", "--data", str(cdnow_dir), "--as-of", CUTOFF, cwd=tmp_path, env=env)
    again = control.list_controls(eng)
    assert again[["id", "customer_id", "kind", "opened_at"]].equals(
        held[["id", "customer_id", "kind", "opened_at"]]
    )

    run_diamond("outcomes", "--data", str(cdnow_dir), cwd=tmp_path, env=env)
    got = outcomes.read(eng)
    assert got["mature"].all() and set(got["outcome"]) <= {"saved", "lost"}
    # read from the history here: saved iff a purchase in (T0, T0 + H]
    tx = load_history(str(cdnow_dir)).transactions.to_pandas()
    t0, h = got["opened_at"].iloc[0], timedelta(days=int(got["horizon_days"].iloc[0]))
    window = tx[(tx["timestamp"] > t0) & (tx["timestamp"] <= t0 + h)]
    buyers = set(window.loc[window["amount"] >= 0, "customer_id"].astype(str))
    assert got.set_index("customer_id")["outcome"].to_dict() == {
        c: "saved" if c in buyers else "lost" for c in got["customer_id"]
    }
    spent = window.groupby(window["customer_id"].astype(str))["amount"].sum()
    assert got["value_after"].tolist() == pytest.approx(
        spent.reindex(got["customer_id"]).fillna(0.0).tolist()
    )

    done = run_diamond("effect", "--json", "--mlflow", cwd=tmp_path, env=env)
    # the incremental value is in the served model's value target: the CDNOW champion's is revenue
    champion = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).get_model_version_by_alias(
        "diamond", "champion"
    )
    assert json.loads(done.stdout)["value_target"] == {
        "target": "revenue",
        "cost_to_serve": {},
        "text": "revenue: net amount (refunds negative)",
        "model_version": str(champion.version),
    }
    reply = json.loads(done.stdout)["effect"]
    overall = next(r for r in reply if r["scope"] == "cumulative" and r["tier"] == "(all)")
    treated, controls = got[got["arm"] == "treated"], got[got["arm"] == "control"]
    assert (overall["treated"], overall["control"]) == (len(treated), len(controls))
    assert overall["treated_saved"] == int((treated["outcome"] == "saved").sum())
    assert overall["control_saved"] == int((controls["outcome"] == "saved").sum())
    costs = {"diamond": 40.0, "gold": 5.0, "silver": 1.0}
    assert overall["cost"] == pytest.approx(sum(costs.get(t, 0.0) for t in treated["tier"]))
    run_id = re.search(r"run (\w+) in experiment diamond-effect", done.stderr)
    assert run_id is not None, done.stderr
    effect_run = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).get_run(run_id.group(1))
    logged = effect_run.data.metrics
    assert (logged["treated"], logged["control"]) == (len(treated), len(controls))
    assert logged["difference"] == pytest.approx(overall["difference"])
    assert effect_run.data.tags["value_target"] == "revenue"
    table = run_diamond("effect", cwd=tmp_path, env=env).stdout
    assert "effect, all runs" in table and "(all)" in table
    assert (
        f"value: revenue: net amount (refunds negative) (the served model's, version {champion.version}; "
        "value_after and incr. value measure it)"
    ) in " ".join(table.split())
    assert "incr. revenue (95 % CI)" in table

    write_serving_config(
        tmp_path, {"alerts": yaml_alerts(control_share=0.3, costs={"diamond": 40, "gold": 5})}
    )
    refused = run_diamond("effect", cwd=tmp_path, env=env, check=False)
    assert refused.returncode == 2 and "alerts.playbooks.silver.cost: missing" in " ".join(
        refused.stderr.split()
    )
    write_serving_config(tmp_path, {"alerts": yaml_alerts(0.3, {"diamond": 40, "gold": -1, "silver": 1})})
    negative = run_diamond("effect", cwd=tmp_path, env=env, check=False)
    assert negative.returncode == 2 and "alerts.playbooks.gold.cost" in " ".join(negative.stderr.split())
