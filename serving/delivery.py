"""Webhook delivery over HTTP: the outbox's due rows (serving.outbox) sent to their receivers, signed.

* Each due row is claimed, rendered (the stored JSON, or one line of text for a Slack webhook), signed with
  fresh Standard Webhooks headers and POSTed; the outcome is recorded in the outbox. ``deliver_due`` runs one
  batch, ``deliver_all`` batches until nothing is due.
* Failed attempts are retried with exponential backoff and full jitter (``backoff_delay``); after
  ``max_attempts`` a row is dead (the outbox's dead letters).
* Signing follows https://www.standardwebhooks.com (``sign``/``verify``, through the ``standardwebhooks``
  package), so receivers can use any Standard Webhooks library; ``verify`` is the receivers' (and tests')
  side.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from sqlalchemy.engine import Engine
from standardwebhooks.webhooks import Webhook

from core.clock import utc_naive, utc_now
from serving import outbox
from serving.config import WebhookConfig

__all__ = [
    "DeliveryReport",
    "Endpoint",
    "PostFn",
    "SignatureError",
    "backoff_delay",
    "deliver_all",
    "deliver_due",
    "http_post",
    "parse_secret",
    "render_body",
    "sign",
    "signed_headers",
    "slack_text",
    "verify",
]

log = logging.getLogger(__name__)

Format = Literal["json", "slack"]
PostFn = Callable[[str, dict[str, str], bytes, float], int]
"""``(url, headers, body, timeout_s) -> HTTP status``; raises on timeout / connection errors."""

_MAX_ERROR_CHARS = 1000


# --------------------------------------------------------------------------------------------- signing


class SignatureError(ValueError):
    """A webhook failed verification: missing header, bad signature or timestamp out of tolerance."""


def parse_secret(secret: str) -> bytes:
    """Key bytes of a secret: ``whsec_<base64>`` is base64-decoded, anything else is raw UTF-8 text."""
    if not secret:
        raise ValueError("webhook secret is empty")
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise ValueError("webhook secret 'whsec_...' is not valid base64") from exc
        if not key:
            raise ValueError("webhook secret 'whsec_' has an empty key")
        return key
    return secret.encode("utf-8")


def _as_text(body: str | bytes) -> str:
    """The body as the text Standard Webhooks signs; ``ValueError`` for bytes that are not UTF-8."""
    return body.decode("utf-8") if isinstance(body, bytes) else body


def sign(secret: str, webhook_id: str, timestamp: int, body: str | bytes) -> str:
    """Standard Webhooks signature header value: ``v1,`` + base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    stamp = datetime.fromtimestamp(int(timestamp), UTC)
    return Webhook(parse_secret(secret)).sign(webhook_id, stamp, _as_text(body))


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt: id, timestamp, signature and JSON content type."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": "diamond-outbox/1",
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: str | bytes,
    tolerance_s: float = 300,
    now: datetime | float | None = None,
) -> None:
    """Check a received webhook (for receivers and tests); raise ``SignatureError`` if it is not authentic.

    Header names are matched case-insensitively. The timestamp must be within ``tolerance_s`` of ``now``
    (default: the clock) either way, which stops replays of old captured requests. The signature header may
    hold several space-separated signatures (secret rotation); one valid ``v1`` match suffices.

    The signature itself comes from ``standardwebhooks`` (``sign``). Its ``Webhook.verify`` is not used
    because it reads the wall clock with a fixed 5-minute window and lets a malformed signature entry
    escape as ``ValueError``; the window and the header checks here take ``now`` and ``tolerance_s``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if not lowered.get(h)]
    if missing:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    webhook_id = lowered["webhook-id"]
    raw_ts = lowered["webhook-timestamp"].strip()
    if not (raw_ts.isascii() and raw_ts.isdigit()):
        raise SignatureError(f"webhook-timestamp {raw_ts!r} is not unix seconds")
    timestamp = int(raw_ts)
    if now is None:
        current = time.time()
    elif isinstance(now, datetime):
        current = utc_naive(now).replace(tzinfo=UTC).timestamp()
    else:
        current = float(now)
    if timestamp < current - tolerance_s:
        raise SignatureError(
            f"webhook-timestamp too old ({current - timestamp:.0f}s > {tolerance_s}s): replay?"
        )
    if timestamp > current + tolerance_s:
        raise SignatureError(f"webhook-timestamp too far in the future ({timestamp - current:.0f}s)")
    try:
        expected = sign(secret, webhook_id, timestamp, body).encode("ascii")
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8 text (a Standard Webhooks body is)") from None
    candidates = lowered["webhook-signature"].split()
    if not any(hmac.compare_digest(c.encode("utf-8"), expected) for c in candidates):
        raise SignatureError("no matching v1 signature (wrong secret or tampered body)")


# --------------------------------------------------------------------------------------- pure delivery


def backoff_delay(failures: int, base_delay_s: float, max_delay_s: float, rng: random.Random) -> float:
    """Seconds to wait after the ``failures``-th failed attempt: exponential backoff with full jitter.

    ``uniform(0, min(max_delay_s, base_delay_s * 2 ** (failures - 1)))``: the ceiling is ``base_delay_s``
    after the first failure and doubles each time; full jitter spreads retries of many rows apart.
    """
    if failures < 1:
        raise ValueError("failures must be >= 1")
    ceiling = min(max_delay_s, base_delay_s * 2.0 ** min(failures - 1, 64))
    return rng.uniform(0.0, ceiling)


def _after_failure(
    attempts: int,
    now: datetime,
    *,
    max_attempts: int,
    base_delay_s: float,
    max_delay_s: float,
    rng: random.Random,
) -> tuple[outbox.Status, datetime]:
    """Next (status, next_attempt_at) of a row whose ``attempts``-th attempt just failed."""
    if attempts >= max_attempts:
        return "dead", now
    return "pending", now + timedelta(seconds=backoff_delay(attempts, base_delay_s, max_delay_s, rng))


def _escape_slack(text: str) -> str:
    """Slack mrkdwn control characters; unescaped ``<!channel>`` in a field would ping a whole channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(payload: Mapping[str, Any]) -> str:
    """One human line for a Slack channel: customer, tier, churn probability, value at risk, top reasons."""
    customer = payload.get("customer_id")
    tier = payload.get("tier")
    prob = payload.get("churn_probability")
    value = payload.get("value_at_risk")
    reasons = payload.get("reasons")

    head = "Retention alert"
    if customer is not None:
        head += f": customer {customer}"
    if tier is not None:
        head += f" ({tier} tier)"
    facts = []
    if prob is not None:
        facts.append(
            f"churn probability {prob:.0%}" if isinstance(prob, int | float) else f"churn probability {prob}"
        )
    if value is not None:
        facts.append(
            f"value at risk {value:,.2f}" if isinstance(value, int | float) else f"value at risk {value}"
        )
    text = head + (" - " + ", ".join(facts) if facts else "")
    if isinstance(reasons, list) and reasons:
        text += ". Top reasons: " + "; ".join(str(r) for r in reasons[:3])
    if customer is None and not facts:
        text += ": " + outbox.encode_payload(payload)[:500]
    return _escape_slack(text)


