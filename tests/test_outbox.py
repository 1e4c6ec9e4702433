"""The webhook outbox against a real SQLite file and a real local HTTP receiver (no mocks of what we ship).

Scheduling time is stepped with explicit ``now`` values; only the hang case waits (~0.2 s timeout).
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from serving import store
from serving.delivery import Endpoint, SignatureError, deliver_due, http_post, sign, slack_text, verify
from serving.outbox import OUTBOX, dead_letters, enqueue, pending_count, retry_dead

SECRET = "whsec_" + base64.b64encode(b"diamond-outbox-test-secret-32byt").decode()
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ALERT = {
    "alert_id": "a-17",
    "customer_id": "C-0042",
    "tier": "gold",
    "churn_probability": 0.873,
    "value_at_risk": 1234.5,
    "reasons": ["no order in 90 days", "support tickets up", "discount expired", "fourth reason"],
}


# ------------------------------------------------------------------------------------------ receiver


@dataclass
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A hung handler writing to a socket the client already closed is expected here."""


class Receiver:
    """A Standard Webhooks receiver: verifies signatures, records every request, processes each id once.

    ``mode``: 'ok' (200), 'fail' (500) or 'hang' (no answer until released, past the sender's timeout).
    """

    def __init__(self, secret: str = SECRET, port: int = 0) -> None:
        self.secret = secret
        self.mode = "ok"
        self.requests: list[Received] = []  # every authentic request, duplicates included
        self.processed: dict[str, bytes] = {}  # de-duplicated by webhook-id: the receiver's side effects
        self.rejected: list[str] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", port), self._handler())
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/retention"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        self._running = True

    @property
    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.requests]

    def stop(self) -> None:
        if self._running:
            self._running = False
            self.release.set()
            self.server.shutdown()
            self.server.server_close()
            self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int) -> None:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = dict(self.headers.items())
                try:
                    verify(receiver.secret, headers, body)
                except SignatureError as exc:
                    receiver.rejected.append(str(exc))
                    self._reply(401)
                    return
                webhook_id = self.headers["webhook-id"]
                with receiver._lock:
                    receiver.requests.append(Received(webhook_id, headers, body))
                if receiver.mode == "fail":
                    self._reply(500)
                    return
                if receiver.mode == "hang":
                    receiver.release.wait(5)
                    return
                with receiver._lock:
                    receiver.processed.setdefault(webhook_id, body)  # already seen: success, no side effect
                self._reply(200)

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.stop()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    store.prepare(eng)
    store.prepare(eng)  # idempotent
    yield eng
    eng.dispose()


def endpoint(rec: Receiver, fmt: str = "json", timeout_s: float = 2.0) -> dict[str, Endpoint]:
    return {"crm": Endpoint(name="crm", url=rec.url, secret=SECRET, format=fmt, timeout_s=timeout_s)}  # type: ignore[arg-type]


def row(engine: sa.Engine, webhook_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(sa.select(OUTBOX).where(OUTBOX.c.webhook_id == webhook_id)).mappings().one()
    out = dict(found)
    for key in ("created_at", "next_attempt_at", "delivered_at"):
        if out[key] is not None:
            out[key] = out[key].replace(tzinfo=UTC)
    return out


# ------------------------------------------------------------------------------------------- signing


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {
        "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "Webhook-Timestamp": "1614265330",
        "Webhook-Signature": f"v1,bm9wZQ== {signature}",  # rotation: any one valid signature passes
    }
    verify(secret, headers, body.encode(), now=1614265330 + 299)


def test_verify_rejects_tampering_wrong_secret_replay_and_missing_headers() -> None:
    now = int(time.time())
    body = json.dumps(ALERT).encode()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(SECRET, "msg_1", now, body),
    }
    verify(SECRET, headers, body)
    verify(
        "raw text secret", {**headers, "webhook-signature": sign("raw text secret", "msg_1", now, body)}, body
    )

    with pytest.raises(SignatureError, match="tampered"):
        verify(SECRET, headers, body.replace(b"C-0042", b"C-9999"))
    with pytest.raises(SignatureError, match="wrong secret"):
        verify("whsec_" + base64.b64encode(b"another secret").decode(), headers, body)
    with pytest.raises(SignatureError, match="too old"):
        verify(SECRET, headers, body, now=now + 301)  # a captured request replayed 5 minutes later
    old = now - 3600  # re-signed with an old timestamp: still a replay
    with pytest.raises(SignatureError, match="too old"):
        verify(
            SECRET,
            {**headers, "webhook-timestamp": str(old), "webhook-signature": sign(SECRET, "msg_1", old, body)},
            body,
        )
    with pytest.raises(SignatureError, match="future"):
        verify(SECRET, headers, body, now=now - 301)
    with pytest.raises(SignatureError, match="webhook-id"):
        verify(SECRET, {k: v for k, v in headers.items() if k != "webhook-id"}, body)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, {**headers, "webhook-signature": ""}, body)
    with pytest.raises(SignatureError, match="unix seconds"):
        verify(SECRET, {**headers, "webhook-timestamp": "yesterday"}, body)
    with pytest.raises(SignatureError, match="no matching v1 signature"):
        verify(SECRET, {**headers, "webhook-id": "msg_2"}, body)  # a signature is bound to its id


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


