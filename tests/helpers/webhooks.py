"""One webhook receiver for every test that delivers alerts: a CRM's Standard Webhooks endpoint on 127.0.0.1.

It verifies every signature (401 and a note in `rejected` when one fails), records every authentic request
in order (duplicates included), and processes each webhook-id once: an id it already processed is answered
with success and no second side effect, as the Standard Webhooks guidance asks of receivers. Faults for the
delivery tests are set on the object while it runs; it stops and starts again on the same port, and what it
saw survives the restart.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from serving.delivery import SignatureError, verify

# an alert as the outbox sends it
ALERT = {
    "alert_id": "a-17",
    "customer_id": "C-0042",
    "tier": "gold",
    "churn_probability": 0.873,
    "value_at_risk": 1234.5,
    "reasons": ["no order in 90 days", "support tickets up", "discount expired", "fourth reason"],
}
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"diamond-webhook-test-secret-32b!").decode()
Action = Literal["ok", "fail", "slow", "hang"] | None
# (webhook id, n-th arrival of that id) -> how to answer it: None or "ok" accept, "fail" HTTP 500,
# "slow" accept and answer after `slow_s`, "hang" accept nothing and answer nothing until `release`
Fault = Callable[[str, int], Action]


@dataclass
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Writing to a sender that timed out, hung up or was killed is expected here."""


class WebhookReceiver:
    """A running receiver; `url` is where to send. `mode` answers every request, `fault` one request."""

    def __init__(self, secret: str = WEBHOOK_SECRET, ok_status: int = 200) -> None:
        self.secret = secret
        self.ok_status = ok_status
        self.lock = threading.Lock()
        self.requests: list[Received] = []  # every authentic request, in order, duplicates included
        self.per_id: Counter[str] = Counter()
        self.bodies: dict[str, set[bytes]] = defaultdict(set)  # every body sent under each id
        self.processed: dict[str, bytes] = {}  # de-duplicated by webhook-id: the receiver's side effects
        self.duplicates = 0  # arrivals of an id already processed (absorbed by the de-dup)
        self.rejected: list[str] = []  # signature failures
        self.dropped = 0  # connections cut while `down` (never read, never recorded)
        self.mode: Action = "ok"
        self.fault: Fault = lambda webhook_id, nth: None
        self.slow_s = 0.6
        self.delay_s = 0.0  # every accepted request answers after this long
        self.down = False  # the process is gone: connections are cut, nothing is read or answered
        self.down_after: int | None = None  # go down right after the n-th processed id
        self.went_down = threading.Event()
        self.hold_at: int | None = None  # process the n-th id, then hold its answer until `release`
        self.held_id: str | None = None
        self.held = threading.Event()
        self.release = threading.Event()  # ends every hang and hold
        self.port = 0
        self._server: _QuietServer | None = None
        self._thread: threading.Thread | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/retention"

    def reset(self) -> None:
        """Forget everything received so far (a module fixture serving a second store starts afresh)."""
        with self.lock:
            self.requests.clear()
            self.per_id.clear()
            self.bodies.clear()
            self.processed.clear()
            self.rejected.clear()
            self.duplicates = 0

    @property
    def ids(self) -> list[str]:
        """The webhook-id of every authentic request, in order of arrival."""
        with self.lock:
            return [r.webhook_id for r in self.requests]

    def start(self) -> None:
        """Listen (again) on `port`; a free one the first time."""
        self._server = _QuietServer(("127.0.0.1", self.port), _handler(self))
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections to the port are refused until `start`. Releases hung requests."""
        if self._server is not None:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None

    def _receive(self, message: Message, body: bytes) -> tuple[int | None, bool]:
        """Record one request; the status to answer (None: no answer) and whether to go down after it."""
        headers = dict(message.items())
        try:
            verify(self.secret, headers, body)
        except SignatureError as exc:
            with self.lock:
                self.rejected.append(str(exc))
            return 401, False
        webhook_id = message["webhook-id"]
        with self.lock:
            self.requests.append(Received(webhook_id, headers, body))
            self.per_id[webhook_id] += 1
            self.bodies[webhook_id].add(body)
            action = self.fault(webhook_id, self.per_id[webhook_id]) or self.mode
        if action == "fail":
            return 500, False
        if action == "hang":
            self.release.wait(30)
            return None, False
        with self.lock:
            new = webhook_id not in self.processed
            if new:
                self.processed[webhook_id] = body
            else:
                self.duplicates += 1  # already processed: success, no second side effect
            going_down = new and self.down_after == len(self.processed)
            if going_down:
                self.down = True
            hold = new and self.hold_at == len(self.processed)
        if action == "slow":
            time.sleep(self.slow_s)
        if self.delay_s:
            time.sleep(self.delay_s)
        if hold:
            self.held_id = webhook_id
            self.held.set()
            self.release.wait(30)
        return self.ok_status, going_down


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            if receiver.down:
                with receiver.lock:
                    receiver.dropped += 1
                self.close_connection = True
                return
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status, going_down = receiver._receive(self.headers, body)
            if status is not None:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
            if going_down:
                receiver.went_down.set()

    return Handler
