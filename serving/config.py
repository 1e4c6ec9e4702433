"""Serving configuration: `serving.yaml` (shared, in git), read once into typed sections: the service's own
settings, tier hysteresis (`tiers`), retention alerts (`alerts`), webhook delivery (`webhooks`) and the drift
watch (`drift`). The environment overrides any key (core.config: DIAMOND_SERVING_PORT, DIAMOND_SERVING_DRIFT__
PSI_ALERT, ...; DIAMOND_STORE_URL for store_url) and holds every secret: API keys, webhook secrets and secret
URLs, the dashboard session key. Nothing here runs at import time."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from core.config import ConfigError, FileSettings, OrEmpty, Section, describe, invalid, load
from serving.api import MAX_CUSTOMERS

if TYPE_CHECKING:
    from serving.delivery import Endpoint

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "serving.yaml"
STORE_ENV, CONFIG_ENV, SESSION_ENV = (
    "DIAMOND_STORE_URL",
    "DIAMOND_SERVING_CONFIG",
    "DIAMOND_SESSION_SECRET",
)
DEFAULT_DEMOTE_AFTER = 3
Watch = Literal["features", "scores"]
WATCHABLE: tuple[Watch, ...] = get_args(Watch)


def _listed(value: Any) -> Any:
    """null is an empty list; a single name is a list of one."""
    return () if value is None else [value] if isinstance(value, str) else value


Listed = BeforeValidator(_listed)


class TierConfig(Section):
    """`tiers:` hysteresis on the model's tier names (serving.hysteresis)."""

    demote_after: Annotated[int, Field(ge=1)] = DEFAULT_DEMOTE_AFTER  # runs below the tier before a demotion
    order: tuple[str, ...] | None = None  # best first; None: the model artefact's tier names

    @field_validator("order")
    @classmethod
    def _distinct(cls, order: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if order is not None and not order:
            raise ValueError("must be a non-empty list of tier names, best first")
        if order is not None and len(set(order)) != len(order):
            raise ValueError(f"repeats a tier name: {list(order)}")
        return order


Share = Annotated[float, Field(ge=0.0, lt=1.0)]


WIN_BACK = "win-back"
"""The kind of the win-back rule: lapsed customers of high past value, saved when they buy again."""


class Playbook(Section):
    """What the CRM team does for an alert on a customer of one tier, and how soon."""

    text: str
    due_within_hours: float
    cost: Annotated[float, Field(ge=0.0)] | None = None  # per alert worked, for `diamond effect`'s ROI


class UpliftConfig(Section):
    """`alerts.uplift:` when and how the uplift ranking takes over from P x value (training.uplift,
    serving.uplift_rank; docs/effect.md, Uplift ranking)."""

    min_outcomes: Annotated[int, Field(ge=20)] = 400  # mature treated + control outcomes before a first fit
    learner: Literal["t", "x"] = "x"  # the meta-learner registered (the other is measured beside it)
    min_qini_gain: float = 0.0  # its Qini on later outcomes must beat the champion's and P x value's by this
    outcome: Literal["saved", "value"] = "saved"  # learn the change in P(saved), or in the value kept
    # shrink tau toward "the effect is proportional to the risk" (the P x value ranking) with the weight
    # prior_outcomes / (outcomes + prior_outcomes); 0: no shrinkage
    prior_outcomes: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 100_000.0
    # the XGBoost learners, regularised for a few thousand noisy outcomes (training.uplift.fit)
    max_depth: Annotated[int, Field(ge=1, le=10)] = 2
    min_child_weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 50.0
    eta: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    reg_lambda: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 10.0
    rounds: Annotated[int, Field(ge=1, le=5000)] = 100

    @property
    def params(self) -> dict[str, float]:
        """The XGBoost parameters of the learners."""
        return {
            "max_depth": self.max_depth,
            "min_child_weight": self.min_child_weight,
            "eta": self.eta,
            "lambda": self.reg_lambda,
        }


class Rule(Section):
    """One alert rule: it fires for a customer when every condition given (not None) holds."""

    kind: Annotated[str, Field(min_length=1, max_length=64)]
    min_tier: str | None = None  # tier at or above this one
    min_churn_probability: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    tier_drop: Annotated[int, Field(ge=1)] | None = None  # dropped this many tiers since the last run
    top_k_value_at_risk: Annotated[int, Field(ge=1)] | None = None  # among the K highest value at risk
    # win-back (kind `win-back` only): lapsed customers of high past value (serving.winback)
    lapsed_days: Annotated[int, Field(strict=True, ge=1, le=36_500)] | None = None  # no purchase this long
    min_past_value: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None  # net spend so far
    past_min_tier: str | None = None  # at this tier or above at some earlier run (the tier history)
    # held-out share of this rule's would-be alerts (serving.control): one share, or one per tier (a tier
    # not named takes `alerts.control_share`); None: `alerts.control_share`
    control_share: Share | dict[str, Share] | None = None
    playbook: Playbook | None = None  # this rule's own playbook, for every tier; None: the tier's

    @model_validator(mode="after")
    def _some_condition(self) -> Rule:
        conditions = (self.min_tier, self.min_churn_probability, self.tier_drop, self.top_k_value_at_risk)
        lapse = (self.lapsed_days, self.min_past_value, self.past_min_tier)
        if self.kind == WIN_BACK:
            if self.lapsed_days is None:
                raise ValueError(f"the {WIN_BACK} rule needs lapsed_days (no purchase for that many days)")
            if self.min_past_value is None and self.past_min_tier is None:
                raise ValueError(
                    f"the {WIN_BACK} rule needs min_past_value or past_min_tier (what high past value is)"
                )
        elif any(c is not None for c in lapse):
            raise ValueError(
                f"lapsed_days, min_past_value and past_min_tier belong to the {WIN_BACK} rule, "
                f"not {self.kind!r}"
            )
        if all(c is None for c in (*conditions, *lapse)):
            raise ValueError("no condition given; it would alert on every customer")
        return self

    @property
    def win_back(self) -> bool:
        """The win-back rule: judged by reactivation (serving.outcomes)."""
        return self.kind == WIN_BACK


class Team(Section):
    """One team of `alerts.capacity`: the alerts it works (its tiers and alert kinds; None: all of them) and
    how many it can take on in a period."""

    budget: Annotated[int, Field(strict=True, ge=0, le=10_000_000)]  # alerts a period; 0: everything waits
    tiers: Annotated[tuple[str, ...] | None, Listed, Field(min_length=1)] = None
    kinds: Annotated[tuple[str, ...] | None, Listed, Field(min_length=1)] = None

    @field_validator("tiers", "kinds")
    @classmethod
    def _distinct_names(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if names is not None and len(set(names)) != len(names):
            raise ValueError(f"repeats a name: {list(names)}")
        return names

    def covers(self, tier: str | None, kind: str) -> bool:
        """Whether an alert of this tier and kind is this team's."""
        return (self.tiers is None or tier in self.tiers) and (self.kinds is None or kind in self.kinds)


TeamName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")]


class Capacity(Section):
    """`alerts.capacity`: what each team can work per period (serving.capacity). An alert of a team that has
    used its budget waits in the team's queue (status `queued`), by priority, until budget frees."""

    period_days: Annotated[int, Field(strict=True, ge=1, le=366)] = 7
    start: date = date(2001, 1, 1)  # periods are counted from this day (a Monday: 7-day periods are weeks)
    teams: Annotated[dict[TeamName, Team], Field(min_length=1)]

    @model_validator(mode="after")
    def _disjoint(self) -> Capacity:
        names = list(self.teams)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                x, y = self.teams[a], self.teams[b]
                tiers = x.tiers is None or y.tiers is None or set(x.tiers) & set(y.tiers)
                kinds = x.kinds is None or y.kinds is None or set(x.kinds) & set(y.kinds)
                if tiers and kinds:
                    invalid(
                        Capacity,
                        [(("teams", b), f"overlaps team {a!r}: an alert may belong to one team only", b)],
                    )
        return self

    def team_of(self, tier: str | None, kind: str) -> str | None:
        """The team an alert of this tier and kind belongs to; None: no team (never queued)."""
        return next((name for name, t in self.teams.items() if t.covers(tier, kind)), None)


class AlertConfig(Section):
    """`alerts:` retention alert rules and playbooks by tier (serving.alert_rules). The tier names they use
    are checked against `tiers` when given, and against the served model's tier names by `for_tiers`."""

    rules: Annotated[tuple[Rule, ...], Listed] = ()
    playbooks: Annotated[dict[str, Playbook | None], OrEmpty] = Field(default_factory=dict)  # None: no action
    tiers: tuple[str, ...] | None = None  # best first; None: the model's (else training.tiers.DEFAULT_TIERS)
    cooldown_hours: Annotated[float, Field(ge=0)] = 72.0  # a live alert is re-notified at most this often...
    renotify_margin: Annotated[float, Field(ge=0)] = 0.25  # ...unless its value at risk grew by this fraction
    resolve_margin: Annotated[float, Field(ge=0)] = 0.05  # open until churn < the threshold minus this
    control_share: Share = 0.0  # would-be alerts held out as controls (serving.control); per rule: Rule
    uplift: Annotated[UpliftConfig, OrEmpty] = UpliftConfig()

    capacity: Capacity | None = None  # None: every alert enters at once (serving.capacity)

    @model_validator(mode="after")
    def _consistent(self) -> AlertConfig:
        kinds = [r.kind for r in self.rules]
        if len(set(kinds)) != len(kinds):
            invalid(AlertConfig, [(("rules",), f"kinds must be distinct, got {kinds}", kinds)])
        if self.capacity is not None:
            invalid(
                AlertConfig,
                [
                    (("capacity", "teams", name, "kinds"), f"{k!r} is not the kind of a rule ({kinds})", k)
                    for name, team in self.capacity.teams.items()
                    for k in team.kinds or ()
                    if k not in kinds
                ],
            )
        if self.tiers is not None:
            invalid(AlertConfig, self._tier_problems(self.tiers))
        return self

    def for_tiers(self, order: Sequence[str]) -> AlertConfig:
        """These settings on the served model's tier names, best first (rules and playbooks checked against
        them; a ValidationError names the key)."""
        tiers = tuple(order)
        invalid(AlertConfig, self._tier_problems(tiers))
        return self.model_copy(update={"tiers": tiers})

    def _tier_problems(self, tiers: tuple[str, ...]) -> list[tuple[tuple[str | int, ...], str, Any]]:
        if not tiers or len(set(tiers)) != len(tiers):
            return [(("tiers",), "must be distinct tier names, best first", list(tiers))]
        names = ", ".join(tiers)
        return (
            [
                (("rules", i, key), f"{value!r} is not one of {names}", value)
                for i, r in enumerate(self.rules)
                for key, value in (("min_tier", r.min_tier), ("past_min_tier", r.past_min_tier))
                if value is not None and value not in tiers
            ]
            + [
                (("playbooks", t), f"{t!r} is not one of {names}", t)
                for t in self.playbooks
                if t not in tiers
            ]
            + [
                (("rules", i, "control_share", t), f"{t!r} is not one of {names}", t)
                for i, r in enumerate(self.rules)
                if isinstance(r.control_share, dict)
                for t in r.control_share
                if t not in tiers
            ]
            + [
                (("capacity", "teams", name, "tiers"), f"{t!r} is not one of {names}", t)
                for name, team in (self.capacity.teams.items() if self.capacity else ())
                for t in team.tiers or ()
                if t not in tiers
            ]
        )

    def playbook_of(self, kind: str, tier: str | None) -> Playbook | None:
        """The playbook of an alert: its rule's own, else its tier's (None: nothing to do)."""
        rule = next((r for r in self.rules if r.kind == kind), None)
        if rule is not None and rule.playbook is not None:
            return rule.playbook
        return self.playbooks.get(tier) if tier is not None else None

    def control_shares(self) -> dict[tuple[str, str], float]:
        """The held-out share for each (rule kind, tier) on the bound tier names (serving.control)."""
        tiers = self.tiers or ()
        out = {}
        for r in self.rules:
            for t in tiers:
                given = r.control_share
                share = given.get(t) if isinstance(given, dict) else given
                out[(r.kind, t)] = self.control_share if share is None else float(share)
        return out


class EndpointConfig(Section):
    """One webhook receiver; its secret (and a secret URL) come from the environment variables named."""

    name: Annotated[str, Field(min_length=1)]
    url: str | None = None
    url_env: str | None = None  # the variable that holds the URL, for URLs that are secrets (e.g. Slack's)
    secret_env: Annotated[str, Field(min_length=1)]  # the variable that holds the signing secret
    format: Literal["json", "slack"] = "json"
    timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _a_url(self) -> EndpointConfig:
        if not self.url and not self.url_env:
            raise ValueError(f"endpoint {self.name!r} needs a url (or url_env)")
        return self


class WebhookConfig(Section):
    """`webhooks:` where alerts are delivered and how failed deliveries are retried (serving.outbox)."""

    max_attempts: Annotated[int, Field(ge=1)] = 8  # then the delivery goes to the dead letters
    base_delay_s: Annotated[float, Field(ge=0)] = 2.0  # exponential backoff with full jitter...
    max_delay_s: Annotated[float, Field(ge=0)] = 3600.0  # ...capped here
    lease_s: Annotated[float, Field(gt=0)] = 300.0  # a claim by a process that died is retried after this
    endpoints: Annotated[tuple[EndpointConfig, ...], Listed] = ()


class DriftConfig(Section):
    """`drift:` the drift watch on every batch run (serving.monitoring)."""

    enabled: bool = True
    psi_alert: Annotated[float, Field(gt=0)] = 0.25  # a column at or over this PSI has drifted
    min_features: Annotated[int, Field(ge=1)] = 1  # alert when this many inputs drifted (or any score)
    watch: Annotated[tuple[Watch, ...], Listed, Field(min_length=1)] = WATCHABLE  # features, scores, or both
    top: Annotated[int, Field(ge=1)] = 5  # drifted columns named in the alert, worst first


class InlineLimits(Section):
    """`inline:` caps on customers sent with their history, checked before any work (serving.online): one
    request of 40,000 attributes once took 46 s."""

    max_attributes: Annotated[int, Field(ge=1)] = 100  # attributes per customer
    max_events_per_customer: Annotated[int, Field(ge=1)] = 100_000  # purchases + interactions + cancellations
    max_events: Annotated[int, Field(ge=1)] = 100_000  # inline events per request, all customers


class AuthConfig(Section):
    """`auth:` dashboard sessions and the throttle on failed sign-ins (serving.access, serving.webauth)."""

    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 8.0  # a working day
    max_failures: Annotated[int, Field(ge=1)] = 10  # wrong keys from one address within window_s...
    window_s: Annotated[float, Field(gt=0)] = 300.0  # ...and it is refused (429) until the oldest expires


class ConsentConfig(Section):
    """`consent:` the customers' attribute that says they may not be contacted (serving.consent): their
    alerts stay visible, marked "do not contact", and are never sent to a webhook."""

    attribute: str | None = None  # a column of the history's customers table; None: everyone may be contacted
    meaning: Literal["opt_out", "opt_in"] = "opt_out"  # opt_out: true stops contact; opt_in: only true allows


class ServingConfig(FileSettings):
    """serving.yaml. Every key is documented there."""

    model_config = SettingsConfigDict(env_prefix="DIAMOND_SERVING_")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1)] = 3000
    model_alias: str = "champion"
    poll_s: float = 30.0
    max_customers: Annotated[int, Field(ge=1)] = 1000
    max_body_mb: Annotated[float, Field(gt=0)] = 16.0  # larger bodies: 413 before any parsing
    reasons: Annotated[int, Field(ge=1)] = 3
    workers: Annotated[int, Field(ge=1, le=64)] = 1  # service processes (`diamond serve`); one per core
    inline: Annotated[InlineLimits, OrEmpty] = InlineLimits()
    cold_start_min_purchase_days: int = 2
    store_url: Annotated[str, Field(validation_alias=STORE_ENV)] = "sqlite:///.diamond/diamond.db"
    scores_dir: str = ".diamond/scores"
    tiers: Annotated[TierConfig, OrEmpty] = TierConfig()
    alerts: Annotated[AlertConfig | None, BeforeValidator(lambda v: v or None)] = None  # None: no alerts
    webhooks: Annotated[WebhookConfig, OrEmpty] = WebhookConfig()
    drift: Annotated[DriftConfig, OrEmpty] = DriftConfig()
    auth: Annotated[AuthConfig, OrEmpty] = AuthConfig()
    consent: Annotated[ConsentConfig, OrEmpty] = ConsentConfig()

    @field_validator("max_customers")
    @classmethod
    def _documented_limit(cls, value: int) -> int:
        if value > MAX_CUSTOMERS:
            raise ValueError(f"must be at most {MAX_CUSTOMERS} (the documented limit), got {value}")
        return value

    @field_validator("store_url")
    @classmethod
    def _absolute_sqlite(cls, url: str) -> str:
        """A relative SQLite path resolves against the working directory (a `file:` URI, e.g. read-only
        `sqlite:///file:/path/diamond.db?mode=ro&uri=true`, is left as it is)."""
        if url.startswith("sqlite:///") and not url.startswith(("sqlite:////", "sqlite:///file:")):
            return f"sqlite:///{Path(url.removeprefix('sqlite:///')).resolve()}"
        return url

    @field_validator("scores_dir")
    @classmethod
    def _absolute_dir(cls, folder: str) -> str:
        return str(Path(folder).resolve())

    @model_validator(mode="after")
    def _some_rule(self) -> ServingConfig:
        if self.alerts is not None and not self.alerts.rules:
            invalid(ServingConfig, [(("alerts", "rules"), "at least one rule is needed", [])])
        return self

    @classmethod
    def load(cls, path: str | Path | None = None) -> ServingConfig:
        """serving.yaml (or `path`, or $DIAMOND_SERVING_CONFIG), the environment on top."""
        return load(cls, path, default=DEFAULT_PATH, env=CONFIG_ENV, what="serving config")

    def alert_rules(self, order: Sequence[str]) -> AlertConfig | None:
        """The alerts section on the served model's tier names, best first; None when alerts are off."""
        if self.alerts is None:
            return None
        try:
            return self.alerts.for_tiers(order)
        except ValidationError as exc:
            raise ConfigError(describe(exc, self.file or "serving.yaml", AlertConfig, ("alerts",))) from None

    def endpoints(self) -> dict[str, Endpoint]:
        """The webhook endpoints, with the secrets and secret URLs read from the variables they name."""
        from serving.delivery import Endpoint

        out = {}
        for i, hook in enumerate(self.webhooks.endpoints):
            where = f"{self.file or 'serving.yaml'}: webhooks.endpoints.{i}"
            url = hook.url or os.environ.get(hook.url_env or "", "")
            if not url:
                raise ConfigError(
                    f"{where}.url_env: set the URL of endpoint {hook.name!r} in ${hook.url_env}"
                )
            secret = os.environ.get(hook.secret_env, "")
            if not secret:
                raise ConfigError(
                    f"{where}.secret_env: set the secret of endpoint {hook.name!r} in ${hook.secret_env}"
                )
            out[hook.name] = Endpoint(hook.name, url, secret, hook.format, hook.timeout_s)
        return out


_PROCESS_SECRET: list[bytes] = []


def session_secret() -> bytes:
    """The key that signs dashboard sessions: $DIAMOND_SESSION_SECRET (`diamond serve` sets a fresh random
    one for its workers when unset), else a random one for this process. Restarting without the variable
    set logs everyone out, which is the safe default."""
    if value := os.environ.get(SESSION_ENV, "").strip():
        return hashlib.sha256(value.encode("utf-8")).digest()
    if not _PROCESS_SECRET:
        _PROCESS_SECRET.append(secrets.token_bytes(32))
    return _PROCESS_SECRET[0]
