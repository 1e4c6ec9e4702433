"""serving.traffic: the request timeout that frees each request's objects when it answers, and the
connection rebalancing between workers. Plain ASGI calls on a real asyncio loop."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import weakref
from typing import Any

from bentoml._internal.server.base_app import BaseAppFactory
from starlette.types import Message, Receive, Scope, Send

from serving import traffic

SPAN: contextvars.ContextVar[object] = contextvars.ContextVar("span")  # stands for OpenTelemetry's span


class Thing:
    """A per-request object an outer middleware puts in the request's context (the role of the span)."""


def _scope() -> Scope:
    return {"type": "http", "method": "POST", "path": "/score", "headers": []}


async def _nothing() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _call(app: Any) -> list[Message]:
    """One request through `app` on a fresh loop; the messages sent."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(_scope(), _nothing, send))
    return sent


def _alive_after(middleware: type, requests: int) -> int:
    """How many requests' context objects are still alive after `requests` requests through `middleware`
    (60 s timeout) on one loop, once they have all answered."""
    refs: list[weakref.ref[Thing]] = []
    app = middleware(ok_app, timeout=60)

    async def one() -> None:
        thing = Thing()
        refs.append(weakref.ref(thing))
        SPAN.set(thing)  # as the outer OpenTelemetry middleware does, before the timeout middleware runs
        del thing

        async def send(message: Message) -> None:
            return None

        await app(_scope(), _nothing, send)

    async def main() -> int:
        for _ in range(requests):
            await asyncio.create_task(one(), context=contextvars.copy_context())
        await asyncio.sleep(0)
        gc.collect()
        return sum(r() is not None for r in refs)

    return asyncio.run(main())


def test_request_timeout_frees_each_request_when_it_answers() -> None:
    # BentoML 1.4's timeout keeps every request's context (here: its Thing) alive for the whole timeout
    assert _alive_after(traffic.BENTOML_TIMEOUT, 1000) == 1000
    # ours cancels its timer when the answer starts; asyncio drops cancelled timers in batches (> 100)
    assert _alive_after(traffic.RequestTimeout, 1000) <= 200


def test_request_timeout_answers_504_when_the_response_does_not_start() -> None:
    cancelled = []

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    sent = _call(traffic.RequestTimeout(slow, timeout=0.05))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 504
    assert json.loads(sent[1]["body"]) == {"error": "Not able to process the request in 0.05 seconds"}
    assert cancelled == [True]


def test_request_timeout_leaves_a_started_response_alone() -> None:
    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.1)  # longer than the timeout, after the response started
        await send({"type": "http.response.body", "body": b"late but whole"})

    sent = _call(traffic.RequestTimeout(streaming, timeout=0.02))
    assert [m.get("status") for m in sent] == [200, None] and sent[1]["body"] == b"late but whole"


def test_install_makes_bentoml_build_our_timeout() -> None:
    class Factory(BaseAppFactory):
        name = "test"

    traffic.install()
    assert [m.cls for m in Factory(timeout=5).middlewares] == [traffic.RequestTimeout]
    assert Factory(timeout=5).middlewares[0].kwargs == {"timeout": 5}


def _headers(app: traffic.Rebalance, headers: list[tuple[bytes, bytes]] | None = None) -> list[bytes | None]:
    async def app_with(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers or [])})
        await send({"type": "http.response.body", "body": b""})

    app.app = app_with
    out = []
    for _ in range(6):
        start = _call(app)[0]
        out.append(dict(start["headers"]).get(b"connection"))
    return out


def test_rebalance_closes_one_connection_in_every_answers_with_two_workers() -> None:
    assert _headers(traffic.Rebalance(ok_app, workers=lambda: 2, every=3)) == [
        None,
        None,
        b"close",
        None,
        None,
        b"close",
    ]
    # an app's own keep-alive header is replaced, not doubled
    got = _headers(traffic.Rebalance(ok_app, workers=lambda: 2, every=2), [(b"connection", b"keep-alive")])
    assert got == [b"keep-alive", b"close"] * 3


def test_rebalance_does_nothing_with_one_worker() -> None:
    assert _headers(traffic.Rebalance(ok_app, workers=lambda: 1, every=1)) == [None] * 6


def test_bentoml_timeout_is_ours_once_the_service_is_imported() -> None:
    from bentoml._internal.server.http import traffic as bentoml_traffic

    import serving.service  # noqa: F401  (installs it)

    assert bentoml_traffic.TimeoutMiddleware is traffic.RequestTimeout
    assert traffic.BENTOML_TIMEOUT is not traffic.RequestTimeout
