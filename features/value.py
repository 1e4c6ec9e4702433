"""What a customer's value measures: revenue (the default) or profit.

- `revenue`: the net amount of the transactions in the label window (refunds negative), as always.
- `margin`: the transactions' `margin` column summed over the window (a refund carries its own, usually
  negative, margin) minus the cost-to-serve of the customer's interactions in it (a cost per interaction
  `type`, from training.yaml `value.cost_to_serve`; a type without a cost costs 0).

The target is chosen at training time (training.yaml `value.target`), shipped in the scoring artefact, and
read back by whatever measures value after the fact (serving.outcomes): a served model keeps its own.
Pure data: no clock, no configuration file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

if TYPE_CHECKING:
    from features.history import History

TARGETS = ("revenue", "margin")
MARGIN_COLUMN = "margin"
EXAMPLES = 5


class ValueTargetError(ValueError):
    """A value target the history cannot feed (no margin column, transactions without a margin)."""


@dataclass(frozen=True)
class ValueTarget:
    """Which value the labels, the value model and everything downstream of it measure."""

    target: str = "revenue"
    cost_to_serve: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueTargetError(f"value target {self.target!r}: expected one of {', '.join(TARGETS)}")
        for kind, cost in self.cost_to_serve.items():
            if not math.isfinite(cost) or cost < 0:
                raise ValueTargetError(
                    f"value.cost_to_serve.{kind}: must be a finite number at least 0, got {cost!r}"
                )
        object.__setattr__(self, "cost_to_serve", MappingProxyType(dict(self.cost_to_serve)))

    @property
    def is_margin(self) -> bool:
        return self.target == "margin"

    def costs(self) -> dict[str, float]:
        """The non-zero cost of one interaction of each type (what the labels subtract)."""
        return {k: float(v) for k, v in sorted(self.cost_to_serve.items()) if v}

    def check(self, history: History) -> None:
        """Refuse a history this target cannot be measured on: `margin` needs a margin on every transaction
        (the column is optional in the contract, and a blank value is allowed there)."""
        if not self.is_margin:
            return
        tx = history.transactions
        if MARGIN_COLUMN not in tx.column_names:
            raise ValueTargetError(
                f"value.target: margin needs a '{MARGIN_COLUMN}' column on transactions, and history "
                f"{history.name!r} has none (columns: {', '.join(tx.column_names)}); add it (docs/data.md) "
                "or set value.target: revenue in training.yaml"
            )
        missing = pc.is_null(tx.column(MARGIN_COLUMN))
        count = pc.sum(missing).as_py() or 0
        if count:
            rows = tx.filter(missing).slice(0, EXAMPLES).select(["customer_id", "timestamp"]).to_pylist()
            first = "; ".join(
                f"customer {r['customer_id']} at {r['timestamp']:%Y-%m-%d %H:%M:%S}" for r in rows
            )
            raise ValueTargetError(
                f"value.target: margin: {count:,} transactions of history {history.name!r} have no margin "
                f"(a profit would be silently short) — first: {first}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "cost_to_serve": dict(sorted(self.cost_to_serve.items()))}

    def text(self) -> str:
        """What this value measures, in words (the training run's parameter, the model report, `diamond
        effect`): one wording everywhere."""
        if not self.is_margin:
            return "revenue: net amount (refunds negative)"
        costs = ", ".join(f"{k} {v:g}" for k, v in self.costs().items()) or "none"
        return f"margin minus cost-to-serve per interaction ({costs})"[:500]

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | None) -> ValueTarget:
        """The target an artefact recorded; revenue for one that recorded none (trained before targets)."""
        if not spec:
            return REVENUE
        return cls(str(spec.get("target", "revenue")), dict(spec.get("cost_to_serve") or {}))


REVENUE = ValueTarget()
