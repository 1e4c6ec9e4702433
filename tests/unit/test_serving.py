"""The service's configuration alone: API keys from a file of hashes. The running service is tested in
tests/e2e/test_serving.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.api import Customer, ScoreRequest


def test_api_keys_from_a_file_of_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import ConfigError
    from serving.access import KeyRing, hash_key

    keys = tmp_path / "keys"
    keys.write_text(f"# team keys\n{hash_key('alpha')}\n\n{hash_key('beta')}  # ops\n", encoding="utf-8")
    monkeypatch.delenv("DIAMOND_API_KEYS", raising=False)
    monkeypatch.setenv("DIAMOND_API_KEY_FILE", str(keys))
    assert {k.digest for k in KeyRing.from_env().accepted()} == {hash_key("alpha"), hash_key("beta")}
    keys.write_text("alpha\n", encoding="utf-8")  # a raw key where a hash belongs: refused, with the line
    with pytest.raises(ConfigError, match="line 1: expected a sha256 hex digest"):
        KeyRing.from_env()


@pytest.mark.parametrize("name", ["customer_id", " customer_id", "__row", "__raw_amount"])
def test_reserved_attribute_names_are_refused(name: str) -> None:
    """An attribute named customer_id once overwrote the id (and could swap two customers' attributes)."""
    with pytest.raises(ValidationError, match="is reserved"):
        Customer.model_validate(
            {
                "customer_id": "a",
                "transactions": [{"timestamp": "2024-01-01", "amount": 1.0}],
                "attributes": {name: "b"},
            }
        )


def test_inline_timestamps_keep_the_text_sent() -> None:
    """The history contract reads inline timestamps as it reads a file's text (offset rules included), so
    the API keeps them as sent, after checking they are ISO 8601 times; epoch numbers are refused."""
    sent = ["2024-06-30", "2024-06-30T14:05:00+05:00", "2024-06-30T09:05:00Z"]
    customer = Customer.model_validate(
        {"customer_id": "a", "transactions": [{"timestamp": t, "amount": 1.0} for t in sent]}
    )
    assert [t.timestamp for t in customer.transactions or []] == sent
    for bad in ("1700000000", "yesterday", 1700000000):
        with pytest.raises(ValidationError, match="timestamp"):
            Customer.model_validate({"customer_id": "a", "transactions": [{"timestamp": bad, "amount": 1.0}]})


def test_duplicate_ids_are_named() -> None:
    customers = [{"customer_id": str(i % 999)} for i in range(1000)]
    with pytest.raises(ValidationError, match=r"duplicate customer_id \['0'\]"):
        ScoreRequest.model_validate({"customers": customers})
