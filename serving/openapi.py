"""GET /docs.json: BentoML's OpenAPI document of the service, completed with what BentoML 1.4 cannot state.

BentoML writes the document through its own model of OpenAPI (bentoml._internal.service.openapi.
specification), which has no `security` on operations and no `securitySchemes` ("not yet supported"), and
it flattens the request's schema by keeping the first branch of every `anyOf` (_bentoml_sdk/method.py,
`_flatten_field`), which drops the null of optional fields: the service then accepted values its own
document called invalid. So one step after BentoML adds:

- the bearer-key scheme, required (with its 401, 403 and 429: serving.access) on every operation but the
  health probes;
- GET /readyz and GET /model, answered by serving.service through serving.middleware.Routes;
- POST /score's request body as pydantic states it, in OpenAPI 3.0 terms (`nullable` fields);

and removes /metrics, which BentoML lists although the service runs with metrics off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from serving.api import OPEN_PATHS, ScoreRequest

if TYPE_CHECKING:
    import bentoml


def document(service: bentoml.Service[Any]) -> dict[str, Any]:
    """The service's document as GET /docs.json serves it."""
    return complete(service.openapi_spec.asdict())


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's document completed: GET /readyz and GET /model, `Authorization: Bearer KEY` required
    everywhere but the health probes, the request schema of POST /score, no /metrics."""
    schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearerKey"] = {"type": "http", "scheme": "bearer", "description": "an API key from the operator"}
    obj = {"type": "object"}
    paths = spec.setdefault("paths", {})
    paths.pop("/metrics", None)
    body = paths.get("/score", {}).get("post", {}).get("requestBody", {}).get("content", {})
    if "application/json" in body:
        body["application/json"]["schema"] = request_schema(ScoreRequest)
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
            "summary": "The served model: feature set, columns, horizons, tiers, value target, metrics",
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
                responses = op.setdefault("responses", {})
                responses.setdefault("401", {"description": "missing or wrong API key"})
                responses.setdefault("403", {"description": "the key's role is too weak for this route"})
                responses.setdefault("429", {"description": "too many wrong keys from this address lately"})
    return spec


def request_schema(model: type[BaseModel]) -> dict[str, Any]:
    """pydantic's own JSON schema for `model`, as OpenAPI 3.0 states it: definitions inlined and optional
    fields `nullable`."""
    raw = model.model_json_schema()
    defs = raw.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return walk({**defs[node["$ref"].rsplit("/", 1)[-1]], **extra})
        node = {k: walk(v) for k, v in node.items()}
        options = node.get("anyOf")
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del node["anyOf"]
            node = {**rest[0], **node} if len(rest) == 1 else {**node, "anyOf": rest}
            node["nullable"] = True
        return node

    return walk(raw)
