"""The scoring service fuzzed with schemathesis against its own OpenAPI document (GET /docs.json).

A real `diamond serve` on 127.0.0.1 (a small model trained and promoted in a private MLflow store, CDNOW
batch-scored into the snapshot) is attacked once per module, operation by operation, with:

- schemathesis' coverage phase (every boundary and negative value the document implies, undeclared
  methods and content types; deterministic), and
- its fuzzing phase through Hypothesis: schema-valid and schema-violating requests, 30 examples per
  operation and mode, derandomized (the same run every time), no example database;

each request sent with a valid key and again without any key. Every response goes through schemathesis'
own checks, one at a time so each finding is named by its check. The tests then read the findings: one test
per (operation, check) with a key, one per operation without a key (every route but /healthz, /livez and
/readyz must answer 401). A check that finds a real product bug is marked `xfail(strict=True)` with the
bug in its reason: it documents the bug and fails the day the bug is fixed, so the mark gets removed.

Why not `@schema.parametrize()`: the document only exists once the server runs, so the schema has to come
from a fixture (`schemathesis.pytest.from_fixture`), and schemathesis 4.32.5's lazy loader reads
`request.node._nodeid`, which pytest 9.2 no longer has (AttributeError before any request is sent). The
campaign below uses the same public pieces (`schemathesis.openapi.from_url`, `APIOperation.as_strategy`,
`BaseSchema.iter_coverage_cases`, `Case.call` and `Case.validate_response` with schemathesis' checks).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode, Response, checks
from schemathesis.core.failures import FailureGroup

from tests.helpers import API_KEY as KEY
from tests.helpers import AUTH

# Hypothesis examples per operation and generation mode (`make bench-reliability` sends ten times more)
EXAMPLES = int(os.environ.get("DIAMOND_FUZZ_EXAMPLES", "30"))
OPEN = ("GET /healthz", "GET /livez", "GET /readyz")
PROTECTED = ("POST /score", "GET /model")
OPERATIONS = OPEN + PROTECTED
WITH_KEY_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "ignored_auth",
    "unsupported_method",
)
WITHOUT_KEY_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
KEY_RULE = "401 without a key"  # the pseudo-check the no-key campaign adds

# (operation, check) -> the product bug it finds; each is verified by a strict xfail below.
KNOWN_BUGS: dict[tuple[str, str], str] = {
    ("POST /score", "positive_data_acceptance"): (
        "rules across fields that JSON Schema cannot state are refused with 400 although the document "
        "accepts the body: the same customer_id twice in one request, and inline events after `as_of` "
        "(both documented in the field descriptions)"
    ),
}

Findings = dict[str, dict[str, list[str]]]  # operation -> check -> examples (request, response, failure)


@pytest.fixture(scope="module")
def server(http_server: tuple[str, int]) -> str:
    return http_server[0]


@pytest.mark.parametrize(
    ("what", "rate", "size"), [("single", 20.0, 1), ("batch", 0.5, 1000)], ids=["single", "batch-1000"]
)
def test_steady_load_is_held_with_no_errors(
    http_server: tuple[str, int], what: str, rate: float, size: int
) -> None:
    """The short version of `make bench-load`: 12 s at a steady rate (open loop), every request answered
    200, and the server's memory not climbing away. The 5-minute runs
    and their latency percentiles are in docs/reliability.md."""
    import asyncio
    import random

    from bench.bench_load import phase

    url, pid = http_server
    ids = [f"{i:05d}" for i in range(1, 2358)]  # CDNOW's customer ids
    rng = random.Random(0)

    def bodies() -> Iterator[dict[str, Any]]:
        while True:
            yield {"customers": [{"customer_id": c} for c in rng.sample(ids, size)]}

    result = asyncio.run(phase(url, "POST", "/score", bodies(), rate, 12.0, size, pid, key=KEY))
    print(f"RESULT load {what}: " + ", ".join(f"{k}={v}" for k, v in result.items() if k != "rss_series"))
    assert result["errors"] == {}, result["errors"]
    assert result["requests"] == round(rate * 12.0)
    assert result["rss_max"] < 1.25 * result["rss_start"], result["rss_series"]


@pytest.fixture(scope="module")
def api_schema(server: str) -> BaseSchema:
    """The service's own document, as served (it needs a key)."""
    schema = schemathesis.openapi.from_url(f"{server}/docs.json", headers=AUTH, timeout=30)
    schema.config.update(base_url=server)
    return schema


def _operations(schema: BaseSchema) -> dict[str, APIOperation]:
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


def _without_key(case: Case) -> None:
    for name in [h for h in case.headers if h.lower() == "authorization"]:
        del case.headers[name]


