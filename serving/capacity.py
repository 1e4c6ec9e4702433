"""Capacity: what each team can work per period (`alerts.capacity` in serving.yaml), and the queue of the
alerts beyond it.

A team is the tiers and alert kinds it works (serving.config.Team); an alert belongs to the one team that
covers its tier and kind, or to none (then it enters at once, as without capacity). Periods are
`period_days` long, counted from `start`. A team's budget in the period holding time t is used by

- every live alert of the team (open, acknowledged, snoozed): work in hand, whenever it entered, and
- every alert of the team that entered in this period and is resolved since: work done this period.

A new alert of a team with no budget left is stored as `queued`: not delivered, not listed as actionable,
neither treated nor control (serving.control draws its arm before; serving.outcomes starts the treated arm
when it enters). `admit` lets queued alerts enter, highest priority first (serving.alert_rules.priority),
while the team has budget: on every run after the alerts are synced (auto-resolved alerts free their
budget), and when someone resolves an alert (`release`). A queued alert whose customer no longer qualifies
leaves the queue (resolved by `auto`, never entered). Entering sets `entered_at`, opens the alert, gives it
its due time from then and notifies it (version 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.clock import utc_naive
from serving.alert_rules import MODEL_ID
from serving.config import AlertConfig, Capacity
from serving.schema import alerts_table

if TYPE_CHECKING:
    from serving.config import ServingConfig

QUEUED = "queued"
_LIVE = ("open", "acknowledged", "snoozed")
NO_TEAM = "(no team)"
QUEUE_COLUMNS = [
    "team",
    "position",
    "id",
    "customer_id",
    "kind",
    "tier",
    "priority",
    "value_at_risk",
    "playbook",
    "opened_at",
    "next",
]


@dataclass(frozen=True)
class TeamLoad:
    """One team's period: its budget, what is used, what is free, how many wait."""

    team: str
    budget: int
    live: int  # live alerts, work in hand
    done: int  # entered this period and resolved since
    queued: int
    period_start: datetime
    period_end: datetime

    @property
    def used(self) -> int:
        return self.live + self.done

    @property
    def free(self) -> int:
        return max(self.budget - self.used, 0)


def period(when: datetime, capacity: Capacity) -> tuple[datetime, datetime]:
    """The period holding `when`: [start, end), `period_days` long, counted from `capacity.start`."""
    anchor = datetime(capacity.start.year, capacity.start.month, capacity.start.day)
    length = timedelta(days=capacity.period_days)
    n = (utc_naive(when) - anchor) // length
    start = anchor + n * length
    return start, start + length


def loads(alerts: pd.DataFrame, when: datetime, capacity: Capacity) -> dict[str, TeamLoad]:
    """Each team's budget, use and queue at `when`, from `alerts` (columns kind, tier, status, entered_at;
    customers' alerts). Pure."""
    start, end = period(when, capacity)
    team = teams_of(alerts, capacity)
    entered = pd.to_datetime(alerts["entered_at"])
    status = alerts["status"]
    live = status.isin(_LIVE)
    done = (status == "resolved") & (entered >= start) & (entered < end)
    queued = status == QUEUED
    return {
        name: TeamLoad(
            name,
            t.budget,
            int((live & (team == name)).sum()),
            int((done & (team == name)).sum()),
            int((queued & (team == name)).sum()),
            start,
            end,
        )
        for name, t in capacity.teams.items()
    }


def teams_of(alerts: pd.DataFrame, capacity: Capacity) -> pd.Series:
    """The team of each alert (None: no team), by its tier and kind."""
    pairs = list(
        zip(alerts["tier"].astype(object).tolist(), alerts["kind"].astype(str).tolist(), strict=True)
    )
    known: dict[tuple[Any, str], str | None] = {}
    out = []
    for tier, kind in pairs:
        key = (None if _missing(tier) else str(tier), kind)
        if key not in known:
            known[key] = capacity.team_of(*key)
        out.append(known[key])
    return pd.Series(out, index=alerts.index, dtype=object)


def choose(alerts: pd.DataFrame, when: datetime, capacity: Capacity | None) -> pd.DataFrame:
    """The queued alerts that enter at `when`, in the order they enter (highest priority first, then
    oldest id): per team, as many as its free budget; all of them for an alert of no team (or capacity off).
    Pure."""
    queued = alerts[alerts["status"] == QUEUED]
    if queued.empty:
        return queued
    ranked = queued.sort_values(["priority", "id"], ascending=[False, True], kind="stable")
    if capacity is None:
        return ranked
    team = teams_of(ranked, capacity)
    free = {name: load.free for name, load in loads(alerts, when, capacity).items()}
    take = np.zeros(len(ranked), dtype=bool)
    for i, name in enumerate(team):
        if name is None:
            take[i] = True
        elif free[name] > 0:
            free[name] -= 1
            take[i] = True
    return ranked[take]


def queued_on_arrival(fresh: pd.DataFrame, capacity: Capacity | None) -> np.ndarray:
    """Which new alerts are stored queued: those of a team (they enter through `admit`, by rank)."""
    if capacity is None or fresh.empty:
        return np.zeros(len(fresh), dtype=bool)
    return teams_of(fresh, capacity).notna().to_numpy()


