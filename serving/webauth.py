"""Dashboard sessions: what the login form hands a browser instead of the API key, and the CSRF token of
each session. Pure functions of a secret, the accepted key digests and the time.

A session token is `payload.signature`: the payload (base64url JSON) names who logged in, which key they
used (an id derived from the key's digest, so removing the key from the service ends its sessions) and when
the session expires; the signature is HMAC-SHA256 under the session secret (serving.config.session_secret).
The raw key never leaves the login request. The CSRF token is a second HMAC of the session token: one per
session, nothing stored on the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

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
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def verify(secret: bytes, token: str | None, key_hashes: Iterable[str], now: float) -> Session | None:
    """The session in `token` if its signature is ours, it has not expired and its key is still accepted."""
    if not token or token.count(".") != 1:
        return None
    payload, signature = token.split(".")
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        who, kid, expires = str(body["w"]), str(body["k"]), int(body["e"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires <= now or kid not in {key_id(h) for h in key_hashes}:
        return None
    return Session(who, expires, token)


def csrf_token(secret: bytes, session_token: str) -> str:
    """The token every state-changing form of this session must carry."""
    return hmac.new(secret, f"csrf:{session_token}".encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, session_token: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(str(sent), csrf_token(secret, session_token))


def clean_name(raw: str | None) -> str:
    """The name recorded on a person's actions: printable, trimmed, at most MAX_NAME characters; ValueError
    if nothing is left."""
    name = " ".join("".join(c for c in (raw or "") if c.isprintable()).split())[:MAX_NAME]
    if not name:
        raise ValueError("your name: needed, it is recorded on the alerts you act on")
    return name


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