def _describe(case: Case, response: Response, problem: str, headers: dict[str, str]) -> str:
    request = case.as_curl_command(headers=headers)
    shown = request if len(request) <= 700 else request[:700] + "…"
    return f"{shown}\n  -> {response.status_code}: {response.text[:300]!r}\n  {problem.strip()[:600]}"


def _fuzz(op: APIOperation, mode: GenerationMode, probe: Callable[[str, Case], None]) -> None:
    """Hypothesis' examples for one operation and mode, each probed; none raises, so all are sent."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def fuzz(case: Case) -> None:
        probe(op.label, case)

    with suppress(Unsatisfiable):  # no inputs to make invalid (a GET without parameters): nothing to fuzz
        fuzz()


def _attack(schema: BaseSchema, with_key: bool) -> Findings:
    """Every operation: the coverage phase's cases, then Hypothesis' positive and negative examples; each
    response checked by every check on its own. Nothing raises: findings are collected (three per check)."""
    found: Findings = {}
    named = [(name, getattr(checks, name)) for name in (WITH_KEY_CHECKS if with_key else WITHOUT_KEY_CHECKS)]
    headers = dict(AUTH) if with_key else {}

    def record(label: str, check: str, message: str) -> None:
        examples = found[label].setdefault(check, [])
        if len(examples) < 3:
            examples.append(message)

    def probe(label: str, case: Case) -> None:
        if not with_key:
            _without_key(case)
        response = case.call(headers=headers, timeout=60)
        for name, check in named:
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except FailureGroup as group:
                for failure in group.exceptions:
                    record(
                        label, name, _describe(case, response, f"{failure.title}: {failure.message}", headers)
                    )
        if not with_key:
            expect_401 = label in PROTECTED
            if (response.status_code == 401) != expect_401 or response.status_code >= 500:
                wanted = "401" if expect_401 else "an answer without a key"
                record(label, KEY_RULE, _describe(case, response, f"expected {wanted}", headers))

    for label, op in _operations(schema).items():
        found[label] = {}
        config = schema.config.generation_for(operation=op)
        modes = list(GenerationMode)
        for case in schema.iter_coverage_cases(op, generation_modes=modes, generation_config=config):
            probe(label, case)
        for mode in GenerationMode:
            _fuzz(op, mode, probe)
    return found


@pytest.fixture(scope="module")
def with_key(api_schema: BaseSchema) -> Findings:
    return _attack(api_schema, with_key=True)


@pytest.fixture(scope="module")
def without_key(api_schema: BaseSchema) -> Findings:
    return _attack(api_schema, with_key=False)


def test_the_document_describes_the_service(api_schema: BaseSchema) -> None:
    assert sorted(_operations(api_schema)) == sorted(OPERATIONS)  # a new route: add it to OPERATIONS
    raw = api_schema.raw_schema
    assert raw["components"]["securitySchemes"]["bearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key from the operator",
    }
    for label in PROTECTED:
        method, path = label.split()
        assert raw["paths"][path][method.lower()]["security"] == [{"bearerKey": []}], label
    assert raw["paths"]["/readyz"]["get"]["security"] == []


def _with_key_params() -> list[Any]:
    return [
        pytest.param(
            label,
            check,
            id=f"{label} {check}",
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[label, check])]
            if (label, check) in KNOWN_BUGS
            else [],
        )
        for label in OPERATIONS
        for check in WITH_KEY_CHECKS
    ]


@pytest.mark.parametrize(("operation", "check"), _with_key_params())
def test_with_a_key(with_key: Findings, operation: str, check: str) -> None:
    assert operation in with_key, f"{operation} was not attacked"
    examples = with_key[operation].get(check, [])
    assert not examples, f"{check} failed on {operation}:\n" + "\n".join(examples)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_without_a_key(without_key: Findings, operation: str) -> None:
    """No key: 401 everywhere but the health probes, never a 5xx, every response as documented."""
    assert operation in without_key, f"{operation} was not attacked"
    failures = {check: examples for check, examples in without_key[operation].items() if examples}
    assert not failures, "\n".join(f"{check}:\n" + "\n".join(ex) for check, ex in failures.items())


def test_the_service_still_serves_after_the_attack(
    server: str, with_key: Findings, without_key: Findings
) -> None:
    ready = httpx.get(f"{server}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    body = {"customers": [{"customer_id": "00002"}]}
    scored = httpx.post(f"{server}/score", json=body, headers=AUTH, timeout=60)
    assert scored.status_code == 200 and scored.json()["scores"][0]["found"] is True