def admit(conn: Connection, when: datetime, config: AlertConfig) -> list[tuple[int, int]]:
    """Let queued alerts enter while their team has budget at `when` (`choose`), inside the caller's
    transaction: open, entered and notified now, due from now by their playbook. Returns (alert id,
    version) to notify, in the order they entered."""
    t = alerts_table
    when = utc_naive(when)
    if conn.execute(sa.select(t.c.id).where(t.c.status == QUEUED).limit(1)).first() is None:
        return []
    start = period(when, config.capacity)[0] if config.capacity is not None else when
    cols = (
        t.c.id,
        t.c.kind,
        t.c.tier,
        t.c.status,
        t.c.entered_at,
        t.c.priority,
        t.c.value_at_risk,
        t.c.version,
    )
    query = sa.select(*cols).where(
        t.c.customer_id != MODEL_ID,
        sa.or_(t.c.status.in_((*_LIVE, QUEUED)), t.c.entered_at >= start),
    )
    alerts = pd.DataFrame([tuple(r) for r in conn.execute(query).all()], columns=[c.name for c in cols])
    chosen = choose(alerts, when, config.capacity)
    if chosen.empty:
        return []
    rows = []
    for r in chosen.to_dict("records"):
        book = config.playbook_of(str(r["kind"]), None if _missing(r["tier"]) else str(r["tier"]))
        rows.append(
            {
                "b_id": int(r["id"]),
                "v_due": when + timedelta(hours=book.due_within_hours) if book is not None else None,
                "v_vr": float(r["value_at_risk"]),
            }
        )
    conn.execute(
        sa.update(t)
        .where(t.c.id == sa.bindparam("b_id"), t.c.status == QUEUED)
        .values(
            status="open",
            entered_at=when,
            updated_at=when,
            last_notified_at=when,
            notified_value_at_risk=sa.bindparam("v_vr"),
            due_at=sa.bindparam("v_due"),
        ),
        rows,
    )
    return [(int(i), int(v)) for i, v in zip(chosen["id"], chosen["version"], strict=True)]


def clock(engine: Engine) -> datetime:
    """The store's present for capacity outside a run: the as_of of the latest batch run (the runs' clock,
    so periods and entries agree with them, also for backfilled runs); the wall clock before any run."""
    from core.clock import utc_now
    from serving import store

    run = store.latest_run(engine)
    return utc_naive(run["as_of"]) if run else utc_now()


def rules_of(engine: Engine, config: ServingConfig) -> AlertConfig | None:
    """The alerts section on the tier names of the latest applied run (None: alerts off)."""
    from serving import tier_store
    from training.tiers import DEFAULT_TIERS

    run = tier_store.latest_run(engine)
    return (
        config.alert_rules(run[1] if run else list(config.alerts.tiers or DEFAULT_TIERS))
        if config.alerts
        else None
    )


def release(engine: Engine, config: ServingConfig, when: datetime | None = None) -> int:
    """After someone resolved an alert: let queued alerts enter (`admit`) at `when` (default: `clock`) and
    queue their notifications for every endpoint. Returns how many entered; none with alerts off."""
    rules = rules_of(engine, config)
    if rules is None:
        return 0
    config.endpoints()  # a missing webhook secret is refused before anything enters
    with engine.begin() as conn:
        notify = admit(conn, when or clock(engine), rules)
    enqueue(engine, notify, config)
    return len(notify)


def enqueue(engine: Engine, notify: list[tuple[int, int]], config: ServingConfig) -> None:
    """Queue each (alert id, version) for every endpoint, in one transaction, in `notify`'s order; the
    webhook id carries both, so retries and re-runs never duplicate. Alerts of customers who may not be
    contacted are left out."""
    from serving import alert_rules, alert_store, outbox

    endpoints = config.endpoints()
    if not endpoints or not notify:
        return
    alerts = alert_store.get_alerts(engine, [alert_id for alert_id, _ in notify])
    messages = []
    for alert_id, version in notify:
        alert = alerts[alert_id]
        if alert.get("do_not_contact"):
            continue
        payload = alert_rules.alert_payload(alert)
        for name in endpoints:
            messages.append((name, payload, f"{alert_rules.webhook_id(alert_id, version)}-{name}"))
    outbox.enqueue_many(engine, messages)


def queue(engine: Engine, config: AlertConfig | None, when: datetime) -> tuple[pd.DataFrame, list[TeamLoad]]:
    """The queued alerts per team in the order they would enter (QUEUE_COLUMNS; `next` True for those that
    would enter at `when` with the budget free now), and each team's load at `when`."""
    t = alerts_table
    cols = [t.c[c] for c in ("id", "customer_id", "kind", "tier", "status", "entered_at", "priority")]
    cols += [t.c.value_at_risk, t.c.playbook, t.c.opened_at]
    capacity = config.capacity if config is not None else None
    start = period(when, capacity)[0] if capacity is not None else when
    query = sa.select(*cols).where(
        t.c.customer_id != MODEL_ID, sa.or_(t.c.status.in_((*_LIVE, QUEUED)), t.c.entered_at >= start)
    )
    with engine.connect() as conn:
        alerts = pd.DataFrame([tuple(r) for r in conn.execute(query).all()], columns=[c.name for c in cols])
    waiting = alerts[alerts["status"] == QUEUED].sort_values(["priority", "id"], ascending=[False, True])
    team = teams_of(waiting, capacity) if capacity is not None else pd.Series(None, index=waiting.index)
    waiting = waiting.assign(team=team.fillna(NO_TEAM).to_numpy())
    entering = set(choose(alerts, when, capacity)["id"].astype(int)) if not alerts.empty else set()
    waiting["next"] = waiting["id"].astype(int).isin(entering)
    waiting["position"] = waiting.groupby("team").cumcount() + 1
    found = list(loads(alerts, when, capacity).values()) if capacity is not None else []
    return waiting[QUEUE_COLUMNS].reset_index(drop=True), found


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)
