"""The scoring service's HTTP guard as Starlette middleware; `guard` adds them, outermost first:

- `ApiKeys`: Starlette's AuthenticationMiddleware with a bearer-key backend. Every route but the health
  probes needs `Authorization: Bearer KEY` (401 otherwise); under /ui the dashboard's session cookie admits
  too, and a browser with neither is sent to the dashboard's login page (303).
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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
)
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import dashboard, refusals
from serving.api import OPEN_PATHS, error_body
from serving.config import ServingConfig, api_key_hashes, matching_hash

if TYPE_CHECKING:
    import bentoml

KEY_ERROR = "missing or wrong API key (Authorization: Bearer KEY)"
FEWER = "send fewer customers"


def guard(service: bentoml.Service[Any], routes: Sequence[BaseRoute]) -> None:
    """Add the middleware below to `service`, outermost first: nothing runs without a key, /score's limits
    come before BentoML parses the body, and `routes` are answered ahead of BentoML's router."""
    service.add_asgi_middleware(refusals.LogRefusals)  # outermost: every 4xx, one line, no request values
    refusals.quiet_client_errors()  # and not BentoML's traceback of a refused body, values and all
    service.add_asgi_middleware(ApiKeys)
    service.add_asgi_middleware(ScoreBody)
    service.add_asgi_middleware(ErrorBodies)
    service.add_asgi_middleware(Routes, routes=routes)


class Json(JSONResponse):
    """JSON as the service has always written it: `json.dumps` defaults, anything unusual as text."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str).encode()


class BearerKeys(AuthenticationBackend):
    """Who may pass: anyone to the health probes; a known API key anywhere; under /ui also the dashboard's
    session (serving.dashboard.admits). Refusals are AuthenticationError, answered by `refuse`."""

    def __init__(self, hashes: frozenset[str]) -> None:
        self.hashes = hashes

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        scope = conn.scope
        path = scope["path"]
        if path in OPEN_PATHS:
            return None
        if _dashboard(path):
            if path != dashboard.MOUNT and dashboard.admits(scope, self.hashes):
                return AuthCredentials(["authenticated"]), SimpleUser("dashboard session")
            if path != dashboard.MOUNT and self._key(conn):
                return AuthCredentials(["authenticated"]), SimpleUser("api key")
            raise AuthenticationError("sign in")
        if not self._key(conn):
            raise AuthenticationError(KEY_ERROR)
        return AuthCredentials(["authenticated"]), SimpleUser("api key")

    def _key(self, conn: HTTPConnection) -> bool:
        scheme, _, key = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        return matching_hash(key.strip(), self.hashes) is not None


def refuse(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """401 JSON for the API; under /ui a 303 to /ui/ (from /ui) or to the login page, back to the page."""
    scope = conn.scope
    if _dashboard(scope["path"]):
        where = f"{dashboard.MOUNT}/" if scope["path"] == dashboard.MOUNT else dashboard.login_location(scope)
        return Response(status_code=303, headers={"location": where, "content-type": "text/plain"})
    return Json({"error": str(exc)}, 401, headers={"www-authenticate": "Bearer"})


class ApiKeys(AuthenticationMiddleware):
    """The keys are read when the worker builds its middleware, never at import."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app, backend=BearerKeys(api_key_hashes()), on_error=refuse)


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
