"""The scoring service's HTTP guard as Starlette middleware; `guard` adds them, outermost first:

- `ApiKeys`: Starlette's AuthenticationMiddleware with a bearer-key backend. Every route but the health
  probes needs `Authorization: Bearer KEY` (401 otherwise) whose role is enough for the route
  (serving.access.required; 403 otherwise); under /ui the dashboard's session cookie admits too, and a
  browser with neither is sent to the dashboard's login page (303). Wrong keys are throttled per address
  (429) and logged.
- `ScoreBody`: POST /score takes JSON only (415) and at most `max_body_mb` (413), declared or counted as
  the body streams in, so an oversized body is refused before anything parses it.
- `ErrorBodies`: POST /score's error answers (BentoML writes a 1-element array, pydantic a list of dicts)
  rewritten as the documented object (serving.api.error_body).
- `Routes`: a few Starlette routes answered ahead of BentoML's router. BentoML puts its own probes
  (/livez, /healthz, /readyz) before every mounted app (_bentoml_impl/server/app.py), so the service's
  JSON GET /readyz could never be reached as a mounted route.

Plain ASGI classes rather than BaseHTTPMiddleware: bodies stream through untouched except /score's, which is
read up to its cap. Starlette's own RequestBodyLimitMiddleware answers a fixed plain-text 413 from inside
the endpoint's body read, after BentoML's handler has started; ScoreBody answers before BentoML runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
)
from starlette.concurrency import run_in_threadpool
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import access, dashboard, refusals, traffic, webauth
from serving.api import OPEN_PATHS, error_body
from serving.config import ServingConfig

if TYPE_CHECKING:
    import bentoml

KEY_ERROR = "missing or wrong API key (Authorization: Bearer KEY)"
FEWER = "send fewer customers"


def guard(
    service: bentoml.Service[Any], routes: Sequence[BaseRoute], workers: Callable[[], int] = lambda: 1
) -> None:
    """Add the middleware below to `service`, outermost first: nothing runs without a key, /score's limits
    come before BentoML parses the body, and `routes` are answered ahead of BentoML's router; with
    `workers()` > 1, serving.traffic.Rebalance spreads a client's connections over the workers."""
    service.add_asgi_middleware(refusals.LogRefusals)  # outermost: every 4xx, one line, no request values
    refusals.quiet_client_errors()  # and not BentoML's traceback of a refused body, values and all
    service.add_asgi_middleware(ApiKeys)
    service.add_asgi_middleware(ScoreBody)
    service.add_asgi_middleware(ErrorBodies)
    service.add_asgi_middleware(Routes, routes=routes)
    service.add_asgi_middleware(traffic.Rebalance, workers=workers)


class Json(JSONResponse):
    """JSON as the service has always written it: `json.dumps` defaults, anything unusual as text."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str).encode()


class Principal(SimpleUser):
    """Who a request comes from: an accepted key's name and role, and the dashboard session if it came with
    one (serving.webauth); set as `request.user` for the routes."""

    def __init__(
        self, name: str, role: access.Role, key_id: str, session: webauth.Session | None = None
    ) -> None:
        super().__init__(name)
        self.role = role
        self.key_id = key_id
        self.session = session

    @classmethod
    def of_key(cls, key: access.ApiKey) -> Principal:
        return cls(key.name, key.role, key.id)

    @classmethod
    def of_session(cls, session: webauth.Session) -> Principal:
        return cls(session.name, session.role, session.key_id, session)


class Throttled(AuthenticationError):
    """Too many wrong keys from this address lately: 429 with Retry-After."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"too many wrong keys from your address: retry in {math.ceil(wait_s)} s")
        self.wait_s = wait_s


class Forbidden(AuthenticationError):
    """A known key or session whose role is too weak for the route: 403."""


