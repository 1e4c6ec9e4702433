"""Every refused request (4xx) logged as one line, without anything the request carried.

The line gives the status, the method and the route's shape: a path known to the service as it is, a path
with a value in it (a customer id, an alert id) with the value replaced by `…`, and any other path as
`(other)`: request paths, query strings and bodies can hold customer data, keys or an attacker's payload, and
none of it belongs in a log. Added outermost by serving.middleware.guard, so refusals by the key check, the
body limits and the handlers are all seen. BentoML itself logs every refused /score body as an error with
its traceback, pydantic's input values included: `quiet_client_errors` drops those records (a 5xx still
gets its traceback).
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("diamond.http")
FRAMEWORK_LOGGER = "bentoml._internal.server.http_app"  # BentoML's "Exception on /score [POST]" + traceback

FIXED = frozenset(
    {
        "/",
        "/score",
        "/model",
        "/readyz",
        "/healthz",
        "/livez",
        "/docs.json",
        "/metrics",
        "/ui",
        "/ui/",
        "/ui/login",
        "/ui/logout",
        "/ui/overview",
    }
)
WITH_VALUE = ("/ui/customers/", "/ui/alerts/", "/ui/static/")


def route_shape(path: str) -> str:
    """`path` as it may be logged: fixed paths as they are, value-carrying ones as their prefix + `…`."""
    if path in FIXED:
        return path
    for prefix in WITH_VALUE:
        if path.startswith(prefix):
            return prefix + "…"
    return "(other)"


class LogRefusals:
    """Logs each 4xx answer once: `refused 401 GET /model` (level WARNING, logger diamond.http)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                log.warning(
                    "refused %d %s %s", message["status"], scope["method"], route_shape(scope["path"])
                )
            await send(message)

        await self.app(scope, receive, watch)


class ClientErrors(logging.Filter):
    """Drops BentoML's error records for requests it answers with a 4xx: a pydantic ValidationError, or a
    BentoMLException whose status is below 500. LogRefusals logs those requests, without their values."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if type(exc).__name__ == "ValidationError" and type(exc).__module__.startswith("pydantic"):
            return False
        code = getattr(getattr(exc, "error_code", None), "value", None)
        return not (isinstance(code, int) and 400 <= code < 500)


def quiet_client_errors() -> None:
    """Install ClientErrors on BentoML's HTTP logger, once per process."""
    logger = logging.getLogger(FRAMEWORK_LOGGER)
    if not any(isinstance(f, ClientErrors) for f in logger.filters):
        logger.addFilter(ClientErrors())
