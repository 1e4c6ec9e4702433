"""The BentoML scoring service: thin. One class; the champion loaded once from the registry alias and
swapped when the alias moves; each route a few lines over serving.scoring and serving.store.

Routes: POST /score; GET /healthz and /livez (BentoML's liveness); GET /readyz (JSON: loaded version, last
load error; 503 until a model is loaded); GET /model (feature set, metrics, tier thresholds). Every route
but the health probes needs `Authorization: Bearer KEY` (serving.config.api_key_hashes), checked by an ASGI
middleware before BentoML routes the request. The retention dashboard (serving.dashboard) is mounted at /ui;
there the middleware takes the dashboard's session cookie and sends browsers without one to its login page.
Run with `diamond serve`.
"""

from __future__ import annotations

import gc
import json
import threading
from datetime import datetime
from typing import Any

import bentoml
import pandas as pd
from bentoml.exceptions import InvalidArgument, ServiceUnavailable

from features.build import parse_cutoff
from features.history import HistoryError, history_from_frames
from serving import dashboard, scoring, store
from serving.api import Customer, Score, ScoreRequest, ScoreResponse, error_body, openapi_schema
from serving.config import ServingConfig, api_key_hashes, matching_hash
from serving.models import ModelHolder
from training.tracking import MlflowConfig

OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
_HOLDER: ModelHolder | None = None  # the worker's model, shared with the middleware below


