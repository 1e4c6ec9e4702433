"""Consent and erasure end to end, with the real `diamond` command, the store, `diamond serve` and a webhook
receiver (tests/helpers/webhooks.py), on the synthetic history, whose customers table has `email_opt_in`.

Consent: serving.yaml's `consent: {attribute: email_opt_in, meaning: opt_in}`: customers without an explicit
yes get alerts marked "do not contact", shown on the dashboard, never delivered. Erasure: `diamond customers
forget ID` (an admin's key) leaves nothing about the customer in the store, the score tables, the API, the
dashboard or exports, only a salted hash in the audit table, and a later run does not bring them back."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from serving import alert_rules, alert_store, audit, store
from tests.helpers import DIAMOND, ROOT, copy_store, run_diamond, running_server, write_serving_config
from tests.helpers.webhooks import WEBHOOK_SECRET, WebhookReceiver


@pytest.fixture(scope="module")
def crm() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def scored(
    synthetic_champion: Path, crm: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, str], str]]:
    """The synthetic champion's copy scored once with consent on and the receiver as the webhook endpoint;
    the key file holds an agent and an admin key. (work, env, served URL)."""
    work = tmp_path_factory.mktemp("privacy")
    copy_store(synthetic_champion, work)
    webhooks = yaml.safe_load((ROOT / "serving.yaml").read_text())["webhooks"]
    hook = {"name": "crm", "url": crm.url, "secret_env": "DIAMOND_TEST_WEBHOOK_SECRET"}
    write_serving_config(
        work,
        {
            "webhooks": {**webhooks, "endpoints": [hook]},
            "consent": {"attribute": "email_opt_in", "meaning": "opt_in"},
        },
    )
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "DIAMOND_STORE_URL": f"sqlite:///{work / 'diamond.db'}",
        "DIAMOND_SERVING_CONFIG": str(work / "serving.yaml"),
        "DIAMOND_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "DIAMOND_API_KEY_FILE": str(work / "keys"),
    }
    keys = {}
    for name, role in (("alice", "agent"), ("adam", "admin")):
        printed = run_diamond("keys", "add", name, "--role", role, "--file", str(work / "keys")).stdout
        keys[role] = re.search(r"shown once: (\S+)", printed).group(1)
    history = synthetic_champion / "history"
    (work / "score.out").write_text(run_diamond("score", "--data", str(history), cwd=work, env=env).stdout)
    env.update({f"KEY_{r.upper()}": k for r, k in keys.items()})
    with running_server([DIAMOND, "serve"], work, work / "serve.log", {**os.environ, **env}) as (url, _):
        yield work, env, url


def _engine(work: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{work / 'diamond.db'}")


def _opted_in(synthetic_champion: Path) -> dict[str, bool]:
    customers = pq.read_table(synthetic_champion / "history" / "customers.parquet").to_pandas()
    return dict(zip(customers["customer_id"], customers["email_opt_in"] == True, strict=True))  # noqa: E712


def test_consent_stops_delivery_and_marks_the_alert(
    scored: tuple[Path, dict[str, str], str], crm: WebhookReceiver, synthetic_champion: Path
) -> None:
    work, env, url = scored
    engine = _engine(work)
    alerts = alert_store.list_alerts(engine, "live", model=False)
    consent = _opted_in(synthetic_champion)
    expected = [not consent.get(c, False) for c in alerts["customer_id"]]
    assert alerts["do_not_contact"].tolist() == expected
    stopped = alerts[alerts["do_not_contact"]]
    allowed = alerts[~alerts["do_not_contact"]]
    assert len(stopped) > 0 and len(allowed) > 0  # both kinds, or the test proves nothing
    sent = {json.loads(body)["customer_id"] for body in crm.processed.values()}
    assert sent - {alert_rules.MODEL_ID} == set(allowed["customer_id"])  # nobody who said no
    assert crm.rejected == []
    with engine.connect() as con:
        queued = set(con.execute(sa.text("SELECT webhook_id FROM outbox")).scalars())
    assert not any(w.startswith(f"alert-{i}-v") for w in queued for i in stopped["id"])
    # the team still sees them, marked, in the list and on the customer's page
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=60)
    assert client.post("/ui/login", data={"key": env["KEY_AGENT"]}).status_code == 303
    listed = client.get("/ui/", params={"status": "live"}).text
    first = str(stopped["customer_id"].iloc[0])
    row = re.search(rf'<tr data-alert-id="\d+" data-customer="{first}".*?</tr>', listed, re.S)
    assert row is not None and "do not contact" in row.group(0)
    page = client.get(f"/ui/customers/{first}").text
    assert 'id="do-not-contact"' in page
    ok = str(allowed["customer_id"].iloc[0])
    assert 'id="do-not-contact"' not in client.get(f"/ui/customers/{ok}").text
    # and the export says so
    run_diamond("alerts", "export", str(work / "alerts.csv"), cwd=work, env=env)
    export = pd.read_csv(work / "alerts.csv", dtype={"customer_id": str})
    assert set(export.loc[export["do_not_contact"], "customer_id"]) == set(stopped["customer_id"])


def test_forget_erases_a_customer_everywhere(
    scored: tuple[Path, dict[str, str], str], crm: WebhookReceiver, synthetic_champion: Path
) -> None:
    work, env, url = scored
    engine = _engine(work)
    live = alert_store.list_alerts(engine, "live", model=False)
    delivered = live[~live["do_not_contact"]]
    cid = str(delivered["customer_id"].iloc[1])
    alert_id = int(delivered["id"].iloc[1])
    # an agent acts on the alert first, so there is an action to erase too
    agent = httpx.Client(base_url=url, follow_redirects=False, timeout=60)
    assert agent.post("/ui/login", data={"key": env["KEY_AGENT"]}).status_code == 303
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', agent.get("/ui/").text).group(1)
    assert agent.post(f"/ui/alerts/{alert_id}/ack", data={"csrf": csrf}).status_code == 303
    assert len(alert_store.actions(engine, [alert_id])) == 1
    by_id = {"customers": [{"customer_id": cid}]}
    bearer = {"authorization": f"Bearer {env['KEY_AGENT']}"}
    assert httpx.post(f"{url}/score", json=by_id, headers=bearer, timeout=60).json()["scores"][0]["found"]

    # only an admin's key may erase
    no_key = run_diamond("customers", "forget", cid, cwd=work, env=env, check=False)
    assert no_key.returncode == 2 and "DIAMOND_API_KEY" in no_key.stderr
    weak = run_diamond(
        "customers", "forget", cid, cwd=work, env={**env, "DIAMOND_API_KEY": env["KEY_AGENT"]}, check=False
    )
    assert weak.returncode == 2 and "has role agent; this needs admin" in weak.stderr
    assert not store.read_rows(engine, store.SCORES, [cid]).empty  # nothing happened
    assert not store.recent_events(engine, cid).empty
    done = run_diamond("customers", "forget", cid, cwd=work, env={**env, "DIAMOND_API_KEY": env["KEY_ADMIN"]})
    assert "forgot 1 customer(s)" in done.stdout and "score table(s) rewritten" in done.stdout

    # the store
    for table in store.FEATURES, store.SCORES, store.EVENTS:
        assert store.read_rows(engine, table, [cid]).empty, table
    assert store.recent_events(engine, cid).empty  # their part of the recent events rewritten
    assert store.score_history(engine, cid).empty
    with engine.connect() as con:
        for table in ("tier_state", "tier_history", "alerts"):
            n = con.execute(
                sa.text(f"SELECT COUNT(*) FROM {table} WHERE customer_id = :c"), {"c": cid}
            ).scalar()
            assert n == 0, table
        assert (
            con.execute(
                sa.text("SELECT COUNT(*) FROM outbox WHERE webhook_id LIKE :w"), {"w": f"alert-{alert_id}-v%"}
            ).scalar()
            == 0
        )
    assert alert_store.actions(engine, [alert_id]).empty
    raw = (work / "diamond.db").read_bytes()
    assert cid.encode() not in raw  # not even in free pages (the store is vacuumed after an erasure)
    # the score tables, the API, the dashboard, exports
    for parquet in (work / ".diamond" / "scores").glob("*.parquet"):
        assert cid not in pq.read_table(parquet, columns=["customer_id"]).column(0).to_pylist()
    answer = httpx.post(f"{url}/score", json=by_id, headers=bearer, timeout=60).json()["scores"][0]
    assert answer["found"] is False
    assert agent.get(f"/ui/customers/{cid}").status_code == 404
    run_diamond("alerts", "export", str(work / "after.json"), "--status", "all", cwd=work, env=env)
    assert cid not in (work / "after.json").read_text()
    # what stays: the salted hash, who did it
    forgot = audit.entries(engine, ["forget"])
    assert forgot[["who", "role"]].values.tolist() == [["adam", "admin"]]
    assert forgot["target"].iloc[0] == audit.customer_hash(audit.salt(engine), cid)
    assert cid not in forgot.to_string()
    # a later run on the same history does not bring them back, nor sends anything about them
    sent_before = len(crm.processed)
    run_diamond("score", "--data", str(synthetic_champion / "history"), cwd=work, env=env)
    assert store.read_rows(engine, store.SCORES, [cid]).empty and store.score_history(engine, cid).empty
    assert alert_store.list_alerts(engine, None, customer_id=cid).empty
    later = list(crm.processed.values())[sent_before:]
    assert cid not in {json.loads(b)["customer_id"] for b in later}
