"""Dashboard sessions kept in the store (serving.webauth): opened for a key, found while live, ended by
signing out, by removing the key, by expiry or by a new secret; and the audit table's rows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from itsdangerous import URLSafeSerializer, base64_decode

from serving import access, audit, store, webauth
from serving.schema import sessions_table

SECRET = b"s" * 32
T0 = datetime(2026, 12, 1, 9, 0)


def _store(tmp_path: Path) -> sa.Engine:
    return store.prepare(store.engine(f"sqlite:///{tmp_path / 'diamond.db'}"))


def test_a_session_is_a_row_ended_at_once_by_signing_out(tmp_path: Path) -> None:
    eng, file = _store(tmp_path), tmp_path / "keys"
    raw = access.add_key(file, "ann", "agent")
    ring = access.KeyRing("", str(file))
    key = ring.match(raw)
    token = webauth.open_session(eng, SECRET, key, T0, ttl_s=3600, client="10.1.2.3")
    session = webauth.find(eng, SECRET, token, ring, T0 + timedelta(minutes=59))
    assert session is not None and (session.name, session.role, session.key_id) == ("ann", "agent", key.id)
    assert session.expires == T0 + timedelta(hours=1)
    assert webauth.find(eng, SECRET, token, ring, T0 + timedelta(hours=1)) is None  # expired
    # the cookie names the session by a random id; the table keeps only its hash, and never the key
    payload = json.loads(base64_decode(token.split(".")[0]))
    assert set(payload) == {"s"} and raw not in token
    with eng.connect() as con:
        rows = con.execute(sa.select(sessions_table)).mappings().all()
    assert len(rows) == 1 and rows[0]["id"] != payload["s"] and rows[0]["client"] == "10.1.2.3"
    assert raw not in str(dict(rows[0]))
    webauth.end(eng, session, T0 + timedelta(minutes=5))
    assert webauth.find(eng, SECRET, token, ring, T0 + timedelta(minutes=6)) is None  # signed out: gone
    other = webauth.open_session(eng, SECRET, key, T0)
    assert other != token and webauth.find(eng, SECRET, other, ring, T0) is not None  # a new sign-in works


def test_removing_a_key_or_changing_its_role_applies_to_open_sessions(tmp_path: Path) -> None:
    eng, file = _store(tmp_path), tmp_path / "keys"
    raw = access.add_key(file, "ann", "admin")
    ring = access.KeyRing("", str(file))
    token = webauth.open_session(eng, SECRET, ring.match(raw), T0)
    assert webauth.find(eng, SECRET, token, ring, T0).role == "admin"
    file.write_text(file.read_text().replace(" admin ", " viewer "))
    assert webauth.find(eng, SECRET, token, ring, T0).role == "viewer"  # demoted at the next request
    access.remove_key(file, "ann")
    assert webauth.find(eng, SECRET, token, ring, T0) is None  # removed: every session of the key ends


def test_forged_foreign_and_unknown_cookies_find_nothing(tmp_path: Path) -> None:
    eng, ring = _store(tmp_path), access.KeyRing("k1")
    token = webauth.open_session(eng, SECRET, ring.match("k1"), T0)
    payload, signature = token.split(".")
    forged = URLSafeSerializer(b"x" * 32, salt="diamond.session").dumps({"s": "guess"})
    for bad in (
        None,
        "",
        "k1",
        f"{payload}.{signature[::-1]}",
        forged,
        token + "x",
        "a.b.c",
        "\u00e9.\u00e9",
    ):
        assert webauth.find(eng, SECRET, bad, ring, T0) is None, bad
    assert webauth.find(eng, b"t" * 32, token, ring, T0) is None  # a new secret ends every session
    unknown = URLSafeSerializer(SECRET, salt="diamond.session").dumps({"s": "never-issued"})
    assert webauth.find(eng, SECRET, unknown, ring, T0) is None  # signed by us, but no such session


def test_the_audit_table_records_who_did_what(tmp_path: Path) -> None:
    eng = _store(tmp_path)
    audit.record(eng, "login-failed", None, client="10.0.0.9", at=T0)
    audit.record(eng, "login", "ann", "agent", client="10.0.0.9", at=T0 + timedelta(seconds=1))
    audit.record(eng, "resolved", "ann", "agent", "17", "10.0.0.9", at=T0 + timedelta(seconds=2))
    rows = audit.entries(eng)
    assert rows[["who", "action", "target"]].values.tolist() == [
        ["ann", "resolved", "17"],
        ["ann", "login", None],
        [None, "login-failed", None],
    ]
    assert audit.entries(eng, ["login-failed"])["client"].tolist() == ["10.0.0.9"]
    salt = audit.salt(eng)
    assert len(salt) == 32 and audit.salt(eng) == salt  # made once, then the same
    (tmp_path / "other").mkdir()
    other = _store(tmp_path / "other")
    assert audit.customer_hash(salt, "C1") != audit.customer_hash(audit.salt(other), "C1")
