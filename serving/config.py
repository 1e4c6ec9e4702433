"""Serving configuration: `serving.yaml` (shared, in git) plus the environment for secrets and per-machine
settings. Nothing here runs at import time."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from features.config import ConfigError, read_settings
from serving.api import MAX_CUSTOMERS

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "serving.yaml"
KEYS_ENV, KEY_FILE_ENV, STORE_ENV, CONFIG_ENV, SESSION_ENV = (
    "DIAMOND_API_KEYS",
    "DIAMOND_API_KEY_FILE",
    "DIAMOND_STORE_URL",
    "DIAMOND_SERVING_CONFIG",
    "DIAMOND_SESSION_SECRET",
)


@dataclass(frozen=True)
class ServingConfig:
    host: str = "127.0.0.1"
    port: int = 3000
    model_alias: str = "champion"
    poll_s: float = 30.0
    max_customers: int = 1000
    max_body_mb: float = 16.0  # larger request bodies are refused with 413 before any parsing
    reasons: int = 3
    cold_start_min_purchase_days: int = 2
    store_url: str = "sqlite:///.diamond/diamond.db"
    scores_dir: str = ".diamond/scores"
    tiers: dict[str, Any] = field(default_factory=dict)  # hysteresis (serving.tiers.TierConfig)
    alerts: dict[str, Any] = field(default_factory=dict)  # rules and playbooks (serving.alerts.AlertConfig)
    webhooks: dict[str, Any] = field(default_factory=dict)  # endpoints and retries (endpoints() below)
    drift: dict[str, Any] = field(default_factory=dict)  # drift watch (serving.monitoring.DriftConfig)

    def endpoints(self) -> dict[str, Any]:
        """The webhook endpoints, secrets and secret URLs read from the environment variables named here."""
        from serving.outbox import Endpoint

        out = {}
        for raw in self.webhooks.get("endpoints") or []:
            name = raw.get("name")
            url = raw.get("url") or os.environ.get(raw.get("url_env", ""), "")
            secret = os.environ.get(raw.get("secret_env", ""), "")
            if not name or not url:
                raise ConfigError(
                    f"webhooks.endpoints: {name or '?'}: needs a name and a url (or url_env set)"
                )
            if not secret:
                raise ConfigError(f"webhooks.endpoints.{name}: set the secret in ${raw.get('secret_env')}")
            out[name] = Endpoint(
                name, url, secret, raw.get("format", "json"), float(raw.get("timeout_s", 10))
            )
        return out

    @classmethod
    def load(cls, path: str | Path | None = None) -> ServingConfig:
        """serving.yaml (or `path`, or $DIAMOND_SERVING_CONFIG), then $DIAMOND_STORE_URL; relative SQLite
        paths and the scores folder resolve against the working directory."""
        file = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_PATH)
        raw = read_settings(file, bool(path), (f.name for f in fields(cls)), "serving config") or {}
        raw["store_url"] = os.environ.get(STORE_ENV) or raw.get("store_url", cls.store_url)
        url = raw["store_url"]
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            raw["store_url"] = f"sqlite:///{Path(url.removeprefix('sqlite:///')).resolve()}"
        raw["scores_dir"] = str(Path(raw.get("scores_dir", cls.scores_dir)).resolve())
        hooks = set(raw.get("webhooks") or {}) - {
            "max_attempts",
            "base_delay_s",
            "max_delay_s",
            "lease_s",
            "endpoints",
        }
        if hooks:
            raise ConfigError(f"{file}: unknown webhooks setting(s) {sorted(hooks)}")
        config = cls(**raw)
        for name in ("port", "max_customers", "reasons"):
            if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
                raise ConfigError(f"{file}: {name} must be a positive whole number")
        if config.max_customers > MAX_CUSTOMERS:
            raise ConfigError(f"{file}: max_customers must be at most {MAX_CUSTOMERS} (the documented limit)")
        if not isinstance(config.max_body_mb, int | float) or config.max_body_mb <= 0:
            raise ConfigError(f"{file}: max_body_mb must be a positive number of megabytes")
        return config


def api_key_hashes() -> frozenset[str]:
    """sha256 hex digests of the accepted API keys: $DIAMOND_API_KEYS (raw keys, hashed here and never kept)
    and/or the digests in $DIAMOND_API_KEY_FILE. Empty: no key is accepted."""
    hashes = {hash_key(k.strip()) for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()}
    if file := os.environ.get(KEY_FILE_ENV):
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"{KEY_FILE_ENV}={file}: cannot read the key file: {exc.strerror}") from exc
        for n, line in enumerate(lines, 1):
            digest = line.split("#", 1)[0].strip().lower()
            if not digest:
                continue
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"{file}: line {n}: expected a sha256 hex digest (64 hex characters)")
            hashes.add(digest)
    return frozenset(hashes)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def matching_hash(key: str, hashes: frozenset[str]) -> str | None:
    """The known digest `key` hashes to, or None. Every digest is compared in constant time, no early exit:
    the time taken says nothing about how close a wrong key came."""
    digest = hash_key(key)
    found = None
    for known in sorted(hashes):
        if hmac.compare_digest(digest, known):
            found = known
    return found


_PROCESS_SECRET: list[bytes] = []


def session_secret() -> bytes:
    """The key that signs dashboard sessions: $DIAMOND_SESSION_SECRET (`diamond serve` sets a fresh random
    one for its workers when unset), else a random one for this process. Restarting without the variable
    set logs everyone out, which is the safe default."""
    if value := os.environ.get(SESSION_ENV, "").strip():
        return hashlib.sha256(value.encode("utf-8")).digest()
    if not _PROCESS_SECRET:
        _PROCESS_SECRET.append(secrets.token_bytes(32))
    return _PROCESS_SECRET[0]
