"""Consent and erasure on a SQLite store built by hand (serving.consent.mark, serving.erasure.forget): the
rows they change and the ones they leave. End to end with the CLI, the server and a receiver:
tests/e2e/test_privacy.py."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from serving import alert_store, audit, consent, erasure, outbox, runs, store
from serving.config import AlertConfig, Rule
from serving.schema import score_runs_table

T = datetime(2026, 11, 30)


def _store(tmp_path: Path) -> sa.Engine:
    eng = store.prepare(store.engine(f"sqlite:///{tmp_path / 'diamond.db'}"))
    candidates = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "kind": ["risk"] * 3,
            "tier": ["gold"] * 3,
            "churn_probability": [0.9, 0.8, 0.7],
            "predicted_value": [100.0, 90.0, 80.0],
            "value_at_risk": [90.0, 72.0, 56.0],
            "reasons": [["why"]] * 3,
            "playbook": [None] * 3,
            "due_at": [T] * 3,
            "fires": [True] * 3,
        }
    )
    config = AlertConfig(rules=(Rule(kind="risk", min_churn_probability=0.5),))
    synced = alert_store.sync_alerts(eng, T, candidates, config)
    for alert_id, version in synced.notify:
        outbox.enqueue(eng, "crm", {"alert_id": alert_id}, f"alert-{alert_id}-v{version}-crm", now=T)
    return eng


def test_consent_marks_live_alerts_and_withdraws_their_pending_messages(tmp_path: Path) -> None:
    eng = _store(tmp_path)
    ids = dict(zip(*alert_store.list_alerts(eng, "live")[["customer_id", "id"]].T.values, strict=True))
    outbox.mark_delivered(eng, f"alert-{ids['c']}-v1-crm", T)  # already sent before consent was withdrawn
    marked = consent.mark(eng, {"b", "c"})
    assert sorted(marked) == sorted([ids["b"], ids["c"]])
    flags = alert_store.list_alerts(eng, "live").set_index("customer_id")["do_not_contact"].to_dict()
    assert flags == {"a": False, "b": True, "c": True}
    with eng.connect() as con:
        left = dict(con.execute(sa.text("SELECT webhook_id, status FROM outbox")).all())
    assert left == {f"alert-{ids['a']}-v1-crm": "pending", f"alert-{ids['c']}-v1-crm": "delivered"}
    consent.mark(eng, {"c"})  # b said yes again: contact allowed from the next notification on
    flags = alert_store.list_alerts(eng, "live").set_index("customer_id")["do_not_contact"].to_dict()
    assert flags == {"a": False, "b": False, "c": True}
    assert consent.mark(eng, set()) == []  # consent back for everyone: nothing marked, nothing withdrawn
    flags = alert_store.list_alerts(eng, "live").set_index("customer_id")["do_not_contact"].to_dict()
    assert flags == {"a": False, "b": False, "c": False}
    with eng.connect() as con:
        left = dict(con.execute(sa.text("SELECT webhook_id, status FROM outbox")).all())
    assert left == {f"alert-{ids['a']}-v1-crm": "pending", f"alert-{ids['c']}-v1-crm": "delivered"}


def test_forget_deletes_every_row_about_a_customer_and_keeps_a_salted_hash(tmp_path: Path) -> None:
    eng = _store(tmp_path)
    b = int(alert_store.list_alerts(eng, customer_id="b")["id"].iloc[0])
    alert_store.acknowledge(eng, b, "ann")
    parquet = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"customer_id": ["a", "b", "c"], "x": [1, 2, 3]}), parquet)
    with eng.begin() as con:
        con.execute(sa.insert(score_runs_table).values(as_of=T, parquet=str(parquet), created_at=T))
        con.execute(sa.text("CREATE TABLE score_snapshot (customer_id TEXT, tier TEXT)"))
        con.execute(sa.text("INSERT INTO score_snapshot VALUES ('a', 'gold'), ('b', 'gold')"))
    done = erasure.forget(eng, ["b", " b "], "ops", "admin", "cli")
    assert done.deleted["score_snapshot"] == 1 and done.deleted["alerts"] == 1
    assert done.deleted["alert_actions"] == 1 and done.deleted["outbox"] == 1 and done.parquet_files == 1
    assert pq.read_table(parquet).column("customer_id").to_pylist() == ["a", "c"]
    assert alert_store.list_alerts(eng, None)["customer_id"].tolist() == ["a", "c"]
    assert store.read_rows(eng, store.SCORES, ["a", "b"])["customer_id"].tolist() == ["a"]
    rows = audit.entries(eng, ["forget"])
    assert rows[["who", "role", "client"]].values.tolist() == [["ops", "admin", "cli"]]
    assert rows["target"].tolist() == [audit.customer_hash(audit.salt(eng), "b")]
    # later runs drop the erased customer before anything is written
    frame = pd.DataFrame({"customer_id": ["a", "b", "c"], "v": [1, 2, 3]})
    assert erasure.without_erased(eng, frame)["customer_id"].tolist() == ["a", "c"]
    again = erasure.forget(eng, ["b"], "ops", "admin")
    assert not again.found and again.parquet_files == 0
    with pytest.raises(ValueError, match="the model-health alert's id"):
        erasure.forget(eng, ["__model__"], "ops")
    with pytest.raises(ValueError, match="at least one non-empty customer id"):
        erasure.forget(eng, [" "], "ops")


def test_keys_and_audit_from_the_command_line(tmp_path: Path) -> None:
    """`diamond keys add|list|remove` on a key file, `diamond audit` printing rows as text (never markup),
    and `diamond customers forget` refusing a key that is not an admin's."""
    from tests.helpers import run_diamond

    file = tmp_path / "keys"
    env = {"DIAMOND_STORE_URL": f"sqlite:///{tmp_path / 'diamond.db'}", "DIAMOND_API_KEY_FILE": str(file)}
    added = run_diamond("keys", "add", "ops", "--role", "admin", cwd=tmp_path, env=env).stdout
    key = added.split("shown once: ")[1].split()[0]
    assert (
        key not in file.read_text()
        and f"ops admin sha256:{hashlib.sha256(key.encode()).hexdigest()}" in file.read_text()
    )
    bad = run_diamond("keys", "add", "ops", "--role", "viewer", cwd=tmp_path, env=env, check=False)
    assert bad.returncode == 2 and "the name 'ops' is used twice" in bad.stderr
    wrong = run_diamond("keys", "add", "x", "--role", "root", cwd=tmp_path, env=env, check=False)
    assert wrong.returncode == 2 and "role 'root' is not one of viewer, agent, admin" in wrong.stderr
    run_diamond("keys", "add", "ann", "--role", "viewer", cwd=tmp_path, env=env)
    listed = run_diamond("keys", "list", cwd=tmp_path, env=env).stdout
    assert "ops" in listed and "admin" in listed and "ann" in listed and key not in listed
    viewer = run_diamond(
        "customers", "forget", "zed-1", cwd=tmp_path, env={**env, "DIAMOND_API_KEY": "nope"}, check=False
    )
    assert viewer.returncode == 2 and "is not an accepted API key" in viewer.stderr
    done = run_diamond("customers", "forget", "zed-1", cwd=tmp_path, env={**env, "DIAMOND_API_KEY": key})
    assert "nothing was stored about them" in done.stdout
    eng = store.engine(env["DIAMOND_STORE_URL"])
    audit.record(eng, "promote", "ops", "admin", "7", "cli", "refused: [bold red]gate[/] said no")
    printed = run_diamond("audit", cwd=tmp_path, env={**env, "COLUMNS": "300"}).stdout
    assert "[bold red]gate[/] said no" in printed and "forget" in printed and "zed-1" not in printed
    run_diamond("keys", "remove", "ops", cwd=tmp_path, env=env)
    gone = run_diamond(
        "customers", "forget", "zed-2", cwd=tmp_path, env={**env, "DIAMOND_API_KEY": key}, check=False
    )
    assert gone.returncode == 2 and "is not an accepted API key" in gone.stderr


