"""CSRF tokens (serving.webauth), pure functions of a secret and a session cookie. The sessions themselves
live in the store: tests/integration/test_sessions.py."""

from __future__ import annotations

import re

from serving import webauth

SECRET = b"s" * 32
ALICE = "eyJzIjoiYWxpY2UifQ.c2lnbmF0dXJlLWFsaWNl"  # any cookie value: the token signs it as text
BOB = "eyJzIjoiYm9iIn0.c2lnbmF0dXJlLWJvYg"


def test_csrf_tokens_are_bound_to_their_session_and_secret() -> None:
    token = webauth.csrf_token(SECRET, ALICE)
    assert re.fullmatch(r"[0-9a-f]{64}", token)  # the form field's format
    assert token == webauth.csrf_token(SECRET, ALICE)  # stable for the session: nothing stored
    assert webauth.csrf_ok(SECRET, ALICE, token)
    assert not webauth.csrf_ok(SECRET, BOB, token)  # another session's token
    assert not webauth.csrf_ok(b"t" * 32, ALICE, token)  # another secret
    assert not webauth.csrf_ok(SECRET, ALICE, token[:-1])
    assert not webauth.csrf_ok(SECRET, ALICE, "")
    assert not webauth.csrf_ok(SECRET, ALICE, None)
    assert not webauth.csrf_ok(SECRET, ALICE, token.upper())
    assert not webauth.csrf_ok(SECRET, ALICE, "\u00e9" * 64)  # refused, not a TypeError
    assert not webauth.csrf_ok(SECRET, ALICE, ALICE.split(".")[1])  # the cookie's own signature is not it
    assert token not in ALICE  # the CSRF token is not part of the cookie
