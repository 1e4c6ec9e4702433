"""Named, versioned feature sets. A set never changes once a model has used it: a new list is a new version
(core_v2 = core_v1 + the families in CORE_V2_FAMILIES, core_v3 = core_v2 + CORE_V3_FAMILIES; core_v1 stays as
it was and is still served).

Every model records the set's key and the columns it resolved to on its training history; scoring builds
the same set and refuses a mismatch (`features.build.check_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass

from features.definitions import REGISTRY


class FeatureSetError(ValueError):
    """An unknown feature set, or rows that do not match the set a model was trained on."""


@dataclass(frozen=True)
class FeatureSet:
    """A named list of registered features, plus (optionally) every static customer attribute."""

    name: str
    version: int
    features: tuple[str, ...]
    attributes: bool = False  # include each customers column as attr_<column>
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}_v{self.version}"


_RFM = (
    "recency_days", "tenure_days", "n_purchases", "frequency_days",
    "monetary_sum", "monetary_mean", "monetary_max", "monetary_std", "monetary_first", "monetary_last",
    "net_amount", "refund_count", "refund_amount",
    "purchases_30d", "amount_30d", "purchases_90d", "amount_90d",
    "purchases_180d", "amount_180d", "purchases_365d", "amount_365d",
    "trend_purchases_90d", "trend_amount_90d",
    "ipt_mean_days", "ipt_std_days", "ipt_last_days", "recency_over_ipt",
)  # fmt: skip
_BTYD = ("btyd_expected_purchases", "btyd_p_alive", "btyd_p_no_purchase", "btyd_expected_spend")
# frozen here (not imported from definitions) so that a new interaction type cannot change core_v1
_TYPES_V1 = ("support_ticket", "complaint", "campaign_sent", "campaign_click", "email_open", "login", "visit")
_INTERACTIONS = tuple(f"{kind}_{w}" for kind in _TYPES_V1 for w in ("30d", "90d", "365d")) + tuple(
    f"days_since_{kind}" for kind in _TYPES_V1
)

_CORE_V1 = (*_RFM, "n_categories", "n_channels", *_INTERACTIONS, "signup_tenure_days", *_BTYD)
# core_v2 = core_v1 + these families, each frozen here by name (docs/features.md, bench/ablation.md)
_VALUE_TYPES_V2 = ("support_ticket", "complaint", "login", "visit")
CORE_V2_FAMILIES: dict[str, tuple[str, ...]] = {
    "interaction_value": tuple(
        f"{kind}_value_{stat}" for kind in _VALUE_TYPES_V2 for stat in ("mean", "last")
    ),
    "tickets": ("support_ticket_repeat_365d", "support_ticket_gap_last_days", "support_ticket_first_days"),
    "complaints": ("complaint_after_last_purchase",),
    "campaign_response": (
        "campaign_click_rate", "campaign_open_rate", "campaign_conversions_365d", "campaign_conversion_rate",
    ),
    "engagement_trend": ("engagement_90d", "engagement_trend_90d", "engagement_recent_share_180d"),
    "category_preferences": ("top_category_share", "category_entropy", "new_categories_90d"),
}  # fmt: skip

# core_v3 = core_v2 + the margin family (histories whose transactions have a margin; docs/features.md)
CORE_V3_FAMILIES: dict[str, tuple[str, ...]] = {"margin": ("margin_rate", "margin_mean", "margin_90d")}
_CORE_V2 = (*_CORE_V1, *(name for family in CORE_V2_FAMILIES.values() for name in family))

FEATURE_SETS: dict[str, FeatureSet] = {
    s.key: s
    for s in (
        FeatureSet(
            "core",
            1,
            _CORE_V1,
            attributes=True,
            description="Every family: RFM, windows, trend, refunds, diversity, inter-purchase time, "
            "interactions per type, customer attributes, BTYD.",
        ),
        FeatureSet(
            "core",
            2,
            _CORE_V2,
            attributes=True,
            description="core_v1 plus interaction values, support tickets, complaints against purchases, "
            "campaign response, engagement trend and category preferences.",
        ),
        FeatureSet(
            "core",
            3,
            (*_CORE_V2, *(name for family in CORE_V3_FAMILIES.values() for name in family)),
            attributes=True,
            description="core_v2 plus the customer's margin: margin rate, mean margin of a purchase, "
            "margin of the last 90 days (histories with a margin column; features.value).",
        ),
        FeatureSet("rfm", 1, (*_RFM, *_BTYD), description="Transactions only: RFM, windows, trend, BTYD."),
    )
}
DEFAULT_FEATURE_SET = "core_v1"


def get_feature_set(key: str) -> FeatureSet:
    """The feature set named `key` (e.g. 'core_v1'); a clear error listing the known ones otherwise."""
    try:
        return FEATURE_SETS[key]
    except KeyError:
        raise FeatureSetError(f"unknown feature set {key!r}; known: {', '.join(FEATURE_SETS)}") from None


def _check_registry() -> None:
    for fs in FEATURE_SETS.values():
        missing = [f for f in fs.features if f not in REGISTRY]
        if missing:
            raise FeatureSetError(f"feature set {fs.key} names unregistered features {missing}")
