"""The HTTP contract: typed requests and responses (pydantic). Invalid payloads are refused with 4xx and the
field path before any scoring code runs."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

# Money and counts a CRM can really send; beyond this a float32 model input would overflow to inf.
LIMIT = 1e12
Amount = Annotated[float, Field(allow_inf_nan=False, ge=-LIMIT, le=LIMIT, strict=True)]
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
MAX_CUSTOMERS = 1000  # the documented cap per request; serving.yaml's max_customers may only lower it
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})  # the health probes: the only routes without a key


_TIME = TypeAdapter(datetime)
RESERVED = frozenset({"customer_id"})  # attribute names that would overwrite a column of the customer


def _text_time(value: object) -> str:
    """Timestamps are ISO 8601 text (a bare date is midnight), as in history files; never epoch numbers.
    The text is kept as sent: the history contract reads it as it reads a file (features.history), so the
    same rules hold, e.g. no mix of values with and without a UTC offset."""
    if isinstance(value, datetime):
        return value.isoformat()
    if not isinstance(value, str) or value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("a timestamp must be ISO 8601 text, e.g. 2024-06-30 or 2024-06-30T14:05:00Z")
    try:
        _TIME.validate_python(value.strip())
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"]) from None
    return value


Timestamp = Annotated[
    str,
    BeforeValidator(_text_time),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2024-06-30T14:05:00Z"]}),
]


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
    transactions: Annotated[list[Transaction], Field(min_length=1)] | None = None
    interactions: list[Interaction] | None = None
    cancellations: list[Timestamp] | None = None
    attributes: dict[str, Amount | str | None] | None = None

    @field_validator("attributes")
    @classmethod
    def _names(cls, v: dict[str, float | str | None] | None) -> dict[str, float | str | None] | None:
        """Names that would take the place of the customer's own columns refused: `customer_id` (it once
        overwrote the id) and names starting with `__` (the history contract's working columns)."""
        for name in v or {}:
            if name.strip() in RESERVED or name.strip().startswith("__"):
                raise ValueError(
                    f"attribute name {name[:60]!r} is reserved: use a name other than {sorted(RESERVED)} "
                    "that does not start with __"
                )
        return v

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
    # which model scored the customer: contract_hazard (under contract: the cancellation hazard),
    # contract_booster (under contract: the churn booster on H-day cancellations) or purchase_silence
    # (everybody else); null when not found
    churn_model: str | None = None
    # time to churn (training.curve): P(churned by 30, 60, 90, 180 days), non-decreasing, P(churn over H) at
    # H; the expected days to churn given churn within H. Null where undefined and for older models.
    churn_30d: float | None = None
    churn_60d: float | None = None
    churn_90d: float | None = None
    churn_180d: float | None = None
    days_to_churn: float | None = None
    source: str | None = None  # snapshot (batch features as of) | inline
    as_of: str | None = None
    model_version: str | None = None


class ScoreResponse(BaseModel):
    model_version: str
    feature_set: str
    horizon_days: int
    scores: list[Score]


def unique_ids(customers: list[Customer]) -> list[Customer]:
    dupes = sorted(i for i, n in Counter(c.customer_id for c in customers).items() if n > 1)
    if dupes:
        raise ValueError(f"customers: duplicate customer_id {dupes[:5]}")
    return customers


class ScoreRequest(BaseModel):
    """POST /score's body: customers by id or inline (each id once), and as_of for inline histories."""

    model_config = ConfigDict(extra="forbid")
    customers: Annotated[
        list[Customer],
        Field(
            min_length=1,
            max_length=MAX_CUSTOMERS,
            description="each customer_id at most once (ids are compared after trimming spaces)",
        ),
    ]
    as_of: str | None = Field(
        None,
        description="ISO 8601 date or time (a bare date: the end of that day); inline histories are scored "
        "as of it (default: their last event) and may have no event after it",
    )

    @field_validator("customers")
    @classmethod
    def _unique(cls, v: list[Customer]) -> list[Customer]:
        return unique_ids(v)


def error_body(raw: bytes) -> dict[str, str]:
    """Any error body the framework wrote, as the documented object: a string `error` and a string `detail`
    listing each invalid field as `path: message` (BentoML 1.4 writes a 1-element array for errors raised by
    the service, and a list of dicts as pydantic's detail)."""
    try:
        body: Any = json.loads(raw or b"{}")
    except ValueError:
        body = {"error": raw.decode("utf-8", "replace")[:1000]}
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        body = {"error": str(body)}
    detail = body.get("detail")
    if isinstance(detail, list):
        detail = "; ".join(_field_error(d) for d in detail)
    out = {"error": str(body.get("error") or detail or "error")}
    if detail:
        out["detail"] = str(detail)
    return out


def _field_error(d: object) -> str:
    if not isinstance(d, dict):
        return str(d)
    return f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg', '')}"
