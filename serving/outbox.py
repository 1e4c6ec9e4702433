"""Durable outbox for retention-alert webhooks, the storage side: alerts are stored first, then delivered
(serving.delivery), never lost.

Why an outbox: an alert must survive a receiver that is down, slow or erroring, and a process that is
killed mid-run. So an alert is first written to the ``outbox`` table (``enqueue``) and only then sent, by
serving.delivery from a worker that can be re-run at any time.

Delivery contract -- **at least once, de-duplicated by ``webhook-id``**:

* Every row has a ``webhook_id``, the idempotency key. It is sent as the ``webhook-id`` header and is the
  same on every attempt; the timestamp and signature are fresh per attempt (Standard Webhooks).
* Each row is handled as: claim (``claim``, commit) -> HTTP POST -> record the outcome (``mark_delivered`` or
  ``mark_failed``, commit). A process killed after the POST but before the outcome commit leaves the row
  pending; once its claim lease has expired it is sent again with the SAME ``webhook-id``. Receivers must
  therefore treat a ``webhook-id`` they have already processed as a success and do nothing (store the ids
  they have seen, e.g. for a few days).
* Nothing is dropped: a row ends ``delivered`` (2xx) or, after ``max_attempts`` failures, ``dead`` -- the
  dead-letter list (``dead_letters``), from which an operator can requeue it (``retry_dead``).
* Concurrent workers are safe without ``SELECT ... FOR UPDATE``: a row is claimed with a conditional
  UPDATE (compare-and-set on ``attempts``), so only one worker sends a given attempt.

Storage is SQLAlchemy Core with portable SQL: SQLite file by default, PostgreSQL in production; the
``outbox`` table is declared in serving.schema and, like every table of the store, holds naive UTC times
(a ``now`` given with a time zone is converted).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.clock import utc_naive, utc_now
from serving.schema import outbox_table as OUTBOX

__all__ = [
    "OUTBOX",
    "Status",
    "claim",
    "dead_letters",
    "due",
    "encode_payload",
    "enqueue",
    "enqueue_many",
    "mark_delivered",
    "mark_failed",
    "pending_count",
    "retry_dead",
]

log = logging.getLogger(__name__)

Status = Literal["pending", "delivered", "dead"]

_ID_RE = re.compile(r"[A-Za-z0-9_:\-]{1,255}")


# --------------------------------------------------------------------------------------------- storage


def encode_payload(payload: Mapping[str, Any]) -> str:
    """Canonical JSON text: stable bytes across retries; NaN/Infinity rejected (not valid JSON)."""
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def enqueue(
    engine: Engine,
    destination: str,
    payload: Mapping[str, Any],
    webhook_id: str | None = None,
    *,
    now: datetime | None = None,
) -> str:
    """Store one alert for delivery to ``destination`` and return its webhook id.

    Pass your own ``webhook_id`` (e.g. ``f"alert_{alert_id}_v{version}"``) to make enqueueing idempotent:
    the same id enqueued twice keeps the first row and is otherwise a no-op. Ids are 1-255 characters of
    ``A-Z a-z 0-9 _ - :`` (no ``.``, the separator of the signed content). Raises ``ValueError`` for a bad
    id or a payload that is not valid JSON.
    """
    if webhook_id is None:
        webhook_id = f"msg_{uuid.uuid4().hex}"
    if not _ID_RE.fullmatch(webhook_id):
        raise ValueError(f"invalid webhook_id {webhook_id!r}: use 1-255 characters of A-Z a-z 0-9 _ - :")
    if not destination:
        raise ValueError("destination (the endpoint name) is required")
    body = encode_payload(payload)
    at = utc_naive(now) if now is not None else utc_now()
    row = {
        "webhook_id": webhook_id,
        "destination": destination,
        "payload": body,
        "created_at": at,
        "attempts": 0,
        "next_attempt_at": at,
        "status": "pending",
        "last_error": None,
        "delivered_at": None,
    }
    try:
        with engine.begin() as conn:
            conn.execute(OUTBOX.insert().values(**row))
    except sa.exc.IntegrityError:
        # Portable "insert if absent": a duplicate key means it is already enqueued. Anything else re-raises.
        with engine.connect() as conn:
            exists = conn.execute(
                sa.select(OUTBOX.c.webhook_id).where(OUTBOX.c.webhook_id == webhook_id)
            ).first()
        if exists is None:
            raise
        log.debug("webhook %s already enqueued; no-op", webhook_id)
    return webhook_id


def enqueue_many(
    engine: Engine,
    messages: Sequence[tuple[str, Mapping[str, Any], str]],
    *,
    now: datetime | None = None,
) -> None:
    """Store many alerts for delivery, each (destination, payload, webhook_id), as `enqueue` stores one, in
    one transaction: all of them or none. An id already queued keeps its first row. Rows are created a
    microsecond apart in the given order, so delivery (soonest first) keeps it; a batch run queues its
    alerts highest value at risk first. Raises ``ValueError`` for a bad id, destination or payload before
    anything is written."""
    at = utc_naive(now) if now is not None else utc_now()
    rows = []
    for i, (destination, payload, webhook_id) in enumerate(messages):
        if not _ID_RE.fullmatch(webhook_id):
            raise ValueError(f"invalid webhook_id {webhook_id!r}: use 1-255 characters of A-Z a-z 0-9 _ - :")
        if not destination:
            raise ValueError("destination (the endpoint name) is required")
        created = at + timedelta(microseconds=i)
        rows.append(
            {
                "webhook_id": webhook_id,
                "destination": destination,
                "payload": encode_payload(payload),
                "created_at": created,
                "attempts": 0,
                "next_attempt_at": created,
                "status": "pending",
                "last_error": None,
                "delivered_at": None,
            }
        )
    if not rows:
        return
    with engine.begin() as conn:
        conn.execute(_insert_if_absent(conn), rows)


def _insert_if_absent(conn: sa.Connection) -> sa.Insert:
    """INSERT that leaves an already queued webhook id alone (ON CONFLICT DO NOTHING: SQLite, PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(OUTBOX).on_conflict_do_nothing(index_elements=[OUTBOX.c.webhook_id])
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(OUTBOX).on_conflict_do_nothing(index_elements=[OUTBOX.c.webhook_id])
    raise ValueError(f"the outbox lives in SQLite or PostgreSQL, not {conn.dialect.name}")


def pending_count(engine: Engine) -> int:
    """Number of alerts not yet delivered nor dead (due now or scheduled for later)."""
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).select_from(OUTBOX).where(OUTBOX.c.status == "pending")
        ).scalar_one()
    return int(count)


