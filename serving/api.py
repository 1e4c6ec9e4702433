"""The HTTP contract: typed requests and responses (pydantic). Invalid payloads are refused with 4xx and the
field path before any scoring code runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator

# Money and counts a CRM can really send; beyond this a float32 model input would overflow to inf.
LIMIT = 1e12
Amount = Annotated[float, Field(allow_inf_nan=False, ge=-LIMIT, le=LIMIT, strict=True)]
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _text_time(value: object) -> object:
    """Timestamps are ISO 8601 text (a bare date is midnight), as in history files; never epoch numbers."""
    if not isinstance(value, str | datetime):
        raise ValueError("a timestamp must be ISO 8601 text, e.g. 2024-06-30 or 2024-06-30T14:05:00Z")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_text_time)]


class Transaction(BaseModel):
    model_config = ConfigDict(extra="forbid")  # amounts are strict: no booleans; timestamps are text
    timestamp: Timestamp
    amount: Amount
    quantity: Amount | None = None
    order_id: str | None = None
    category: str | None = None
    channel: str | None = None


class Interaction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timestamp: Timestamp
    type: Annotated[str, Field(min_length=1)]
    value: Amount | None = None


class Customer(BaseModel):
    """A customer to score: by id from the latest batch snapshot, or with recent history inline."""

    model_config = ConfigDict(extra="forbid")
    customer_id: Id  # surrounding spaces are trimmed, as the history contract trims ids
    transactions: list[Transaction] | None = None
    interactions: list[Interaction] | None = None
    cancellations: list[Timestamp] | None = None
    attributes: dict[str, Amount | str | None] | None = None

    @property
    def inline(self) -> bool:
        return self.transactions is not None


class Reason(BaseModel):
    feature: str
    value: float | str | None
    direction: str
    contribution: float
    text: str


class Score(BaseModel):
    customer_id: str
    found: bool
    error: str | None = None
    churn_probability: float | None = None
    predicted_value: float | None = None
    horizon_days: int | None = None
    value_at_risk: float | None = None
    tier: str | None = None
    rfm_segment: str | None = None
    reasons: list[Reason] = []
    cold_start: bool | None = None
    source: str | None = None  # snapshot (batch features as of) | inline
    as_of: str | None = None
    model_version: str | None = None


class ScoreResponse(BaseModel):
    model_version: str
    feature_set: str
    horizon_days: int
    scores: list[Score]


def unique_ids(customers: list[Customer]) -> list[Customer]:
    ids = [c.customer_id for c in customers]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"customers: duplicate customer_id {dupes[:5]}")
    return customers


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customers: list[Customer]
    as_of: datetime | None = None  # inline histories: score as of this time (default: their last event)

    @field_validator("customers")
    @classmethod
    def _unique(cls, v: list[Customer]) -> list[Customer]:
        return unique_ids(v)
