"""The BentoML scoring service: one class; the champion loaded once from the registry alias and swapped when
the alias moves (serving.champion); each route a few lines over the library code.

Routes: POST /score (serving.online); GET /healthz and /livez (BentoML's liveness); GET /readyz (JSON:
loaded version, last load error; 503 until a model is loaded); GET /model (feature set, metrics, tier
thresholds); GET /docs.json (serving.openapi). The retention dashboard (serving.dashboard) is mounted at
/ui. Every route but the health probes needs `Authorization: Bearer KEY` (under /ui the dashboard's session
cookie will do); that and the request limits are serving.middleware. Run with `diamond serve`; serving.yaml
`workers` processes answer side by side.

POST /score by id runs on the worker's event loop (a dictionary lookup and array operations over the
snapshot held in memory, serving.champion.StoreSnapshot); inline histories, and a snapshot to (re)load, go
to a small thread pool, so a slow inline request never holds up the by-id requests behind it. The answer is
written as JSON straight from what serving.online built, not validated again field by field. The request
timeout (`traffic.timeout`) is serving.traffic's, which frees each request's objects when it answers.
"""

from __future__ import annotations

import gc
import threading
from functools import partial

import anyio
import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, ServiceUnavailable
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving import dashboard, middleware, online, openapi, store, traffic
from serving.api import Customer, ScoreRequest, ScoreResponse
from serving.champion import ChampionHolder, Served, StoreSnapshot
from serving.config import ServingConfig
from serving.middleware import Json
from training.tracking import MlflowConfig

SLOW_THREADS = 4  # inline histories and snapshot loads at once per worker; by-id requests need none
traffic.install()  # BentoML's request timeout kept every request's objects for 60 s: the latency tail


def _holder() -> ChampionHolder | None:
    """This worker's champion: the service instance's own holder (none before it starts or after it stops)."""
    try:
        holder: ChampionHolder = bentoml.get_current_service().holder
    except BentoMLException:
        return None
    return holder


def _served() -> Served | None:
    """The version this worker serves now (None before one is loaded): the dashboard's effect page names
    its value target."""
    holder = _holder()
    return holder.current if holder else None


@bentoml.asgi_app(dashboard.create_app(_served), path=dashboard.MOUNT)
@bentoml.service(
    name="diamond",
    logging={"access": {"enabled": False}},  # the per-request access log dominated the latency tail
    metrics={"enabled": False},
    traffic={"timeout": 60},
)
class Diamond:
    def __init__(self) -> None:
        self.config = ServingConfig.load()
        self.snapshot = StoreSnapshot(
            store.engine(self.config.store_url),
            self.config.cold_start_min_purchase_days,
            self.config.reasons,
            finish=online.prerender,
        )
        # each version is scored on the snapshot before it serves: requests never wait for that
        self.holder = ChampionHolder(
            MlflowConfig.load(), self.config.model_alias, prepare=self.snapshot.prepare
        )
        self.holder.refresh()
        self.slow = anyio.CapacityLimiter(SLOW_THREADS)
        threading.Thread(target=self._poll, name="diamond-model-poll", daemon=True).start()
        gc.collect()
        gc.freeze()  # full collections over the loaded model's heap caused the latency tail

    def _poll(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.config.poll_s):
            self.holder.refresh()

    @bentoml.api(route="/score", input_spec=ScoreRequest, output_spec=ScoreResponse)
    async def score(self, customers: list[Customer], as_of: str | None = None) -> Response:
        """Score up to `max_customers` customers: by id from the latest batch snapshot, or with their recent
        history inline (scored as of `as_of`, default their latest event). Results keep the request order."""
        served = self.holder.current
        if served is None:
            raise ServiceUnavailable("no model loaded yet: see GET /readyz")
        answer = partial(online.score_customers, served, customers, as_of, self.snapshot, self.config)
        try:
            if any(c.inline for c in customers) or not self.snapshot.current(served):
                body = await anyio.to_thread.run_sync(answer, limiter=self.slow)
            else:
                body = answer()
        except online.RequestError as exc:
            raise InvalidArgument(str(exc)) from None
        return Response(body, media_type="application/json")


def _workers() -> int:
    """serving.yaml `workers` of this service (1 before it starts)."""
    try:
        workers: int = bentoml.get_current_service().config.workers
    except BentoMLException:
        return 1
    return workers


def readyz(_: Request) -> Response:
    """The holder's status and which worker answered (BentoML's index, from 1); 503 until a version is
    loaded."""
    holder = _holder()
    status = holder.status() if holder else {"ready": False, "last_error": "starting"}
    return Json({**status, "worker": bentoml.server_context.worker_index}, 200 if status["ready"] else 503)


def model(_: Request) -> Response:
    """What the served version is (serving.champion.ChampionHolder.describe); 503 before one is loaded."""
    holder = _holder()
    described = holder.describe() if holder else None
    if described is None:
        return Json({"error": "no model loaded", **(holder.status() if holder else {})}, 503)
    return Json(described)


def docs(_: Request) -> Response:
    """BentoML's OpenAPI document of this service, completed (serving.openapi)."""
    return Json(openapi.document(Diamond))


middleware.guard(
    Diamond,
    routes=[
        Route("/readyz", middleware.GetOnly(readyz)),
        Route("/model", middleware.GetOnly(model)),
        Route("/docs.json", docs, methods=["GET"]),
    ],
    workers=_workers,
)
