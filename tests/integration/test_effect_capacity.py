"""Capacity queues, win-back alerts and the programme's indicators against real stores (a SQLite file and a
PostgreSQL schema), a real webhook receiver and the real CLI: the batch run's alert step
(serving.batch._raise_alerts) queues what is beyond a team's budget, delivers nothing for it, lets it enter
by priority when budget frees (the next period's run, a resolve), and the treated arm starts when it
enters. Pure parts: tests/unit/test_effect_capacity.py."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from features.history import history_from_frames
from serving import alert_store, batch, capacity, outcomes, store, winback
from tests.helpers.effect import (
    SECRET_ENV,
    alert_step,
    cli_store,
    dashboard_get,
    scores,
    serving_config,
    yaml_alerts,
)
from tests.helpers.frames import T0, TIERS
from tests.helpers.webhooks import WEBHOOK_SECRET, WebhookReceiver

D, H = timedelta(days=1), timedelta(hours=1)
PLAYBOOKS = {
    "diamond": {"text": "account manager call", "due_within_hours": 24, "cost": 40},
    "gold": {"text": "personal email with offer", "due_within_hours": 72, "cost": 5},
    "silver": None,
    "bronze": None,
}
ALERTS = {
    "cooldown_hours": 1000,
    "rules": [{"kind": "at-risk", "min_tier": "gold", "min_churn_probability": 0.6}],
    "playbooks": PLAYBOOKS,
    # weeks from Monday 2024-06-03: T0 (Saturday 2024-06-01) is in the week of 2024-05-27
    "capacity": {
        "period_days": 7,
        "start": "2024-06-03",
        "teams": {"accounts": {"tiers": ["diamond", "gold"], "budget": 2}},
    },
}


def _sent(receiver: WebhookReceiver) -> list[str]:
    return [json.loads(r.body)["customer_id"] for r in receiver.requests]


def _by_customer(eng: sa.Engine, status: str | None = None) -> pd.DataFrame:
    return alert_store.list_alerts(eng, status=status).set_index("customer_id")


def test_alerts_beyond_the_budget_wait_and_enter_by_priority_when_it_frees(
    engine: sa.Engine, store_url: str, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, WEBHOOK_SECRET)
    config = serving_config(store_url, ALERTS, receiver)
    # priorities (value at risk): a 700, b 350, e 195, f 160, h 90
    firing = scores("abefhx")  # x is silver: no rule fires
    first = alert_step(engine, config, T0, *firing)
    assert (first.opened, first.queued, first.entered) == (2, 3, 0)
    assert sorted(_sent(receiver)) == ["a", "b"]  # nothing delivered for a queued alert
    assert sorted(_by_customer(engine, "live").index) == ["a", "b"]
    queued = _by_customer(engine, "queued")
    assert queued.index.tolist() == ["e", "f", "h"]  # by priority
    assert queued["priority"].tolist() == pytest.approx([195.0, 160.0, 90.0])
    assert queued["entered_at"].isna().all() and queued["last_notified_at"].isna().all()
    waiting, teams = capacity.queue(engine, config.alert_rules(TIERS), T0)
    assert [(t.team, t.budget, t.live, t.done, t.free, t.queued) for t in teams] == [
        ("accounts", 2, 2, 0, 0, 3)
    ]
    assert waiting["customer_id"].tolist() == ["e", "f", "h"] and not waiting["next"].any()
    # queued alerts are in no arm: only the entered ones have outcomes
    history = history_from_frames(
        pd.DataFrame({"customer_id": ["a"], "timestamp": [T0 - D], "amount": [1.0]})
    )
    outcomes.record(engine, history, 30, T0)
    assert sorted(outcomes.read(engine)["customer_id"]) == ["a", "b"]

    # the same run again: nothing moves
    again = alert_step(engine, config, T0, *firing)
    assert (again.opened, again.queued, again.entered, again.notify) == (0, 0, 0, [])

    # b resolved by hand in the same week: its budget stays used (done this period), nothing enters
    b = int(_by_customer(engine).loc["b", "id"])
    alert_store.resolve(engine, b, "anna", at=T0 + D)
    assert capacity.release(engine, config, T0 + D) == 0
    assert _by_customer(engine, "queued").index.tolist() == ["e", "f", "h"]

    # the next week's run (b and h no longer fire): a in hand uses 1 of 2: e enters, highest first; h leaves
    # the queue without entering
    week = T0 + 2 * D
    nxt = alert_step(engine, config, week, firing[0], firing[2], firing[3])
    assert (nxt.entered, nxt.resolved) == (1, 1)
    now = _by_customer(engine, None)
    assert now.loc["e", "status"] == "open" and now.loc["e", "entered_at"] == week
    assert now.loc["e", "due_at"] == week + 72 * H  # due from when it entered
    assert now.loc["h", "status"] == "resolved" and pd.isna(now.loc["h", "entered_at"])
    assert now.loc["f", "status"] == "queued"

    # a (entered last week) resolved: its budget frees at once, f enters then
    alert_store.resolve(engine, int(now.loc["a", "id"]), "anna", at=week + 5 * H)
    assert capacity.release(engine, config, week + 5 * H) == 1
    f = alert_store.get_alert(engine, int(now.loc["f", "id"]))
    assert (f["status"], f["entered_at"], f["version"]) == ("open", week + 5 * H, 1)
    batch.deliver(engine, config)
    assert sorted(_sent(receiver)) == ["a", "b", "e", "f"]  # h was never delivered

    # the treated arm starts when an alert entered; h, never entered, is in no arm
    outcomes.record(engine, history, 30, week + D)
    got = outcomes.read(engine).set_index("customer_id")
    assert sorted(got.index) == ["a", "b", "e", "f"]
    assert got.loc["f", "opened_at"] == week + 5 * H and got.loc["e", "opened_at"] == week


def test_a_queued_customer_is_not_drawn_for_control_and_controls_are_never_queued(
    engine: sa.Engine, store_url: str
) -> None:
    from serving import control

    config = serving_config(store_url, ALERTS, control_share=0.5)
    # assignment numbers at T0 (tests/integration/test_effect.py): a .482, b .027, e .536, f .864, h .011
    alert_step(engine, config, T0, *scores("aefh"))
    held = sorted(control.list_controls(engine)["customer_id"])
    assert held == ["a", "h"]  # drawn before the queue: a control takes no budget
    assert sorted(_by_customer(engine, "live").index) == ["e", "f"] and _by_customer(engine, "queued").empty
    # the next day, with more firing: b (new) fires and queues; its arm was drawn at T0 + 1 d
    later = T0 + D
    b_unit = control.unit("b", "at-risk", later)
    alert_step(engine, config, later, *scores("abefh"))
    queued = list(_by_customer(engine, "queued").index)
    assert queued == ([] if b_unit < 0.5 else ["b"])
    # a third run: b (if queued) is not drawn again while it waits
    alert_step(engine, config, later + D, *scores("bef"))
    assert sorted(control.list_controls(engine)["customer_id"]) == sorted(
        held + (["b"] if b_unit < 0.5 else [])
    )


def test_win_back_alerts_from_the_history_their_playbook_and_reactivation(
    engine: sa.Engine, store_url: str
) -> None:
    from features.config import DatasetConfig

    win_back = {
        "kind": "win-back",
        "lapsed_days": 60,
        "min_past_value": 100,
        "playbook": {"text": "win-back call with an offer", "due_within_hours": 48, "cost": 15},
    }
    config = serving_config(store_url, ALERTS, rules=[ALERTS["rules"][0], win_back], capacity=None)
    tx = pd.DataFrame(
        {
            "customer_id": ["p", "p", "q", "r", "s", "p"],
            "timestamp": [T0 - 200 * D, T0 - 90 * D, T0 - 10 * D, T0 - 100 * D, T0 - 80 * D, T0 + 6 * D],
            "amount": [80.0, 50.0, 500.0, 40.0, 300.0, 25.0],
        }
    )
    history = history_from_frames(
        tx,
        customers=pd.DataFrame(
            {"customer_id": ["p", "q", "r", "s"], "is_subscriber": [True, False, False, False]}
        ),
        cancellations=pd.DataFrame({"customer_id": ["s"], "timestamp": [T0 + 3 * D]}),
        config=DatasetConfig(churn="mixed"),
        as_of=T0 + 40 * D,
    )
    lapse = winback.lapse(engine, history.until(T0), T0)
    # p: lapsed 90 days, 130 spent; q: bought 10 days ago; r: lapsed but 40 spent; s: lapsed 80 days, 300
    assert lapse.set_index("customer_id")["days_since_purchase"].to_dict() == {
        "p": 90.0,
        "q": 10.0,
        "r": 100.0,
        "s": 80.0,
    }
    scored = (("p", "bronze", 0.95, 2.0), ("q", "gold", 0.3, 400.0), ("r", "bronze", 0.9, 1.0))
    alert_step(engine, config, T0, *scored, ("s", "silver", 0.97, 3.0), lapse=lapse)
    alerts = _by_customer(engine, "live")
    assert sorted(alerts.index) == ["p", "s"] and set(alerts["kind"]) == {"win-back"}
    assert set(alerts["playbook"]) == {"win-back call with an offer"} and set(alerts["due_at"]) == {
        T0 + 48 * H
    }
    # reactivation: p (a subscriber) bought 6 days on: saved by a purchase, not by the absence of a
    # cancellation; s cancelled and never bought: lost when the window ran out
    outcomes.record(engine, history, 30)
    got = outcomes.read(engine).set_index("customer_id")
    assert got["outcome"].to_dict() == {"p": "saved", "s": "lost"}
    assert got.loc["p", "days_to_outcome"] == pytest.approx(6.0) and got.loc["s", "days_to_outcome"] == 30.0
    from serving import effect

    table = effect.stored_report(engine, config.alert_rules(TIERS), by_run=False)
    everything = table[(table["scope"] == "cumulative") & (table["tier"] == "(all)")].iloc[0]
    assert everything["cost"] == 30.0  # two win-back alerts at the rule's own 15, whatever their tier

    # the win-back rule's cost missing: refused naming the key
    bare = {k: v for k, v in win_back.items() if k != "playbook"} | {
        "playbook": {"text": "call", "due_within_hours": 1}
    }
    missing = serving_config(store_url, ALERTS, rules=[ALERTS["rules"][0], bare], capacity=None)
    with pytest.raises(Exception, match=r"alerts\.rules\.1\.playbook\.cost: missing"):
        effect.stored_report(engine, missing.alert_rules(TIERS), by_run=False)


def test_the_queue_page_and_the_effect_page_show_queue_owners_and_migration(
    engine: sa.Engine, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from serving import tier_store

    config = serving_config(store_url, ALERTS)
    for at, tiers in (
        (T0, {"a": "diamond", "e": "gold", "f": "gold"}),
        (T0 + D, {"a": "gold", "e": "gold", "g": "silver"}),
    ):
        frame = pd.DataFrame({"customer_id": list(tiers), "tier_raw": list(tiers.values())})
        tier_store.update_tiers(engine, at, frame, TIERS, 1)
    alert_step(engine, config, T0, *scores("aef"), ("<b>&", "gold", 0.9, 100.0))
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump({"alerts": ALERTS}), encoding="utf-8")
    monkeypatch.setenv("DIAMOND_STORE_URL", store_url)
    monkeypatch.setenv("DIAMOND_SERVING_CONFIG", str(tmp_path / "serving.yaml"))
    page = dashboard_get("/queue")
    assert page.status_code == 200
    assert "&lt;b&gt;&amp;" in page.text and "<b>&" not in page.text  # escaped
    rows = re.findall(r'<tr data-customer="([^"]+)"', page.text)
    assert rows == ["f", "&lt;b&gt;&amp;"]  # the queue by priority: f 160, <b>& 90
    team = re.search(r'<tr data-team="accounts">(.*?)</tr>', page.text, re.S)
    assert team is not None
    cells = [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", team.group(1), re.S)
    ]
    assert cells[:6] == ["accounts", "2", "2", "0", "0", "2"]

    effect_page = dashboard_get("/effect")
    assert effect_page.status_code == 200
    table = re.search(r'<table class="migration"[^>]*>(.*?)</table>', effect_page.text, re.S)
    assert table is not None
    lines = {
        m.group(1): [int(x) for x in re.findall(r'<td class="num">([0-9,]+)</td>', m.group(2))]
        for m in re.finditer(r'<tr data-from-tier="([^"]+)">(.*?)</tr>', table.group(1), re.S)
    }
    # T0 -> T0 + 1 d (hysteresis off: demote at once): a diamond -> gold, e gold -> gold, f gone, g new;
    # columns diamond, gold, silver, bronze, (gone)
    assert lines == {
        "diamond": [0, 1, 0, 0, 0],
        "gold": [0, 1, 0, 0, 1],
        "silver": [0, 0, 0, 0, 0],
        "bronze": [0, 0, 0, 0, 0],
        "(new)": [0, 0, 1, 0, 0],
    }


def test_the_cli_queues_resolves_wins_back_and_reports_the_programme(
    cdnow_champion: Path, cdnow_dir: Path, tmp_path: Path
) -> None:
    """The real commands on CDNOW, two runs a quarter apart with a team budget and a win-back rule:
    `diamond alerts queue`, `alerts resolve`, `outcomes`, `effect --json --data --html --mlflow`; the
    migration matrix and the realised rates checked against the store and the history read here."""
    from mlflow import MlflowClient

    from features.history import load_history
    from tests.helpers import CUTOFF, run_diamond

    alerts = yaml_alerts(control_share=0.0, costs={"diamond": 40, "gold": 5, "silver": 1})
    win_back = {"kind": "win-back", "lapsed_days": 180, "min_past_value": 100}
    alerts["rules"] = [
        *alerts["rules"],
        {**win_back, "playbook": {"text": "win-back offer", "due_within_hours": 168, "cost": 3}},
    ]
    alerts["capacity"] = {
        "teams": {
            "accounts": {
                "tiers": ["diamond", "gold"],
                "kinds": ["high-value-at-risk", "top-value-at-risk", "tier-drop"],
                "budget": 10,
            }
        }
    }
    env, url = cli_store(cdnow_champion, tmp_path, alerts)
    first_run = "1997-06-30"
    for at in (first_run, CUTOFF):
        run_diamond("score", "--data", str(cdnow_dir), "--as-of", at, cwd=tmp_path, env=env)
    eng = store.engine(url)

    queue = json.loads(run_diamond("alerts", "queue", "--json", cwd=tmp_path, env=env).stdout)
    (team,) = queue["teams"]
    assert (team["team"], team["budget"]) == ("accounts", 10) and team["used"] <= 10 and team["queued"] > 0
    stored = alert_store.list_alerts(eng, "queued")
    assert [r["id"] for r in queue["queue"]] == stored["id"].tolist()  # by priority, one team
    live = alert_store.list_alerts(eng, "live", model=False)
    in_team = live[live["tier"].isin(["diamond", "gold"]) & (live["kind"] != "win-back")]
    assert len(in_team) == team["live"] <= 10
    listed = run_diamond(
        "alerts", "list", "--status", "live", "--limit", "100000", cwd=tmp_path, env=env
    ).stdout
    rows = "\n".join(ln for ln in listed.splitlines() if "alert(s)" not in ln)  # the count line is no row
    assert not {f" {i} " for i in stored["id"]} & {f" {x} " for x in re.findall(r"^\S+\s+(\d+)", rows, re.M)}
    backs = live[live["kind"] == "win-back"]
    assert not backs.empty and set(backs["playbook"]) == {"win-back offer"}  # no team: never queued

    earlier = in_team[in_team["entered_at"] < pd.Timestamp(CUTOFF)]
    assert not earlier.empty
    done = run_diamond("alerts", "resolve", str(int(earlier["id"].iloc[0])), cwd=tmp_path, env=env).stdout
    head = stored.iloc[0]
    assert "1 queued alert(s) entered" in done
    latest = store.latest_run(eng)
    assert latest is not None and latest["as_of"].date() == datetime.fromisoformat(CUTOFF).date()
    assert alert_store.get_alert(eng, int(head["id"]))["entered_at"] == latest["as_of"]  # the runs' clock

    run_diamond("outcomes", "--data", str(cdnow_dir), cwd=tmp_path, env=env)
    got = outcomes.read(eng)
    assert not set(got.loc[got["arm"] == "treated", "episode_id"]) & set(
        alert_store.list_alerts(eng, "queued")["id"]
    )  # queued alerts have no outcome
    report = tmp_path / "report" / "effect.html"
    reply = run_diamond(
        "effect", "--json", "--data", str(cdnow_dir), "--html", str(report), "--mlflow", cwd=tmp_path, env=env
    )
    body = json.loads(reply.stdout)
    # the migration matrix, recounted from the store's tier history
    with eng.connect() as conn:
        hist = pd.read_sql("SELECT customer_id, as_of, tier FROM tier_history", conn, parse_dates=["as_of"])
    a, b = sorted(hist["as_of"].unique())
    x = hist[hist["as_of"] == a].set_index("customer_id")["tier"]
    y = hist[hist["as_of"] == b].set_index("customer_id")["tier"]
    both = x.index.intersection(y.index)
    expected = pd.crosstab(x[both], y[both]).stack()
    shown = {(r["from_tier"], r["to_tier"]): r["customers"] for r in body["migration"]}
    assert {k: v for k, v in shown.items() if "(new)" not in k and "(gone)" not in k} == {
        k: int(v) for k, v in expected.items() if v
    }
    assert shown.get(("(new)", "diamond"), 0) + shown.get(("(new)", "gold"), 0) + shown.get(
        ("(new)", "silver"), 0
    ) + shown.get(("(new)", "bronze"), 0) == len(y.index.difference(x.index))
    # the realised rates of the first run, gold: recounted from the history over the alerts' horizon
    horizon = timedelta(days=int(got["horizon_days"].mode().iloc[0]))
    tx = load_history(str(cdnow_dir)).transactions.to_pandas()
    t0 = pd.Timestamp(a)
    window = tx[(tx["timestamp"] > t0) & (tx["timestamp"] <= t0 + horizon) & (tx["amount"] >= 0)]
    gold = set(x[x == "gold"].index.astype(str))
    buys = window[window["customer_id"].astype(str).isin(gold)].groupby("customer_id").size()
    row = next(r for r in body["indicators"] if r["run"] == t0.isoformat() and r["tier"] == "gold")
    assert (row["customers"], row["mature"]) == (len(gold), len(gold))
    assert row["retained"] == len(buys) and row["repeat_buyers"] == int((buys >= 2).sum())
    assert row["retention_rate"] == pytest.approx(len(buys) / len(gold))
    html = report.read_text(encoding="utf-8")
    assert '<table class="migration"' in html and 'data-tier="gold"' in html
    assert "Value: revenue: net amount (refunds negative) (the served model&#39;s, version" in html
    run_id = re.search(r"run (\w+) in experiment diamond-effect", reply.stderr)
    assert run_id is not None
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    logged = client.get_metric_history(run_id.group(1), "retention_rate_gold")
    assert [m.step for m in logged] == [0, 1] and logged[0].value == pytest.approx(row["retention_rate"])
    table = run_diamond("effect", "--data", str(cdnow_dir), cwd=tmp_path, env=env).stdout
    assert "tier migration" in table and "realised rates by tier" in table
