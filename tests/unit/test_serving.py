"""The service's configuration alone: API keys from a file of hashes. The running service is tested in
tests/e2e/test_serving.py."""

from __future__ import annotations

from pathlib import Path

import pytest


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
