"""The webhook outbox against real stores (a SQLite file, a PostgreSQL database) and a real local HTTP
receiver (no mocks of what we ship). Signing, verification and the Slack text alone are tested in
tests/unit/test_outbox.py.

Scheduling time is stepped with explicit ``now`` values; only the hang case waits (~0.2 s timeout).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from serving import store
from serving.delivery import Endpoint, deliver_due, http_post
from serving.outbox import OUTBOX, dead_letters, due, enqueue, enqueue_many, pending_count, retry_dead
from tests.helpers.webhooks import ALERT, WebhookReceiver
from tests.helpers.webhooks import WEBHOOK_SECRET as SECRET

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(store_url: str) -> Iterator[sa.Engine]:
    """A new store, on SQLite and on PostgreSQL (conftest's `store_url`)."""
    eng = store.engine(store_url)
    store.prepare(eng)
    store.prepare(eng)  # idempotent
    yield eng
    eng.dispose()


def endpoint(rec: WebhookReceiver, fmt: str = "json", timeout_s: float = 2.0) -> dict[str, Endpoint]:
    return {"crm": Endpoint(name="crm", url=rec.url, secret=SECRET, format=fmt, timeout_s=timeout_s)}  # type: ignore[arg-type]


def row(engine: sa.Engine, webhook_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(sa.select(OUTBOX).where(OUTBOX.c.webhook_id == webhook_id)).mappings().one()
    out = dict(found)
    for key in ("created_at", "next_attempt_at", "delivered_at"):
        if out[key] is not None:
            out[key] = out[key].replace(tzinfo=UTC)
    return out


# ------------------------------------------------------------------------------------------- storage


def test_enqueue_is_idempotent(engine: sa.Engine) -> None:
    first = enqueue(engine, "crm", ALERT, webhook_id="alert_a-17_v1", now=T0)
    again = enqueue(engine, "crm", {**ALERT, "tier": "silver"}, webhook_id="alert_a-17_v1", now=T0)
    assert first == again == "alert_a-17_v1"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(OUTBOX)).scalar_one() == 1
    assert json.loads(row(engine, first)["payload"])["tier"] == "gold"  # the first write wins
    assert pending_count(engine) == 1

    generated = {enqueue(engine, "crm", ALERT, now=T0) for _ in range(3)}
    assert len(generated) == 3 and all(g.startswith("msg_") for g in generated)
    assert pending_count(engine) == 4

    with pytest.raises(ValueError, match="webhook_id"):
        enqueue(engine, "crm", ALERT, webhook_id="has.dot")
    with pytest.raises(ValueError):
        enqueue(engine, "crm", {"churn_probability": float("nan")})
    assert pending_count(engine) == 4


def test_enqueue_many_is_one_idempotent_write_in_the_given_order(engine: sa.Engine) -> None:
    """A batch run's notifications in one transaction: a queued id keeps its first row, the rest are due in
    the order given (not by id: alert-10 would come before alert-9), and a bad one writes nothing."""
    enqueue(engine, "crm", ALERT, webhook_id="alert-10-v1-crm", now=T0)
    given = [
        ("crm", {**ALERT, "alert_id": 9}, "alert-9-v1-crm"),
        ("crm", {**ALERT, "tier": "silver"}, "alert-10-v1-crm"),  # queued already: left as it is
        ("slack", {**ALERT, "alert_id": 11}, "alert-11-v1-slack"),
    ]
    enqueue_many(engine, given, now=T0 + timedelta(hours=1))
    enqueue_many(engine, given, now=T0 + timedelta(hours=2))  # a re-run adds nothing
    assert pending_count(engine) == 3
    assert json.loads(row(engine, "alert-10-v1-crm")["payload"])["tier"] == "gold"
    assert json.loads(row(engine, "alert-9-v1-crm")["payload"])["alert_id"] == 9
    later = T0 + timedelta(hours=1)
    assert row(engine, "alert-9-v1-crm")["created_at"] == later
    assert row(engine, "alert-11-v1-slack")["next_attempt_at"] == later + timedelta(microseconds=2)
    order = [w for w, *_ in due(engine, ["crm", "slack"], T0 + timedelta(days=1), 10)]
    assert order == ["alert-10-v1-crm", "alert-9-v1-crm", "alert-11-v1-slack"]

    with pytest.raises(ValueError, match="webhook_id"):
        enqueue_many(engine, [("crm", ALERT, "alert-12-v1-crm"), ("crm", ALERT, "has.dot")])
    with pytest.raises(ValueError):
        enqueue_many(engine, [("crm", ALERT, "alert-13-v1-crm"), ("crm", {"p": float("nan")}, "x")])
    assert pending_count(engine) == 3  # nothing of a refused batch was written


# ------------------------------------------------------------------------------------------ delivery


def test_delivered_once_with_a_valid_signature(engine: sa.Engine, receiver: WebhookReceiver) -> None:
    wid = enqueue(engine, "crm", ALERT, webhook_id="alert_a-17_v1", now=T0)
    later = enqueue(engine, "crm", ALERT, now=T0 + timedelta(hours=1))  # not due yet
    enqueue(engine, "unconfigured", ALERT, now=T0)  # no endpoint: left alone, still pending

    report = deliver_due(engine, endpoint(receiver), now=T0)

    assert (report.delivered, report.retried, report.dead) == (1, 0, 0)
    assert receiver.rejected == []
    assert receiver.ids == [wid]
    got = receiver.requests[0]
    assert got.headers["content-type"] == "application/json"
    assert json.loads(got.body) == ALERT
    stored = row(engine, wid)
    assert (stored["status"], stored["attempts"]) == ("delivered", 1)
    assert timedelta(0) <= stored["delivered_at"] - T0 < timedelta(seconds=5)  # now + the run's own time
    assert row(engine, later)["status"] == "pending"

    assert deliver_due(engine, endpoint(receiver), now=T0 + timedelta(minutes=1)).delivered == 0
    assert receiver.ids == [wid]  # a delivered row is never sent again
    assert pending_count(engine) == 2


def test_500_then_recovery_resends_the_same_id_once_processed(
    engine: sa.Engine, receiver: WebhookReceiver
) -> None:
    wid = enqueue(engine, "crm", ALERT, now=T0)
    receiver.mode = "fail"
    report = deliver_due(engine, endpoint(receiver), now=T0, rng=random.Random(1))
    assert (report.delivered, report.retried, report.dead) == (0, 1, 0)
    failed = row(engine, wid)
    assert (failed["status"], failed["attempts"], failed["last_error"]) == ("pending", 1, "HTTP 500")
    assert T0 < failed["next_attempt_at"] <= T0 + timedelta(seconds=2.0)

    assert deliver_due(engine, endpoint(receiver), now=T0).delivered == 0  # not due again yet
    assert receiver.ids == [wid]

    receiver.mode = "ok"
    report = deliver_due(engine, endpoint(receiver), now=failed["next_attempt_at"])
    assert report.delivered == 1
    assert receiver.ids == [wid, wid]  # retried with the same webhook-id
    assert list(receiver.processed) == [wid]  # exactly once from the receiver's point of view
    assert row(engine, wid)["status"] == "delivered"
    assert row(engine, wid)["last_error"] is None


def test_hanging_receiver_times_out_and_is_retried(engine: sa.Engine, receiver: WebhookReceiver) -> None:
    wid = enqueue(engine, "crm", ALERT, now=T0)
    receiver.mode = "hang"
    started = time.monotonic()
    report = deliver_due(engine, endpoint(receiver, timeout_s=0.2), now=T0)
    assert time.monotonic() - started < 2.0
    assert report.retried == 1
    assert "Timeout" in row(engine, wid)["last_error"]

    receiver.release.set()
    receiver.mode = "ok"
    report = deliver_due(engine, endpoint(receiver, timeout_s=0.2), now=T0 + timedelta(minutes=1))
    assert report.delivered == 1
    assert receiver.ids == [wid, wid]
    assert list(receiver.processed) == [wid]


def test_receiver_down_backs_off_then_dead_letters_then_retry_dead(
    engine: sa.Engine, receiver: WebhookReceiver
) -> None:
    wid = enqueue(engine, "crm", ALERT, now=T0)
    endpoints = endpoint(receiver)
    port = receiver.port
    receiver.stop()  # connection refused from now on

    base, cap, max_attempts = 2.0, 10.0, 5
    expected_rng = random.Random(42)
    expected = [expected_rng.uniform(0, min(cap, base * 2**n)) for n in range(max_attempts - 1)]
    rng = random.Random(42)  # one seeded generator across runs, as one long-lived worker would hold
    now, schedule = T0, []
    for attempt in range(1, max_attempts + 1):
        report = deliver_due(
            engine, endpoints, now=now, max_attempts=max_attempts, base_delay_s=base, max_delay_s=cap, rng=rng
        )
        stored = row(engine, wid)
        assert stored["attempts"] == attempt
        assert "ConnectError" in stored["last_error"]
        if attempt < max_attempts:
            assert report.retried == 1
            schedule.append(stored["next_attempt_at"])
            now = stored["next_attempt_at"]
        else:
            assert (report.retried, report.dead) == (0, 1)
            assert stored["status"] == "dead"
    delays = [(b - a).total_seconds() for a, b in zip([T0, *schedule], schedule, strict=False)]
    assert all(later > earlier for earlier, later in zip([T0, *schedule], schedule, strict=False))
    # backoff counts from the failure (now + the run's own time: a refused connection takes milliseconds)
    for n, delay in enumerate(delays):
        assert 0 <= delay <= min(cap, base * 2**n) + 0.5
    assert delays == pytest.approx(expected, abs=0.5)  # the seeded jitter

    assert pending_count(engine) == 0
    [letter] = dead_letters(engine)
    assert letter["webhook_id"] == wid and letter["payload"] == ALERT and letter["attempts"] == max_attempts
    assert deliver_due(engine, endpoints, now=now + timedelta(days=1)).delivered == 0  # dead stays dead

    retry_dead(engine, wid, now=now)
    assert dead_letters(engine) == []
    assert (row(engine, wid)["status"], row(engine, wid)["attempts"]) == ("pending", 0)
    with pytest.raises(LookupError):
        retry_dead(engine, wid)

    receiver.start()  # the receiver comes back at the same address
    assert deliver_due(engine, endpoints, now=now).delivered == 1
    assert receiver.ids == [wid] and receiver.port == port


def test_receiver_shut_down_mid_run_loses_nothing(engine: sa.Engine, receiver: WebhookReceiver) -> None:
    ids = [
        enqueue(engine, "crm", {**ALERT, "alert_id": f"a-{i}"}, webhook_id=f"alert_{i}", now=T0)
        for i in range(3)
    ]

    def post_then_shut_down(url: str, headers: dict[str, str], body: bytes, timeout: float) -> int:
        status = http_post(url, headers, body, timeout)
        receiver.stop()  # the receiver goes away right after the first delivery
        return status

    report = deliver_due(engine, endpoint(receiver), now=T0, post=post_then_shut_down)
    assert (report.delivered, report.retried, report.dead) == (1, 2, 0)
    assert pending_count(engine) == 2

    receiver.start()  # back at the same address
    report = deliver_due(engine, endpoint(receiver), now=T0 + timedelta(minutes=5))
    assert report.delivered == 2
    assert sorted(receiver.processed) == ids and receiver.duplicates == 0  # each id processed once


def test_slack_format_is_a_signed_text_message(engine: sa.Engine, receiver: WebhookReceiver) -> None:
    enqueue(engine, "crm", ALERT, now=T0)
    assert deliver_due(engine, endpoint(receiver, fmt="slack"), now=T0).delivered == 1
    assert receiver.rejected == []  # still signed, and the signature covers the Slack body
    body = json.loads(receiver.requests[0].body)
    assert list(body) == ["text"]
    assert body["text"] == (
        "Retention alert: customer C-0042 (gold tier) - churn probability 87%, value at risk 1,234.50. "
        "Top reasons: no order in 90 days; support tickets up; discount expired"
    )


class SimulatedKill(BaseException):
    """Like SIGKILL for the purposes of the worker: nothing after the POST runs, no commit, no cleanup."""


def test_error_after_the_receiver_got_it_is_resent_with_the_same_id(
    engine: sa.Engine, receiver: WebhookReceiver
) -> None:
    wid = enqueue(engine, "crm", ALERT, now=T0)

    def post_then_lose_response(url: str, headers: dict[str, str], body: bytes, timeout: float) -> int:
        http_post(url, headers, body, timeout)
        raise ConnectionResetError("connection reset before the response was read")

    assert deliver_due(engine, endpoint(receiver), now=T0, post=post_then_lose_response).retried == 1
    assert deliver_due(engine, endpoint(receiver), now=T0 + timedelta(minutes=5)).delivered == 1
    assert receiver.ids == [wid, wid]
    assert list(receiver.processed) == [wid]
    assert receiver.rejected == []


def test_kill_between_post_and_commit_resends_after_restart(
    store_url: str, engine: sa.Engine, receiver: WebhookReceiver
) -> None:
    wid = enqueue(engine, "crm", ALERT, now=T0)

    def post_then_die(url: str, headers: dict[str, str], body: bytes, timeout: float) -> int:
        http_post(url, headers, body, timeout)
        raise SimulatedKill

    with pytest.raises(SimulatedKill):
        deliver_due(engine, endpoint(receiver), now=T0, post=post_then_die)
    engine.dispose()
    assert receiver.ids == [wid] and list(receiver.processed) == [wid]

    restarted = store.engine(store_url)  # a new process, same store
    try:
        assert pending_count(restarted) == 1  # the delivery was not recorded: nothing is lost
        assert deliver_due(restarted, endpoint(receiver), now=T0 + timedelta(seconds=30)).delivered == 0
        assert receiver.ids == [wid]  # still claimed by the dead worker until its lease expires

        report = deliver_due(restarted, endpoint(receiver), now=T0 + timedelta(minutes=10))
        assert report.delivered == 1
        assert receiver.ids == [wid, wid]  # at least once, same webhook-id ...
        assert list(receiver.processed) == [wid]  # ... de-duplicated by the receiver to exactly once
        assert row(restarted, wid)["status"] == "delivered"
        assert pending_count(restarted) == 0 and dead_letters(restarted) == []
    finally:
        restarted.dispose()
