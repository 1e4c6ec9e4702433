"""serving.refusals: what a refused request's log line may say, and which framework records are dropped."""

from __future__ import annotations

import logging
import sys

import pytest
from bentoml.exceptions import InvalidArgument, ServiceUnavailable
from pydantic import BaseModel, ValidationError

from serving.refusals import ClientErrors, route_shape


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/score", "/score"),
        ("/ui/login", "/ui/login"),
        ("/ui/customers/00002", "/ui/customers/…"),
        ("/ui/alerts/17/ack", "/ui/alerts/…"),
        ("/=HYPERLINK(1)", "(other)"),
        ("/score/../etc/passwd", "(other)"),
    ],
)
def test_a_route_shape_never_carries_a_value(path: str, shape: str) -> None:
    assert route_shape(path) == shape


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("x", logging.ERROR, __file__, 1, "Exception on /score [POST]", (), info)


class _Body(BaseModel):
    n: int


def test_client_errors_are_dropped_and_server_errors_kept() -> None:
    try:
        _Body.model_validate({"n": "secret-value"})
    except ValidationError as exc:
        invalid = exc
    keep = ClientErrors()
    assert not keep.filter(_record(invalid))
    assert not keep.filter(_record(InvalidArgument("customers[0]: secret-value")))
    assert keep.filter(_record(ServiceUnavailable("no model")))  # 503: a server problem, logged in full
    assert keep.filter(_record(RuntimeError("boom")))
    assert keep.filter(logging.LogRecord("x", logging.INFO, __file__, 1, "started", (), None))