def render_body(payload_json: str, fmt: Format) -> bytes:
    """The HTTP body for a stored payload: the JSON itself, or ``{"text": ...}`` for Slack webhooks."""
    if fmt == "json":
        return payload_json.encode("utf-8")
    if fmt == "slack":
        return json.dumps({"text": slack_text(json.loads(payload_json))}, ensure_ascii=False).encode("utf-8")
    raise ValueError(f"unknown webhook format {fmt!r}")


# ---------------------------------------------------------------------------------------- delivery I/O


@dataclass(frozen=True)
class Endpoint:
    """One webhook receiver. ``name`` is the ``destination`` rows are enqueued for."""

    name: str
    url: str
    secret: str = field(repr=False)
    format: Format = "json"
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.format not in ("json", "slack"):
            raise ValueError(f"endpoint {self.name!r}: format must be 'json' or 'slack', got {self.format!r}")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {self.name!r}: url must be http(s)://, got {self.url!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"endpoint {self.name!r}: timeout_s must be > 0")
        parse_secret(self.secret)


@dataclass(frozen=True)
class DeliveryReport:
    """What one ``deliver_due`` run did: rows delivered, scheduled for retry, and moved to dead letters."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0


def http_post(url: str, headers: dict[str, str], body: bytes, timeout: float) -> int:
    """POST with httpx (no redirects followed) and return the status; raises on timeout/connection error."""
    return httpx.post(url, content=body, headers=headers, timeout=timeout, follow_redirects=False).status_code


def _short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]


def deliver_due(
    engine: Engine,
    endpoints: Mapping[str, Endpoint],
    now: datetime | None = None,
    limit: int = 100,
    max_attempts: int = 8,
    base_delay_s: float = 2.0,
    max_delay_s: float = 3600.0,
    rng: random.Random | None = None,
    post: PostFn | None = None,
    *,
    lease_s: float = 300.0,
) -> DeliveryReport:
    """Send up to ``limit`` due pending rows whose destination is in ``endpoints``; commit each outcome.

    A row is due when pending and ``next_attempt_at <= now``. Each one is claimed (attempts + 1 and
    ``next_attempt_at`` pushed ``lease_s + timeout_s`` ahead, committed), POSTed with fresh Standard Webhooks
    headers, then marked delivered (2xx) or failed (any other status or exception): retried after
    ``backoff_delay`` or, at ``max_attempts``, dead. A crash between POST and outcome commit leaves the
    claim, so the row is re-sent with the same webhook-id after the lease: at-least-once delivery.

    ``now`` drives scheduling only; signatures use the real clock since receivers check them against
    theirs. Rows for destinations not in ``endpoints`` are left untouched (still counted as pending).
    """
    if max_attempts < 1 or base_delay_s < 0 or max_delay_s < 0 or limit < 1:
        raise ValueError("need max_attempts >= 1, limit >= 1 and non-negative delays")
    if not endpoints:
        return DeliveryReport()
    at = utc_naive(now) if now is not None else utc_now()
    started = time.monotonic()

    def clock() -> datetime:  # `now` plus the time this run has taken: leases and backoff count from here
        return at + timedelta(seconds=time.monotonic() - started)

    rng = rng if rng is not None else random.Random()
    client = httpx.Client(follow_redirects=False) if post is None else None  # one connection pool per run

    def pooled(url: str, headers: dict[str, str], body: bytes, timeout: float) -> int:
        assert client is not None
        return client.post(url, content=body, headers=headers, timeout=timeout).status_code

    send = post if post is not None else pooled

    try:
        return _deliver_rows(
            engine, endpoints, at, clock, limit, max_attempts, base_delay_s, max_delay_s, rng, send, lease_s
        )
    finally:
        if client is not None:
            client.close()


def deliver_all(
    engine: Engine, endpoints: Mapping[str, Endpoint], retry: WebhookConfig | None = None
) -> DeliveryReport:
    """Deliver everything due now, batch after batch; what fails waits for its backoff (the next call).
    `retry`: serving.yaml's `webhooks` (max_attempts, base_delay_s, max_delay_s, lease_s); None: defaults."""
    retry = retry or WebhookConfig()
    total = DeliveryReport(0, 0, 0)
    while True:
        r = deliver_due(
            engine,
            endpoints,
            max_attempts=retry.max_attempts,
            base_delay_s=retry.base_delay_s,
            max_delay_s=retry.max_delay_s,
            lease_s=retry.lease_s,
        )
        total = DeliveryReport(total.delivered + r.delivered, total.retried + r.retried, total.dead + r.dead)
        if r.delivered + r.retried + r.dead == 0:
            return total


