"""Who may call what: API keys with a name and a role, the role each route needs, and the throttle on
failed sign-ins. Pure rules and file parsing; serving.middleware enforces them on every request.

Roles, each including the ones before it:

    viewer  read scores (POST /score), the model (GET /model, /docs.json) and every dashboard page
    agent   also act on alerts (acknowledge, snooze, resolve)
    admin   also erase customers (dashboard, `diamond customers forget`), and the CLI's admin work

Keys. `$DIAMOND_API_KEY_FILE` holds one key a line, as `NAME ROLE DIGEST` (the digest: sha256 hex of the key,
optionally written `sha256:HEX`; `diamond keys add` writes such lines) and `#` comments. Older files hold a
bare digest a line, and `$DIAMOND_API_KEYS` raw keys separated by commas: both keep working, each such key
as role LEGACY_ROLE ("agent": every power a key had before roles existed, and nothing new, so an upgrade
neither locks a team out of the dashboard nor quietly hands erasure to every old key), named `key-` and the
first 8 hex digits of its digest (not enough to find the key). The key file is re-read when it changes
(its size, mtime or inode), so removing a line ends that key's API access and its dashboard sessions with
the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from core.config import ConfigError

Role = Literal["viewer", "agent", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)  # weakest first
LEGACY_ROLE: Role = "agent"
KEYS_ENV, KEY_FILE_ENV, CLI_KEY_ENV = "DIAMOND_API_KEYS", "DIAMOND_API_KEY_FILE", "DIAMOND_API_KEY"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")


def hash_key(key: str) -> str:
    """The digest a key is stored and compared as: sha256 hex (keys are long random tokens, so a fast hash is
    enough; `diamond keys add` makes 32 random bytes)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(digest: str) -> str:
    """A short public id of a key digest, kept in sessions (not enough to recover the digest or the key)."""
    return hashlib.sha256(f"diamond-session-key:{digest}".encode()).hexdigest()[:16]


def at_least(role: str, needed: Role) -> bool:
    """True when `role` includes `needed` (admin > agent > viewer); an unknown role includes nothing."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: who it is (shown in the dashboard and the audit table), its role, its digest."""

    name: str
    role: Role
    digest: str

    @property
    def id(self) -> str:
        return key_id(self.digest)


def legacy_name(digest: str) -> str:
    return f"key-{digest[:8]}"


def parse_key_file(text: str, where: str) -> list[ApiKey]:
    """The keys of a key file's text; ConfigError naming `where`, the line and the problem. Names and
    digests must be unique."""
    keys: list[ApiKey] = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        name: str | None
        role: str
        if len(fields) == 1:
            name, role, digest = None, LEGACY_ROLE, fields[0]
        elif len(fields) == 3:
            name, role, digest = fields
        else:
            raise ConfigError(f"{where}: line {n}: expected NAME ROLE SHA256 (or a bare sha256 digest)")
        digest = digest.lower().removeprefix("sha256:")
        if not _HEX.fullmatch(digest):
            raise ConfigError(f"{where}: line {n}: expected a sha256 hex digest (64 hex characters)")
        if role not in ROLES:
            raise ConfigError(f"{where}: line {n}: role {role!r} is not one of {', '.join(ROLES)}")
        if name is not None and not _NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: line {n}: name {name[:70]!r}: 1-64 letters, digits, '.', '_', '@' or '-'"
            )
        keys.append(ApiKey(name or legacy_name(digest), role, digest))
        _unique(keys, f"{where}: line {n}")
    return keys


def env_keys(raw: str) -> list[ApiKey]:
    """$DIAMOND_API_KEYS: raw keys separated by commas, each role LEGACY_ROLE (hashed here, never kept)."""
    return [
        ApiKey(legacy_name(d), LEGACY_ROLE, d)
        for d in (hash_key(k.strip()) for k in raw.split(",") if k.strip())
    ]


def _unique(keys: list[ApiKey], where: str) -> None:
    last = keys[-1]
    for other in keys[:-1]:
        if other.digest == last.digest:
            raise ConfigError(f"{where}: the same key is listed twice ({other.name} and {last.name})")
        if other.name == last.name:
            raise ConfigError(f"{where}: the name {last.name!r} is used twice")


class KeyRing:
    """The accepted keys: $DIAMOND_API_KEYS and the key file, which is re-read whenever it changes. A file
    that becomes unreadable or invalid while serving accepts no key from it until fixed (fail closed: a
    half-edited file never keeps a removed key alive); the error is kept in `error`."""

    def __init__(self, env: str = "", file: str | None = None) -> None:
        self.file = file
        self._env = env_keys(env)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[str, ApiKey] = {}
        self.error: str | None = None
        self._load(strict=True)

    @classmethod
    def from_env(cls) -> KeyRing:
        """From $DIAMOND_API_KEYS and $DIAMOND_API_KEY_FILE; ConfigError for a bad file."""
        return cls(os.environ.get(KEYS_ENV, ""), os.environ.get(KEY_FILE_ENV) or None)

    def _load(self, strict: bool = False) -> None:
        keys = list(self._env)
        stamp = None
        if self.file:
            try:
                st = os.stat(self.file)
                stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
                if stamp == self._stamp:
                    return
                keys += parse_key_file(Path(self.file).read_text(encoding="utf-8"), self.file)
                for i in range(len(self._env), len(keys)):
                    _unique(keys[: i + 1], self.file)
                self.error = None
            except (OSError, ConfigError) as exc:
                message = (
                    f"{KEY_FILE_ENV}={self.file}: cannot read the key file: {exc.strerror}"
                    if isinstance(exc, OSError)
                    else str(exc)
                )
                if strict:
                    raise ConfigError(message) from None
                self.error, keys = message, list(self._env)
        self._stamp = stamp
        self._keys = {k.digest: k for k in keys}

    def accepted(self) -> list[ApiKey]:
        """Every accepted key, the file re-read if it changed."""
        with self._lock:
            if self.file:
                self._load()
            return list(self._keys.values())

    def match(self, key: str) -> ApiKey | None:
        """The accepted key `key` is, or None. Every digest is compared in constant time, no early exit: the
        time taken says nothing about how close a wrong key came."""
        digest, found = hash_key(key), None
        for known in self.accepted():
            if hmac.compare_digest(digest, known.digest):
                found = known
        return found

    def by_id(self, kid: str) -> ApiKey | None:
        """The accepted key whose public id is `kid` (a session's key), or None once it is removed."""
        return next((k for k in self.accepted() if hmac.compare_digest(k.id, kid)), None)