# ------------------------------------------------------------------------------------------ delivery


def test_delivered_once_with_a_valid_signature(engine: sa.Engine, receiver: Receiver) -> None:
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


def test_500_then_recovery_resends_the_same_id_once_processed(engine: sa.Engine, receiver: Receiver) -> None:
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


def test_hanging_receiver_times_out_and_is_retried(engine: sa.Engine, receiver: Receiver) -> None:
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
    engine: sa.Engine, receiver: Receiver
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

    back = Receiver(port=port)  # the receiver comes back at the same address
    try:
        assert deliver_due(engine, endpoints, now=now).delivered == 1
        assert back.ids == [wid]
    finally:
        back.stop()


def test_receiver_shut_down_mid_run_loses_nothing(engine: sa.Engine, receiver: Receiver) -> None:
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

    back = Receiver(port=receiver.port)
    try:
        report = deliver_due(engine, endpoint(back), now=T0 + timedelta(minutes=5))
        assert report.delivered == 2
        assert sorted([*receiver.processed, *back.processed]) == ids
    finally:
        back.stop()


def test_slack_format_is_a_signed_text_message(engine: sa.Engine, receiver: Receiver) -> None:
    enqueue(engine, "crm", ALERT, now=T0)
    assert deliver_due(engine, endpoint(receiver, fmt="slack"), now=T0).delivered == 1
    assert receiver.rejected == []  # still signed, and the signature covers the Slack body
    body = json.loads(receiver.requests[0].body)
    assert list(body) == ["text"]
    assert body["text"] == (
        "Retention alert: customer C-0042 (gold tier) - churn probability 87%, value at risk 1,234.50. "
        "Top reasons: no order in 90 days; support tickets up; discount expired"
    )


def test_slack_text_handles_missing_fields_and_escapes_mentions() -> None:
    assert slack_text({"customer_id": "<!channel>", "churn_probability": 0.5}) == (
        "Retention alert: customer &lt;!channel&gt; - churn probability 50%"
    )
    assert (
        slack_text({"tier": "bronze", "value_at_risk": 10})
        == "Retention alert (bronze tier) - value at risk 10.00"
    )
    assert slack_text({"other": 1}) == 'Retention alert: {"other":1}'


class SimulatedKill(BaseException):
    """Like SIGKILL for the purposes of the worker: nothing after the POST runs, no commit, no cleanup."""


def test_error_after_the_receiver_got_it_is_resent_with_the_same_id(
    engine: sa.Engine, receiver: Receiver
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
    tmp_path: Path, engine: sa.Engine, receiver: Receiver
) -> None:
    wid = enqueue(engine, "crm", ALERT, now=T0)

    def post_then_die(url: str, headers: dict[str, str], body: bytes, timeout: float) -> int:
        http_post(url, headers, body, timeout)
        raise SimulatedKill

    with pytest.raises(SimulatedKill):
        deliver_due(engine, endpoint(receiver), now=T0, post=post_then_die)
    engine.dispose()
    assert receiver.ids == [wid] and list(receiver.processed) == [wid]

    restarted = sa.create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")  # a new process, same file
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
