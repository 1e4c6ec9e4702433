"""The audit table: who did what and when — sign-ins (failed ones too) and sign-outs, alert actions,
erasures and promotions — one row each, in the serving store (serving.schema.audit_table). Rows are only ever
added. A customer's id never enters it: an erasure is recorded as the customer's salted hash
(`customer_hash`), the salt a random value kept in the store (`store_secrets`), so the same id always hashes
the same within a store (a later run can tell an erased customer, serving.erasure) and differently in another.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import pandas as pd
import sqlalchemy as sa

from core.clock import utc_naive, utc_now
from serving.schema import audit_table, store_secrets_table

Action = Literal[
    "login",
    "login-failed",
    "logout",
    "acknowledged",
    "snoozed",
    "resolved",
    "forget",
    "promote",
    "retrain",
]
COLUMNS = ["at", "who", "role", "action", "target", "client", "detail"]
SALT = "erasure-salt"


def record(
    engine: sa.Engine | sa.Connection,
    action: Action,
    who: str | None,
    role: str | None = None,
    target: str | None = None,
    client: str | None = None,
    detail: str | None = None,
    at: datetime | None = None,
) -> None:
    """Add one row (in the caller's transaction when given a connection)."""
    row = {
        "at": utc_naive(at) if at is not None else utc_now(),
        "who": who[:255] if who else who,
        "role": role,
        "action": action,
        "target": target[:255] if target else target,
        "client": client[:64] if client else client,
        "detail": detail,
    }
    if isinstance(engine, sa.Connection):
        engine.execute(sa.insert(audit_table).values(**row))
        return
    with engine.begin() as con:
        con.execute(sa.insert(audit_table).values(**row))


def entries(
    engine: sa.Engine, actions: Iterable[str] | None = None, limit: int | None = 1000
) -> pd.DataFrame:
    """The latest rows first (of these actions, if given)."""
    t = audit_table
    query = sa.select(*(t.c[c] for c in COLUMNS)).order_by(t.c.at.desc(), t.c.id.desc()).limit(limit)
    if actions is not None:
        query = query.where(t.c.action.in_(list(actions)))
    with engine.connect() as con:
        rows = con.execute(query).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=COLUMNS, dtype=object)  # None stays None


def salt(engine: sa.Engine | sa.Connection) -> bytes:
    """The store's erasure salt, made (32 random bytes) the first time it is asked for."""
    t = store_secrets_table

    def read(con: sa.Connection) -> str | None:
        return con.execute(sa.select(t.c.value).where(t.c.name == SALT)).scalar()

    if isinstance(engine, sa.Connection):
        value = read(engine)
        if value is None:
            value = secrets.token_hex(32)
            engine.execute(sa.insert(t).values(name=SALT, value=value))
        return bytes.fromhex(value)
    with engine.connect() as con:
        value = read(con)
    if value is None:
        try:
            with engine.begin() as con:
                return salt(con)
        except sa.exc.IntegrityError:  # another process made it first
            with engine.connect() as con:
                value = read(con)
    assert value is not None
    return bytes.fromhex(value)


def customer_hash(salt_bytes: bytes, customer_id: str) -> str:
    """The salted hash an erased customer is remembered by (sha256 hex of salt and id)."""
    return hashlib.sha256(salt_bytes + b"\x00" + str(customer_id).encode("utf-8")).hexdigest()
