"""The HTTP contract: typed requests and responses (pydantic). Invalid payloads are refused with 4xx and the
field path before any scoring code runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Transaction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timestamp: datetime
    amount: Annotated[float, Field(allow_inf_nan=False)]
    quantity: Annotated[float | None, Field(allow_inf_nan=False)] = None
    order_id: str | None = None
    category: str | None = None
    channel: str | None = None


class Interaction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timestamp: datetime
    type: Annotated[str, Field(min_length=1)]
    value: Annotated[float | None, Field(allow_inf_nan=False)] = None


class Customer(BaseModel):
    """A customer to score: by id from the latest batch snapshot, or with recent history inline."""

    model_config = ConfigDict(extra="forbid")
    customer_id: Annotated[str, Field(min_length=1, max_length=200)]
    transactions: list[Transaction] | None = None
    interactions: list[Interaction] | None = None
    cancellations: list[datetime] | None = None
    attributes: dict[str, float | str | None] | None = None

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
