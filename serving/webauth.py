"""Dashboard sessions: what the login form hands a browser instead of the API key, and the CSRF token of
each session. Pure functions of a secret, the accepted key digests and the time.

A session token is an itsdangerous `URLSafeSerializer` token (`payload.signature`, HMAC-SHA256 under the
session secret, serving.config.session_secret, with a salt of its own). The payload names who logged in,
which key they used (an id derived from the key's digest, so removing the key from the service ends its
sessions), when the session expires and a nonce. The raw key never leaves the login request. The CSRF token
is the itsdangerous signature of the session token under another salt (hex): one per session, nothing
stored on the server.

The expiry is a signed claim checked against the `now` given, rather than `URLSafeTimedSerializer`'s
`max_age`, which reads the wall clock, knows no per-token lifetime and adds a third part to the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from itsdangerous import BadData, Signer, URLSafeSerializer, base64_decode

COOKIE = "diamond_session"
SESSION_S = 8 * 3600  # a working day
MAX_NAME = 64


@dataclass(frozen=True)
class Session:
    who: str
    expires: int  # unix seconds
    token: str


def key_id(key_hash: str) -> str:
    """A short public id of an accepted key digest (not enough to recover the digest, let alone the key)."""
    return hashlib.sha256(f"diamond-session-key:{key_hash}".encode()).hexdigest()[:16]


def issue(secret: bytes, who: str, key_hash: str, now: float, ttl_s: int = SESSION_S) -> str:
    """A signed session token for `who`, logged in with the key whose digest is `key_hash`."""
    body = {"w": who, "k": key_id(key_hash), "e": int(now) + ttl_s, "n": secrets.token_hex(8)}
    return _sessions(secret).dumps(body)


def verify(secret: bytes, token: str | None, key_hashes: Iterable[str], now: float) -> Session | None:
    """The session in `token` if its signature is ours, it has not expired and its key is still accepted."""
    if not token:
        return None
    try:
        body = _sessions(secret).loads(token)
        who, kid, expires = str(body["w"]), str(body["k"]), int(body["e"])
    except (BadData, ValueError, KeyError, TypeError):
        return None
    if expires <= now or kid not in {key_id(h) for h in key_hashes}:
        return None
    return Session(who, expires, token)


def csrf_token(secret: bytes, session_token: str) -> str:
    """The token every state-changing form of this session must carry: the session token's signature under
    the CSRF salt, in hex (the format the forms have always carried)."""
    return base64_decode(_csrf(secret).get_signature(session_token)).hex()


def csrf_ok(secret: bytes, session_token: str, sent: str | None) -> bool:
    """True if `sent` is this session's CSRF token (compared in constant time)."""
    expected = csrf_token(secret, session_token)
    return bool(sent) and hmac.compare_digest(str(sent).encode(), expected.encode())


def clean_name(raw: str | None) -> str:
    """The name recorded on a person's actions: printable, trimmed, at most MAX_NAME characters; ValueError
    if nothing is left."""
    name = " ".join("".join(c for c in (raw or "") if c.isprintable()).split())[:MAX_NAME]
    if not name:
        raise ValueError("your name: needed, it is recorded on the alerts you act on")
    return name


def _sessions(secret: bytes) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt="diamond.session", signer_kwargs={"digest_method": hashlib.sha256})


def _csrf(secret: bytes) -> Signer:
    return Signer(secret, salt="diamond.csrf", digest_method=hashlib.sha256)
