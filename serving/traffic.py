"""Two pieces of the scoring service's traffic handling that BentoML 1.4 gets wrong for a by-id service.

**The request timeout** (the service's `traffic.timeout`), as BentoML's own but without its per-request leak.

BentoML 1.4's TimeoutMiddleware (bentoml/_internal/server/http/traffic.py) schedules `loop.call_later(timeout,
...)` for every request and never cancels it. Each request's timer therefore lives `timeout` seconds (60 for
Diamond) and keeps what it captured alive that long: its future, its bound callback and the request's context
copy, which holds the request's OpenTelemetry span (span, span context, attributes, two bounded lists, four
locks). At 1,000 requests a second that is about a million objects that outlive every young collection, so
Python's full collections come every few seconds and grow with the load: 100-500 ms pauses of every request in
the worker, the p99 tail bench/README.md measured on Diamond and on the bare reference alike.

`RequestTimeout` answers the same 504 when the response has not started within the timeout, and cancels its
timer as soon as the response starts (asyncio drops cancelled timers within a few requests). `install()` puts
it where BentoML builds its middleware, before the service's app is built; it raises if BentoML moved it.

**Connections shared between workers** (serving.yaml `workers`). BentoML's workers accept on one shared
listening socket, and asyncio accepts every pending connection in one go: the worker that wakes first takes a
client's whole keep-alive pool (wrk's 8 connections landed 8/0 or 7/1 in six runs of six), and the other
worker idles. `Rebalance` closes one connection in `every` answers of a worker with more than one
(`Connection: close`, as nginx's keepalive_requests); the client opens a new one, which the least busy worker
tends to accept, since a busy worker is inside a request when it arrives. A reconnection costs about a tenth
of a millisecond on loopback, once in `every` requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bentoml._internal.server.http import traffic as bentoml_traffic
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BENTOML_TIMEOUT: Any = getattr(bentoml_traffic, "TimeoutMiddleware", None)  # BentoML's own (the tests use it)


class RequestTimeout:
    """504 (BentoML's body) when an HTTP request's response has not started within `timeout` seconds; the
    app is cancelled then. The timer is cancelled when the response starts, so nothing outlives the
    request."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False
        late = asyncio.timeout(self.timeout)

        async def _send(message: Message) -> None:
            nonlocal started
            if not started:
                started = True
                late.reschedule(None)  # the response started: no timeout from here on, timer cancelled
            await send(message)

        try:
            async with late:
                await self.app(scope, receive, _send)
        except TimeoutError:
            if started:  # only the app's own TimeoutError can get here once the response started
                raise
            body = {"error": f"Not able to process the request in {self.timeout} seconds"}
            await JSONResponse(body, status_code=504)(scope, receive, send)


class Rebalance:
    """Every `every`-th HTTP answer of this worker closes its connection when `workers()` > 1, so that a
    client's persistent connections spread over the workers instead of staying where they were accepted."""

    def __init__(self, app: ASGIApp, workers: Callable[[], int], every: int = 100) -> None:
        self.app = app
        self.workers = workers
        self.every = every
        self.count = 0
        self.active: bool | None = None  # decided at the first request (the service is built by then)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active is None:
            self.active = self.workers() > 1
        self.count += 1
        if not self.active or self.count % self.every:
            await self.app(scope, receive, send)
            return

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, _send)


def install() -> None:
    """Make BentoML build its request timeout from `RequestTimeout` (in every process that imports the
    service, before its app is built). Raises RuntimeError when BentoML no longer has the hook."""
    if BENTOML_TIMEOUT is None:
        raise RuntimeError(
            "bentoml._internal.server.http.traffic.TimeoutMiddleware is gone: see serving/traffic.py"
        )
    bentoml_traffic.TimeoutMiddleware = RequestTimeout  # type: ignore[misc,assignment]