class Guard:
    """ASGI middleware: API keys on every route but health; GET /readyz and GET /model answered here;
    /score bodies capped in size and its error bodies made the documented object."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hashes = api_key_hashes()
        self.max_body = int(ServingConfig.load().max_body_mb * 2**20)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path == "/readyz":
            if method != "GET":
                return await _get_only(send, path)
            status = _HOLDER.status() if _HOLDER else {"ready": False, "last_error": "starting"}
            return await _json(send, 200 if status["ready"] else 503, status)
        if path == dashboard.MOUNT or path.startswith(f"{dashboard.MOUNT}/"):
            if path != dashboard.MOUNT and (dashboard.admits(scope, self.hashes) or self._authorised(scope)):
                return await self.app(scope, receive, send)
            where = f"{dashboard.MOUNT}/" if path == dashboard.MOUNT else dashboard.login_location(scope)
            return await _send(send, 303, b"", {"location": where, "content-type": "text/plain"})
        if path not in OPEN_PATHS and not self._authorised(scope):
            return await _json(
                send,
                401,
                {"error": "missing or wrong API key (Authorization: Bearer KEY)"},
                {"www-authenticate": "Bearer"},
            )
        if path == "/score" and method == "POST":
            if not _is_json(scope):
                return await _json(send, 415, {"error": "content-type: send application/json"})
            return await self._score(scope, receive, send)
        if path == "/model":
            if method != "GET":
                return await _get_only(send, path)
            served = _HOLDER.current if _HOLDER else None
            if served is None:
                return await _json(
                    send, 503, {"error": "no model loaded", **(_HOLDER.status() if _HOLDER else {})}
                )
            art = served.artefact
            return await _json(
                send,
                200,
                {
                    "version": served.version,
                    "model_uri": _HOLDER.uri if _HOLDER else None,
                    "feature_set": art.feature_set,
                    "columns": art.columns,
                    "cutoff": art.cutoff.isoformat(),
                    "horizon_days": art.horizon_days,
                    "label_horizon_days": art.label_horizon_days,
                    "tiers": art.tiers,
                    "value_objective": art.value.objective,
                    "metrics": art.metrics,
                },
            )
        if path == "/docs.json" and method == "GET":
            return await self._openapi(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _score(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Read the whole body up to the size limit (413 beyond it), then let BentoML answer; its error
        bodies are rewritten as the documented object."""
        too_large = {"error": f"request body larger than {self.max_body / 2**20:g} MB: send fewer customers"}
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            return await _json(send, 413, too_large)
        parts: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            more = message.get("more_body", False)
            if size > self.max_body:
                return await _json(send, 413, too_large)
        body = b"".join(parts)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        held: list[dict[str, Any]] = []

        async def relay(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held.append(message)
            elif not held:
                await send(message)
            elif message["type"] == "http.response.body":
                held.append(message)
                if not message.get("more_body"):
                    raw = b"".join(m.get("body", b"") for m in held[1:])
                    await _json(send, held[0]["status"], error_body(raw))

        await self.app(scope, replay, relay)

    async def _openapi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """BentoML's document for POST /score, plus the routes answered here and the bearer-key scheme."""
        parts: list[bytes] = []
        status = {"code": 500}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        spec = json.loads(b"".join(parts) or b"{}")
        if status["code"] == 200:
            spec = with_extra_routes(spec)
        await _json(send, status["code"], spec)

    def _authorised(self, scope: dict[str, Any]) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        return matching_hash(key.strip(), self.hashes) is not None


async def _get_only(send: Any, path: str) -> None:
    await _json(send, 405, {"error": f"{path} answers GET only"}, {"allow": "GET"})


def _is_json(scope: dict[str, Any]) -> bool:
    kind = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1").split(";")[0]
    return kind.strip().lower() in ("application/json", "")


def with_extra_routes(spec: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document completed: GET /readyz and GET /model, and `Authorization: Bearer KEY` required
    everywhere but the health probes."""
    schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearerKey"] = {"type": "http", "scheme": "bearer", "description": "an API key from the operator"}
    obj = {"type": "object"}
    paths = spec.setdefault("paths", {})
    paths.pop("/metrics", None)  # BentoML lists it, but the service runs with metrics off
    body = paths.get("/score", {}).get("post", {}).get("requestBody", {}).get("content", {})
    if "application/json" in body:
        body["application/json"]["schema"] = openapi_schema(ScoreRequest)
    paths["/readyz"] = {
        "get": {
            "summary": "Ready: the loaded model version and last load error (503 until one is loaded)",
            "security": [],
            "responses": {
                "200": {"description": "ready", "content": {"application/json": {"schema": obj}}},
                "503": {"description": "no model loaded yet"},
            },
        }
    }
    paths["/model"] = {
        "get": {
            "summary": "The served model: feature set, columns, horizons, tiers, validation metrics",
            "responses": {
                "200": {"description": "the model", "content": {"application/json": {"schema": obj}}},
                "401": {"description": "missing or wrong API key"},
                "503": {"description": "no model"},
            },
        }
    }
    for path, item in paths.items():
        for op in item.values():
            if isinstance(op, dict) and path not in OPEN_PATHS and "security" not in op:
                op["security"] = [{"bearerKey": []}]
                op.setdefault("responses", {}).setdefault("401", {"description": "missing or wrong API key"})
    return spec


async def _json(send: Any, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body, default=str).encode()
    await _send(send, status, payload, {"content-type": "application/json", **(headers or {})})


async def _send(send: Any, status: int, payload: bytes, headers: dict[str, str]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


@bentoml.asgi_app(dashboard.create_app(), path=dashboard.MOUNT)
@bentoml.service(
    name="diamond",
    logging={"access": {"enabled": False}},  # the per-request access log dominated the latency tail
    metrics={"enabled": False},
    traffic={"timeout": 60},
)
class Diamond:
    def __init__(self) -> None:
        global _HOLDER
        self.config = ServingConfig.load()
        self.store = store.engine(self.config.store_url)
        self.holder = ModelHolder(MlflowConfig.load(), self.config.model_alias)
        self.holder.refresh()
        _HOLDER = self.holder
        threading.Thread(target=self._poll, name="diamond-model-poll", daemon=True).start()
        gc.collect()
        gc.freeze()  # full collections over the loaded model's heap caused the latency tail

    def _poll(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.config.poll_s):
            self.holder.refresh()

    def __is_ready__(self) -> bool:
        return self.holder.current is not None

    @bentoml.api(route="/score", input_spec=ScoreRequest)
    def score(self, customers: list[Customer], as_of: str | None = None) -> ScoreResponse:
        """Score up to `max_customers` customers: by id from the latest batch snapshot, or with their recent
        history inline (scored as of `as_of`, default their latest event). Results keep the request order."""
        served = self.holder.current
        if served is None:
            raise ServiceUnavailable("no model loaded yet: see GET /readyz")
        _check(customers, self.config.max_customers)
        if as_of is not None:
            try:
                parse_cutoff(as_of)
            except ValueError as exc:
                raise InvalidArgument(f"as_of: {exc}") from None
        art, top, cold = served.artefact, self.config.reasons, self.config.cold_start_min_purchase_days
        results: dict[str, Score] = {}
        ids = [c.customer_id for c in customers if not c.inline]
        rows = store.read_rows(self.store, store.FEATURES, ids)
        records = scoring.score_records(art, rows, top, cold, served.rfm)
        for record, row in zip(records, rows.itertuples(), strict=True):
            results[record["customer_id"]] = Score(
                found=True, source="snapshot", as_of=str(row.as_of), model_version=served.version, **record
            )
        for cid in ids:
            results.setdefault(
                cid,
                Score(
                    customer_id=cid,
                    found=False,
                    error="not in the latest batch snapshot: send its history inline",
                ),
            )
        inline = [c for c in customers if c.inline]
        if inline:
            history, t = _inline_history(inline, as_of)
            rows = scoring.complete_rows(art, art.feature_rows(history, t))
            for record in scoring.score_records(art, rows, top, cold, served.rfm):
                results[record["customer_id"]] = Score(
                    found=True, source="inline", as_of=t.isoformat(), model_version=served.version, **record
                )
            for c in inline:
                results.setdefault(
                    c.customer_id,
                    Score(
                        customer_id=c.customer_id,
                        found=False,
                        error="no purchase at or before as_of: nothing to score",
                    ),
                )
        return ScoreResponse(
            model_version=served.version,
            feature_set=art.feature_set,
            horizon_days=art.horizon_days,
            scores=[results[c.customer_id] for c in customers],
        )


def _check(customers: list[Customer], limit: int) -> None:
    """The configured cap, when serving.yaml sets one below the documented limit (ScoreRequest checks the
    rest: at least one customer, each id once)."""
    if len(customers) > limit:
        raise InvalidArgument(f"customers: {len(customers)} given, at most {limit} per request")


def _inline_history(customers: list[Customer], as_of: str | None) -> tuple[Any, datetime]:
    """The inline events as a history, validated like files; as_of defaults to the latest event."""
    tx = [{"customer_id": c.customer_id, **t.model_dump()} for c in customers for t in c.transactions or []]
    it = [{"customer_id": c.customer_id, **i.model_dump()} for c in customers for i in c.interactions or []]
    cn = [{"customer_id": c.customer_id, "timestamp": t} for c in customers for t in c.cancellations or []]
    attrs = [{"customer_id": c.customer_id, **(c.attributes or {})} for c in customers if c.attributes]
    frames = {
        "transactions": pd.DataFrame(tx).dropna(axis=1, how="all"),
        "interactions": pd.DataFrame(it).dropna(axis=1, how="all") if it else None,
        "cancellations": pd.DataFrame(cn) if cn else None,
        "customers": pd.DataFrame(attrs) if attrs else None,
    }
    for name in ("transactions", "interactions", "cancellations"):
        frame = frames[name]
        if frame is not None:
            frames[name] = frame.assign(
                timestamp=pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None)
            )
    try:
        t = parse_cutoff(as_of) if as_of else frames["transactions"]["timestamp"].max().to_pydatetime()
    except ValueError as exc:
        raise InvalidArgument(f"as_of: {exc}") from None
    try:
        history = history_from_frames(
            frames["transactions"],
            frames["customers"],
            frames["interactions"],
            frames["cancellations"],
            as_of=t,
        )
    except HistoryError as exc:
        raise InvalidArgument(f"customers[] inline history: {exc}") from None
    return history, t


Diamond.add_asgi_middleware(Guard)
