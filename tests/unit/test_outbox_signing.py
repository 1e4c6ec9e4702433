"""Webhook signatures made through ``standardwebhooks`` interoperate with the receivers already deployed.

Until issue 14 the outbox signed and verified with hand-written HMAC code; receivers built from it (or
from its docs) are in the field. That code is frozen below, verbatim but for names, as the reference:
signatures made by ``serving.delivery`` must verify with it, signatures it makes must verify with
``serving.delivery``, and tampering with the body, the id or the timestamp must fail on both sides.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.delivery import SignatureError, parse_secret, sign, signed_headers, verify

# --- the reference: serving/outbox.py signing as of 1e5e75a, frozen -----------------------------------------


class RefSignatureError(ValueError):
    pass


def ref_parse_secret(secret: str) -> bytes:
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


def _ref_as_bytes(body: str | bytes) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def ref_sign(secret: str, webhook_id: str, timestamp: int, body: str | bytes) -> str:
    signed = f"{webhook_id}.{int(timestamp)}.".encode() + _ref_as_bytes(body)
    digest = hmac.new(ref_parse_secret(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def ref_verify(
    secret: str,
    headers: Mapping[str, str],
    body: str | bytes,
    tolerance_s: float = 300,
    now: datetime | float | None = None,
) -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if not lowered.get(h)]
    if missing:
        raise RefSignatureError(f"missing header(s): {', '.join(missing)}")
    webhook_id = lowered["webhook-id"]
    raw_ts = lowered["webhook-timestamp"].strip()
    if not raw_ts.isdigit():
        raise RefSignatureError(f"webhook-timestamp {raw_ts!r} is not unix seconds")
    timestamp = int(raw_ts)
    if now is None:
        current = time.time()
    elif isinstance(now, datetime):
        current = now.astimezone(UTC).timestamp()
    else:
        current = float(now)
    if timestamp < current - tolerance_s:
        raise RefSignatureError(
            f"webhook-timestamp too old ({current - timestamp:.0f}s > {tolerance_s}s): replay?"
        )
    if timestamp > current + tolerance_s:
        raise RefSignatureError(f"webhook-timestamp too far in the future ({timestamp - current:.0f}s)")
    expected = ref_sign(secret, webhook_id, timestamp, body).encode("ascii")
    for candidate in lowered["webhook-signature"].split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode("utf-8"), expected):
            return
    raise RefSignatureError("no matching v1 signature (wrong secret or tampered body)")


# --- inputs -------------------------------------------------------------------------------------------------

SECRETS = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # the Standard Webhooks test vector's
    "whsec_" + base64.b64encode(b"diamond-outbox-test-secret-32byt").decode(),
    "a raw text secret, not base64",
]
ids = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-:", min_size=1, max_size=80
)
timestamps = st.integers(min_value=0, max_value=2**33)  # 1970 .. year 2242
bodies = st.text(max_size=300) | st.binary(max_size=0)  # any text (JSON or not), and the empty body
secrets_ = st.sampled_from(SECRETS) | st.binary(min_size=1, max_size=64).map(
    lambda key: "whsec_" + base64.b64encode(key).decode()
)


def _headers(webhook_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def _both_refuse(secret: str, headers: dict[str, str], body: str | bytes, now: float) -> None:
    with pytest.raises(SignatureError):
        verify(secret, headers, body, now=now)
    with pytest.raises(RefSignatureError):
        ref_verify(secret, headers, body, now=now)


# --- both directions ----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(secret=secrets_, webhook_id=ids, timestamp=timestamps, body=bodies, skew=st.integers(-300, 300))
def test_new_and_reference_signatures_are_the_same_and_verify_both_ways(
    secret: str, webhook_id: str, timestamp: int, body: str | bytes, skew: int
) -> None:
    new, ref = sign(secret, webhook_id, timestamp, body), ref_sign(secret, webhook_id, timestamp, body)
    assert new == ref and new.startswith("v1,")
    now = timestamp + skew  # anywhere inside the tolerance window
    as_bytes = body.encode("utf-8") if isinstance(body, str) else body
    ref_verify(
        secret, _headers(webhook_id, timestamp, new), as_bytes, now=now
    )  # (a) new -> today's receivers
    verify(secret, _headers(webhook_id, timestamp, ref), as_bytes, now=now)  # (b) today's senders -> new
    verify(secret, _headers(webhook_id, timestamp, ref), body, now=now)  # str bodies too


@settings(max_examples=200, deadline=None)
@given(secret=secrets_, webhook_id=ids, timestamp=timestamps, body=st.text(min_size=1, max_size=300))
def test_tampered_body_id_or_timestamp_fails_on_both_sides(
    secret: str, webhook_id: str, timestamp: int, body: str
) -> None:
    for signature in (
        sign(secret, webhook_id, timestamp, body),
        ref_sign(secret, webhook_id, timestamp, body),
    ):
        headers = _headers(webhook_id, timestamp, signature)
        _both_refuse(secret, headers, body + " ", timestamp)  # body
        _both_refuse(secret, headers, body[:-1], timestamp)
        _both_refuse(secret, {**headers, "webhook-id": webhook_id + "x"}, body, timestamp)  # id
        _both_refuse(
            secret, {**headers, "webhook-timestamp": str(timestamp + 1)}, body, timestamp
        )  # timestamp
        _both_refuse(secret, headers, body, timestamp + 301)  # replayed too late
        _both_refuse(secret, headers, body, timestamp - 301)  # from the future
        other = "whsec_" + base64.b64encode(parse_secret(secret) + b"!").decode()
        _both_refuse(other, headers, body, timestamp)  # another key


def test_deliveries_verify_with_the_reference_receiver_on_fixed_cases() -> None:
    """The exact headers the outbox sends, for a few hand-picked ids, times and bodies."""
    cases = [
        ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'),
        ("alert_a-17_v1", 1_772_355_600, b'{"customer_id":"C-0042","tier":"gold"}'),
        ("alert:x_y-z", 0, '{"note":"caf\u00e9 \u2014 \U0001f48e"}'.encode()),  # non-ASCII JSON
        ("a", 9_999_999_999, b""),
    ]
    for secret in SECRETS:
        for webhook_id, timestamp, body in cases:
            headers = signed_headers(secret, webhook_id, timestamp, body)
            assert headers["webhook-signature"] == ref_sign(secret, webhook_id, timestamp, body)
            ref_verify(secret, headers, body, now=timestamp)
            verify(secret, headers, body, now=timestamp)
            with pytest.raises(RefSignatureError, match="no matching"):
                ref_verify(secret, headers, body + b" ", now=timestamp)
            with pytest.raises(SignatureError, match="no matching"):
                verify(secret, headers, body + b" ", now=timestamp)


def test_secret_format_and_header_errors_are_unchanged() -> None:
    for good in SECRETS:
        assert parse_secret(good) == ref_parse_secret(good)
    for bad, message in (("", "empty"), ("whsec_", "empty key"), ("whsec_!!notbase64", "not valid base64")):
        with pytest.raises(ValueError, match=message):
            parse_secret(bad)
        with pytest.raises(ValueError, match=message):
            ref_parse_secret(bad)
    secret, now = SECRETS[1], 1_700_000_000
    good = _headers("msg_1", now, sign(secret, "msg_1", now, b"{}"))
    broken = [
        {**good, "webhook-signature": ""},
        {**good, "webhook-timestamp": "yesterday"},
        {**good, "webhook-signature": "garbage v1 v1,,, v2,abc"},  # malformed entries: refused, not crashed
        {k: v for k, v in good.items() if k != "webhook-id"},
    ]
    for headers in broken:
        with pytest.raises(SignatureError) as new:
            verify(secret, headers, b"{}", now=now)
        with pytest.raises(RefSignatureError) as ref:
            ref_verify(secret, headers, b"{}", now=now)
        assert str(new.value) == str(ref.value)  # the same message a receiver logs
    # a rotation header: any one valid v1 signature passes, on both sides
    rotated = {**good, "webhook-signature": f"v1,bm9wZQ== v2,xyz {good['webhook-signature']}"}
    verify(secret, rotated, b"{}", now=now)
    ref_verify(secret, rotated, b"{}", now=now)


def test_a_body_that_is_not_utf8_is_refused_with_a_signature_error() -> None:
    """Standard Webhooks signs text; the outbox only sends UTF-8 JSON. Such a body is refused, not a crash."""
    secret, now = SECRETS[1], 1_700_000_000
    body = b"\xff\xfe not utf-8"
    headers = _headers("msg_1", now, ref_sign(secret, "msg_1", now, body))
    with pytest.raises(SignatureError, match="not UTF-8"):
        verify(secret, headers, body, now=now)
    with pytest.raises(SignatureError, match="unix seconds"):  # non-ASCII digits are not unix seconds
        verify(secret, {**headers, "webhook-timestamp": "\u00b2"}, b"{}", now=now)
