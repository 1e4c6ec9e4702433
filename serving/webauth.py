"""Dashboard sessions, kept on the server: what the sign-in form hands a browser instead of the API key,
and the CSRF token of each session.

A session is a row of the store's `sessions` table (serving.schema): the key it was opened with (its public
id, serving.access.key_id), when it expires and when it ended. The browser holds a cookie with the session's
random id, signed with itsdangerous (HMAC-SHA256 under the session secret, serving.config.session_secret, a
salt of its own); the table keeps only the id's sha256. A request's session is valid while its signature is
ours, its row exists, has neither ended nor expired, and its key is still accepted (serving.access.KeyRing,
which re-reads the key file when it changes). So signing out ends a session at once in every worker, removing
a key ends every session opened with it at the next request, and a new session secret (a restart without
$DIAMOND_SESSION_SECRET) ends them all. The name and role shown are the key's, as the key file says now.

The CSRF token is the itsdangerous signature of the cookie under another salt (hex): one per session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from itsdangerous import BadData, Signer, URLSafeSerializer, base64_decode

from core.clock import utc_naive
from serving.access import ApiKey, KeyRing, Role
from serving.schema import sessions_table

COOKIE = "diamond_session"
SESSION_S = 8 * 3600  # a working day (serving.yaml auth.session_hours)
KEEP_ENDED = timedelta(days=30)  # ended and expired sessions are deleted after this, at a sign-in


@dataclass(frozen=True)
class Session:
    id: str  # the row's key: sha256 hex of the random session id
    name: str  # the key's name
    role: Role
    key_id: str
    expires: datetime  # naive UTC
    token: str  # the cookie


def open_session(
    engine: sa.Engine,
    secret: bytes,
    key: ApiKey,
    now: datetime,
    ttl_s: float = SESSION_S,
    client: str | None = None,
) -> str:
    """Store a new session for `key` and return the signed cookie value that names it."""
    sid = secrets.token_urlsafe(32)
    when = utc_naive(now)
    t = sessions_table
    with engine.begin() as con:
        con.execute(sa.delete(t).where(t.c.expires_at < when - KEEP_ENDED))
        con.execute(
            sa.insert(t).values(
                id=_row_id(sid),
                key_id=key.id,
                name=key.name,
                client=client[:64] if client else None,
                created_at=when,
                expires_at=when + timedelta(seconds=ttl_s),
            )
        )
    return _sessions(secret).dumps({"s": sid})


def find(engine: sa.Engine, secret: bytes, token: str | None, keys: KeyRing, now: datetime) -> Session | None:
    """The live session the cookie `token` names, or None (forged, unknown, ended, expired, key removed)."""
    if not token:
        return None
    try:
        sid = str(_sessions(secret).loads(token)["s"])
    except (BadData, KeyError, TypeError):
        return None
    t = sessions_table
    with engine.connect() as con:
        row = con.execute(sa.select(t).where(t.c.id == _row_id(sid))).mappings().first()
    if row is None or row["ended_at"] is not None or row["expires_at"] <= utc_naive(now):
        return None
    key = keys.by_id(row["key_id"])
    if key is None:
        return None
    return Session(row["id"], key.name, key.role, key.id, row["expires_at"], token)


def end(engine: sa.Engine, session: Session, now: datetime) -> None:
    """End the session: refused from now on, in every worker."""
    t = sessions_table
    with engine.begin() as con:
        con.execute(
            sa.update(t).where(t.c.id == session.id, t.c.ended_at.is_(None)).values(ended_at=utc_naive(now))
        )


def csrf_token(secret: bytes, session_token: str) -> str:
    """The token every state-changing form of this session must carry: the session cookie's signature under
    the CSRF salt, in hex."""
    return base64_decode(_csrf(secret).get_signature(session_token)).hex()


def csrf_ok(secret: bytes, session_token: str, sent: str | None) -> bool:
    """True if `sent` is this session's CSRF token (compared in constant time)."""
    expected = csrf_token(secret, session_token)
    return bool(sent) and hmac.compare_digest(str(sent).encode(), expected.encode())


def _row_id(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def _sessions(secret: bytes) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt="diamond.session", signer_kwargs={"digest_method": hashlib.sha256})


def _csrf(secret: bytes) -> Signer:
    return Signer(secret, salt="diamond.csrf", digest_method=hashlib.sha256)