def dead_letters(engine: Engine) -> list[dict[str, Any]]:
    """The dead-letter list: rows that failed ``max_attempts`` times, oldest first, payload decoded."""
    query = (
        sa.select(OUTBOX).where(OUTBOX.c.status == "dead").order_by(OUTBOX.c.created_at, OUTBOX.c.webhook_id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [{**row, "payload": json.loads(row["payload"])} for row in rows]


def retry_dead(engine: Engine, webhook_id: str, *, now: datetime | None = None) -> None:
    """Move a dead row back to pending, due now, with attempts reset; ``LookupError`` if no such dead row."""
    with engine.begin() as conn:
        result = conn.execute(
            OUTBOX.update()
            .where(OUTBOX.c.webhook_id == webhook_id, OUTBOX.c.status == "dead")
            .values(
                status="pending", attempts=0, next_attempt_at=utc_naive(now) if now is not None else utc_now()
            )
        )
    if result.rowcount != 1:
        raise LookupError(f"no dead webhook with id {webhook_id!r}")


# -------------------------------------------------------------------------------- one delivery attempt


def due(
    engine: Engine, destinations: Sequence[str], at: datetime, limit: int
) -> list[tuple[str, str, str, int]]:
    """Up to ``limit`` pending rows for these destinations whose next attempt is due at ``at``, soonest first:
    (webhook_id, destination, payload, attempts)."""
    query = (
        sa.select(OUTBOX.c.webhook_id, OUTBOX.c.destination, OUTBOX.c.payload, OUTBOX.c.attempts)
        .where(
            OUTBOX.c.status == "pending",
            OUTBOX.c.next_attempt_at <= at,
            OUTBOX.c.destination.in_(list(destinations)),
        )
        .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.webhook_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [(r.webhook_id, r.destination, r.payload, r.attempts) for r in conn.execute(query)]


def claim(engine: Engine, webhook_id: str, seen_attempts: int, at: datetime, lease_until: datetime) -> bool:
    """Take a due row for one attempt (attempts + 1, next attempt pushed to ``lease_until``), committed. A
    compare-and-set on attempts: False when another worker claimed it since it was read."""
    with engine.begin() as conn:
        claimed = conn.execute(
            OUTBOX.update()
            .where(
                OUTBOX.c.webhook_id == webhook_id,
                OUTBOX.c.status == "pending",
                OUTBOX.c.attempts == seen_attempts,
                OUTBOX.c.next_attempt_at <= at,
            )
            .values(attempts=seen_attempts + 1, next_attempt_at=lease_until)
        ).rowcount
    return bool(claimed == 1)


def mark_delivered(engine: Engine, webhook_id: str, at: datetime) -> None:
    """Record a delivery (a 2xx answer) at ``at``."""
    with engine.begin() as conn:
        conn.execute(
            OUTBOX.update()
            .where(OUTBOX.c.webhook_id == webhook_id, OUTBOX.c.status != "delivered")
            .values(status="delivered", delivered_at=at, last_error=None)
        )


def mark_failed(
    engine: Engine, webhook_id: str, attempts: int, status: Status, next_attempt_at: datetime, error: str
) -> None:
    """Record a failed attempt: pending again from ``next_attempt_at``, or dead. Only while the claim of that
    attempt is still ours: never turn a row another worker delivered into a failure."""
    with engine.begin() as conn:
        conn.execute(
            OUTBOX.update()
            .where(
                OUTBOX.c.webhook_id == webhook_id,
                OUTBOX.c.status == "pending",
                OUTBOX.c.attempts == attempts,
            )
            .values(status=status, next_attempt_at=next_attempt_at, last_error=error)
        )
