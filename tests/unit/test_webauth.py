"""Dashboard sessions and CSRF tokens (serving.webauth), as pure functions of a secret, keys and the time."""

from __future__ import annotations

import base64
import json
import re

from itsdangerous import URLSafeSerializer

from serving import webauth
from serving.config import hash_key

SECRET = b"s" * 32
KEY = hash_key("key-1")
T0 = 1_700_000_000.0


def test_a_session_lasts_eight_hours_and_names_who_logged_in() -> None:
    token = webauth.issue(SECRET, "Ann Lee", KEY, now=T0)
    session = webauth.verify(SECRET, token, {KEY}, now=T0 + 1)
    assert session == webauth.Session("Ann Lee", int(T0) + 8 * 3600, token)
    assert webauth.verify(SECRET, token, {KEY}, now=T0 + 8 * 3600 - 1) is not None
    assert webauth.verify(SECRET, token, {KEY}, now=T0 + 8 * 3600) is None  # expired
    assert webauth.SESSION_S == 8 * 3600


def test_the_token_holds_neither_the_key_nor_its_digest() -> None:
    token = webauth.issue(SECRET, "ann", KEY, now=T0)
    payload = token.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert "key-1" not in decoded and KEY not in decoded and SECRET.decode() not in decoded
    assert json.loads(decoded)["k"] == webauth.key_id(KEY)  # only the short public id


def test_sessions_end_when_their_key_is_no_longer_accepted() -> None:
    token = webauth.issue(SECRET, "ann", KEY, now=T0)
    other = hash_key("key-2")
    assert webauth.verify(SECRET, token, {KEY, other}, now=T0) is not None  # a second key added: still in
    assert webauth.verify(SECRET, token, {other}, now=T0) is None  # key-1 removed: out
    assert webauth.verify(SECRET, token, set(), now=T0) is None


def test_forged_and_tampered_tokens_are_refused() -> None:
    token = webauth.issue(SECRET, "ann", KEY, now=T0)
    payload, signature = token.split(".")
    forged = base64.urlsafe_b64encode(
        json.dumps({"w": "mallory", "k": webauth.key_id(KEY), "e": int(T0) + 10**6, "n": "0"}).encode()
    )
    for bad in (
        f"{forged.decode().rstrip('=')}.{signature}",  # another payload under this signature
        f"{payload}.{signature[:-2]}",  # a truncated signature
        webauth.issue(b"t" * 32, "ann", KEY, now=T0),  # signed with another secret
        URLSafeSerializer(SECRET).dumps({"w": "ann", "k": webauth.key_id(KEY), "e": int(T0) + 60, "n": "0"}),
        "\u00e9t\u00e9.\u00e9t\u00e9",  # not even ASCII
        "..",
        ".",
    ):
        assert webauth.verify(SECRET, bad, {KEY}, now=T0) is None, bad


def test_csrf_tokens_are_bound_to_their_session_and_secret() -> None:
    alice = webauth.issue(SECRET, "alice", KEY, now=T0)
    bob = webauth.issue(SECRET, "bob", KEY, now=T0)
    token = webauth.csrf_token(SECRET, alice)
    assert re.fullmatch(r"[0-9a-f]{64}", token)  # the form field's format
    assert token == webauth.csrf_token(SECRET, alice)  # stable for the session: nothing stored
    assert webauth.csrf_ok(SECRET, alice, token)
    assert not webauth.csrf_ok(SECRET, bob, token)  # another session's token
    assert not webauth.csrf_ok(b"t" * 32, alice, token)  # another secret
    assert not webauth.csrf_ok(SECRET, alice, token[:-1])
    assert not webauth.csrf_ok(SECRET, alice, "")
    assert not webauth.csrf_ok(SECRET, alice, None)
    assert not webauth.csrf_ok(SECRET, alice, token.upper())
    assert not webauth.csrf_ok(SECRET, alice, "\u00e9" * 64)  # refused, not a TypeError
    assert not webauth.csrf_ok(SECRET, alice, alice.split(".")[1])  # the session's own signature is not it
    assert token not in alice  # the CSRF token is not part of the cookie