def add_key(file: Path, name: str, role: str) -> str:
    """Append a new random key named `name` with `role` to the key file (created, readable by its owner
    only, if missing) and return the key, which is stored nowhere. ConfigError for a bad or taken name."""
    key = "dia_" + secrets.token_urlsafe(32)
    text = file.read_text(encoding="utf-8") if file.exists() else ""
    line = f"{name} {role} sha256:{hash_key(key)}\n"
    updated = text + ("" if not text or text.endswith("\n") else "\n") + line
    parse_key_file(updated, str(file))  # the name, the role, uniqueness
    _replace(file, updated)
    return key


def remove_key(file: Path, name: str) -> None:
    """Remove the key named `name` from the key file (legacy lines are named key-<digest prefix>)."""
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if [k.name for k in parse_key_file(line, str(file))] != [name]]
    if len(kept) == len(lines):
        raise ConfigError(f"{file}: no key named {name!r}")
    _replace(file, "".join(kept))


def _replace(file: Path, text: str) -> None:
    """Write atomically (a reader sees the old file or the new one), owner-only on creation."""
    tmp = file.with_name(f".{file.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    if file.exists():
        os.chmod(tmp, file.stat().st_mode & 0o777)
    os.replace(tmp, file)


# --- routes -------------------------------------------------------------------------------------------------

OPEN = "open"
SESSION = "session"  # any signed-in person (sign out)
API_ROUTES: dict[tuple[str, str], Role] = {
    ("POST", "/score"): "viewer",
    ("GET", "/model"): "viewer",
    ("GET", "/docs.json"): "viewer",
    ("GET", "/"): "viewer",  # BentoML's page of the API documentation (Swagger UI)...
}
API_PREFIXES: tuple[tuple[str, str, Role], ...] = (("GET", "/static_content/", "viewer"),)  # its assets
DASHBOARD_ROUTES: tuple[tuple[str, re.Pattern[str], Role | str], ...] = (
    ("GET", re.compile(r"/ui/login"), OPEN),
    ("POST", re.compile(r"/ui/login"), OPEN),
    ("GET", re.compile(r"/ui/static/.*"), OPEN),
    ("POST", re.compile(r"/ui/logout"), SESSION),
    ("GET", re.compile(r"/ui/"), "viewer"),
    ("GET", re.compile(r"/ui/overview"), "viewer"),
    ("GET", re.compile(r"/ui/effect"), "viewer"),  # aggregates only: no control customer is named
    ("GET", re.compile(r"/ui/queue"), "viewer"),  # queued alerts: as visible as the alert list
    ("GET", re.compile(r"/ui/customers/.+"), "viewer"),
    ("POST", re.compile(r"/ui/alerts/[0-9]+/(ack|snooze|resolve)"), "agent"),
    ("POST", re.compile(r"/ui/customers/.+/forget"), "admin"),
)


def required(method: str, path: str) -> Role | str:
    """What a request needs: OPEN, SESSION or a role. Anything not listed needs admin (a route added
    without a rule is closed, not open); HEAD is treated as GET. The health probes are not asked about."""
    method = "GET" if method == "HEAD" else method
    if path.startswith("/ui/"):
        needs = [need for m, pattern, need in DASHBOARD_ROUTES if m == method and pattern.fullmatch(path)]
        return needs[-1] if needs else "admin"
    for m, prefix, role in API_PREFIXES:
        if m == method and path.startswith(prefix) and ".." not in path:
            return role
    return API_ROUTES.get((method, path), "admin")


# --- throttling ---------------------------------------------------------------------------------------------


class Throttle:
    """Failed sign-ins (a wrong bearer key or a wrong key at the dashboard's login) per client address:
    after `failures` within `window_s` seconds, that client is refused, whatever it sends, until the oldest
    failure leaves the window. Per process (each worker counts its own); at most `clients` addresses are
    remembered, the least recently failing forgotten first."""

    def __init__(self, failures: int, window_s: float, clients: int = 10_000) -> None:
        self.failures, self.window_s, self.clients = failures, window_s, clients
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, client: str, now: float | None = None) -> float:
        """Seconds before `client` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._seen.get(client)
            if not times:
                return 0.0
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) < self.failures:
                return 0.0
            return max(times[0] + self.window_s - now, 0.001)

    def fail(self, client: str, now: float | None = None) -> None:
        """Count one failure of `client`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._seen.pop(client, None) or deque()
            times.append(now)
            while len(times) > self.failures:
                times.popleft()
            self._seen[client] = times
            while len(self._seen) > self.clients:
                self._seen.popitem(last=False)
