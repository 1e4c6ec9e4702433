"""Webhook signing and verification (Standard Webhooks) and the Slack message text: pure functions. Delivery
through the outbox is tested in tests/integration/test_outbox.py."""

from __future__ import annotations

import base64
import json
import time

import pytest

from serving.delivery import SignatureError, sign, slack_text, verify
from tests.helpers.webhooks import ALERT
from tests.helpers.webhooks import WEBHOOK_SECRET as SECRET

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


def test_slack_text_handles_missing_fields_and_escapes_mentions() -> None:
    assert slack_text({"customer_id": "<!channel>", "churn_probability": 0.5}) == (
        "Retention alert: customer &lt;!channel&gt; - churn probability 50%"
    )
    assert (
        slack_text({"tier": "bronze", "value_at_risk": 10})
        == "Retention alert (bronze tier) - value at risk 10.00"
    )
    assert slack_text({"other": 1}) == 'Retention alert: {"other":1}'