def _deliver_rows(
    engine: Engine,
    endpoints: Mapping[str, Endpoint],
    at: datetime,
    clock: Callable[[], datetime],
    limit: int,
    max_attempts: int,
    base_delay_s: float,
    max_delay_s: float,
    rng: random.Random,
    post: PostFn,
    lease_s: float,
) -> DeliveryReport:
    delivered = retried = dead = 0
    rows = outbox.due(engine, list(endpoints), at, limit)
    for webhook_id, destination, payload_json, seen_attempts in rows:
        endpoint = endpoints[destination]
        attempts = seen_attempts + 1
        claim_at = clock()
        # Claim: compare-and-set on attempts so a concurrent worker cannot send the same attempt twice.
        lease_until = claim_at + timedelta(seconds=lease_s + endpoint.timeout_s)
        if not outbox.claim(engine, webhook_id, seen_attempts, claim_at, lease_until):
            continue  # another worker got it first

        error: str | None
        try:
            body = render_body(payload_json, endpoint.format)
            headers = signed_headers(endpoint.secret, webhook_id, int(time.time()), body)
            status = post(endpoint.url, headers, body, endpoint.timeout_s)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except Exception as exc:  # timeout, refused connection, bad payload...: all retryable
            error = _short_error(exc)

        if error is None:
            outbox.mark_delivered(engine, webhook_id, clock())
            delivered += 1
            continue

        new_status, next_at = _after_failure(
            attempts,
            clock(),
            max_attempts=max_attempts,
            base_delay_s=base_delay_s,
            max_delay_s=max_delay_s,
            rng=rng,
        )
        outbox.mark_failed(engine, webhook_id, attempts, new_status, next_at, error)
        if new_status == "dead":
            dead += 1
            log.warning(
                "webhook %s to %s dead after %d attempts: %s", webhook_id, destination, attempts, error
            )
        else:
            retried += 1
            log.info(
                "webhook %s to %s attempt %d failed (%s); retry at %s",
                webhook_id,
                destination,
                attempts,
                error,
                next_at.isoformat(),
            )
    return DeliveryReport(delivered=delivered, retried=retried, dead=dead)