def test_a_rollback_after_an_erasure_does_not_bring_the_customer_back(tmp_path: Path) -> None:
    """The latest run's checkpoint holds copies of tiers and alerts, and the snapshot the run replaced
    (renamed by its snapshot write): erasure empties them."""
    eng = _store(tmp_path)
    with eng.begin() as con:
        con.execute(sa.text("CREATE TABLE score_snapshot (customer_id TEXT, tier TEXT)"))
        con.execute(sa.text("INSERT INTO score_snapshot VALUES ('a', 'gold'), ('b', 'gold')"))
        con.execute(sa.insert(score_runs_table).values(as_of=T, created_at=T))
    later = datetime(2026, 12, 31)
    runs.checkpoint(eng, later)  # a run as of `later` is about to write
    scored = pd.DataFrame(  # ...and writes its snapshot (without 'a') and its run log
        {"customer_id": ["b"], "as_of": [later], "churn_probability": [0.5], "predicted_value": [2.0]}
        | {"value_at_risk": [1.0], "tier": ["gold"], "model_version": ["1"]}
    )
    store.write_snapshot(eng, scored[["customer_id"]], scored, {"as_of": later})
    erasure.forget(eng, ["b"], "ops", "admin", "cli")
    runs.rollback(eng, later)
    assert "b" not in alert_store.list_alerts(eng, None)["customer_id"].tolist()
    assert store.read_rows(eng, store.SCORES, ["a", "b"])["customer_id"].tolist() == ["a"]
    with eng.connect() as con:
        assert (
            con.execute(sa.text("SELECT count(*) FROM checkpoint_alerts WHERE customer_id = 'b'")).scalar()
            == 0
        )