class BearerKeys(AuthenticationBackend):
    """Who may pass, and with what role (serving.access.required): anyone to the health probes and the
    dashboard's sign-in page; a known API key (`Authorization: Bearer`) anywhere; under /ui also the
    dashboard's session (serving.webauth). A wrong key is counted against the client's address
    (serving.access.Throttle) and logged without the key; a throttled address is refused before any key is
    checked. Refusals are AuthenticationError, answered by `refuse`."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        scope = conn.scope
        path = scope["path"]
        if path in OPEN_PATHS:
            return None
        if not _dashboard(path):
            principal = await self._bearer(conn)
            if principal is None:
                raise AuthenticationError(KEY_ERROR)
            return self._allowed(principal, access.required(scope["method"], path))
        if path == dashboard.MOUNT:
            raise AuthenticationError("sign in")
        need = access.required(scope["method"], path)
        session = await run_in_threadpool(dashboard.session_of, scope)
        if need == access.OPEN:
            if path == dashboard.LOGIN and scope["method"] == "POST":
                self._not_throttled(conn)
            return None if session is None else self._allowed(Principal.of_session(session), access.OPEN)
        principal = Principal.of_session(session) if session else await self._bearer(conn)
        if principal is None:
            raise AuthenticationError("sign in")
        return self._allowed(principal, need)

    @staticmethod
    def _allowed(principal: Principal, need: str) -> tuple[AuthCredentials, SimpleUser]:
        if need == access.SESSION and principal.session is None:
            raise Forbidden("only a dashboard session can sign out")
        if need not in (access.OPEN, access.SESSION) and not access.at_least(principal.role, need):  # type: ignore[arg-type]
            raise Forbidden(
                f"the key {principal.username!r} has role {principal.role}; this needs {need} or above"
            )
        return AuthCredentials(["authenticated", principal.role]), principal

    async def _bearer(self, conn: HTTPConnection) -> Principal | None:
        """The principal of the request's bearer key; None without one; a wrong key is counted and logged."""
        scheme, _, raw = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            return None
        self._not_throttled(conn)
        key = dashboard.gate().keys.match(raw.strip())  # hashing and a stat of the key file: microseconds
        if key is None:
            dashboard.wrong_key(conn.scope, "bearer")
            return None
        return Principal.of_key(key)

    @staticmethod
    def _not_throttled(conn: HTTPConnection) -> None:
        wait = dashboard.gate().throttle.wait(dashboard.client_of(conn.scope))
        if wait:
            raise Throttled(wait)


def refuse(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """401 JSON for the API (403 for a role too weak, 429 when throttled); under /ui a 303 to /ui/ (from
    /ui) or to the login page, back to the page, and the dashboard's 403 and 429 pages."""
    scope = conn.scope
    retry = {"retry-after": str(math.ceil(exc.wait_s))} if isinstance(exc, Throttled) else {}
    code = 429 if isinstance(exc, Throttled) else 403 if isinstance(exc, Forbidden) else 401
    if _dashboard(scope["path"]):
        if code != 401:
            return dashboard.refusal(scope, code, str(exc), retry)
        where = f"{dashboard.MOUNT}/" if scope["path"] == dashboard.MOUNT else dashboard.login_location(scope)
        return Response(status_code=303, headers={"location": where, "content-type": "text/plain"})
    return Json({"error": str(exc)}, code, headers={"www-authenticate": "Bearer", **retry})


class ApiKeys(AuthenticationMiddleware):
    """Keys, roles and the throttle are read on the first request of the worker (dashboard.gate), never at
    import."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app, backend=BearerKeys(), on_error=refuse)


class ScoreBody:
    """POST /score: 415 unless the body is JSON; 413 beyond `max_body_mb` (the declared length, then the
    bytes as they arrive); otherwise the body, read whole, is handed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.limit = int(ServingConfig.load().max_body_mb * 2**20)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _score(scope):
            return await self.app(scope, receive, send)
        request = Request(scope)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/json", ""):
            return await Json({"error": "content-type: send application/json"}, 415)(scope, receive, send)
        too_large = Json({"error": f"request body larger than {self.limit / 2**20:g} MB: {FEWER}"}, 413)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        parts: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await too_large(scope, receive, send)
        body = b"".join(parts)

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class ErrorBodies:
    """POST /score answers of 400 and above re-sent as {"error": ..., "detail": ...}; others untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _score(scope):
            return await self.app(scope, receive, send)
        held: list[Message] = []

        async def relay(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held.append(message)
            elif not held:
                await send(message)
            elif message["type"] == "http.response.body":
                held.append(message)
                if not message.get("more_body"):
                    raw = b"".join(m.get("body", b"") for m in held[1:])
                    await Json(error_body(raw), held[0]["status"])(scope, receive, send)

        await self.app(scope, receive, relay)


class Routes:
    """`routes` answered here when one matches fully (path and method); every other request passes on."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    return await route.handle({**scope, **child}, receive, send)
        await self.app(scope, receive, send)


class GetOnly:
    """An endpoint that answers GET and gives any other method (HEAD too) 405 with `Allow: GET`."""

    def __init__(self, endpoint: Callable[[Request], Response]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            response = self.endpoint(Request(scope, receive))
        else:
            response = Json({"error": f"{scope['path']} answers GET only"}, 405, headers={"allow": "GET"})
        await response(scope, receive, send)


def _score(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["path"] == "/score" and scope["method"] == "POST"


def _dashboard(path: str) -> bool:
    return path == dashboard.MOUNT or path.startswith(f"{dashboard.MOUNT}/")
