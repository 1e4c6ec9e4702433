"""Control groups: a share of the would-be alerts of each rule and tier is held out, recorded as a control
in `alert_controls`, and never becomes an alert, so it is neither delivered nor shown as actionable. What
happens to the controls (serving.outcomes) is what would have happened to the alerts without anyone acting:
the comparison `diamond effect` makes (serving.effect).

Assignment is deterministic: a would-be alert for customer c of rule k that a run at as_of T would open is
held out when `unit(c, k, T)` (a SHA-256 of the three, read as a number in [0, 1)) is below the share of
(k, the customer's tier) (`alerts.control_share`, per rule `rules[i].control_share`). Re-running the same
as_of draws the same numbers. Once held out, the control stays live, and the customer in the control arm,
for as long as the would-be alert would have stayed live (it fires, or holds within the resolve margin);
while it is live the rule opens no alert for that customer and kind. A customer with a live alert stays
treated: only a newly opening alert is ever drawn.

With capacity queues (serving.capacity) the arm is drawn first, when the alert would open: a held-out one
is a control from that run, as without queues; the rest become alerts, some of which wait in their team's
queue. A queued alert is in neither arm: it enters the treated arm when it enters the team's list
(`entered_at`, the start of its outcome window), and if it leaves the queue without entering it is never
treated. A customer with a queued alert is not drawn again while it waits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.clock import utc_naive
from serving.alert_rules import MODEL_ID
from serving.alert_store import WAITING
from serving.config import AlertConfig
from serving.schema import alert_controls_table, alerts_table

ARMS = ("treated", "control")


@dataclass(frozen=True)
class HoldOut:
    """What one run did to the control arm: controls opened, kept live, closed."""

    opened: int
    kept: int
    closed: int


def unit(customer_id: str, kind: str, opened_at: datetime) -> float:
    """The assignment number in [0, 1) of a would-be alert: the first 8 bytes of SHA-256 over rule kind,
    customer id and the opening run's as_of (ISO 8601, to the second), divided by 2**64."""
    return _unit(customer_id, kind, f"{utc_naive(opened_at):%Y-%m-%dT%H:%M:%S}")


def _unit(customer_id: str, kind: str, stamp: str) -> float:
    text = f"{kind}\x1f{customer_id}\x1f{stamp}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def drawn(customer_ids: pd.Series, kinds: pd.Series, opened_at: datetime, shares: np.ndarray) -> np.ndarray:
    """True where a would-be alert opening at `opened_at` is held out: its `unit` is below its share."""
    stamp = f"{utc_naive(opened_at):%Y-%m-%dT%H:%M:%S}"  # once: formatting a time costs more than hashing
    u = np.fromiter(
        (_unit(str(c), str(k), stamp) for c, k in zip(customer_ids.tolist(), kinds.tolist(), strict=True)),
        dtype=np.float64,
        count=len(customer_ids),
    )
    return u < shares


def hold_out(
    engine: Engine, as_of: datetime, candidates: pd.DataFrame, config: AlertConfig
) -> tuple[pd.DataFrame, HoldOut]:
    """Split a run's candidate alerts (serving.alert_rules.evaluate) into the ones left for the alert store
    and the control arm, in one transaction. Returned: the candidates without the control rows, and what
    was done. A candidate row whose (customer, kind) has a live control updates it and stays out; a firing
    row without a live alert or control is drawn (`drawn`); a live control without a candidate row (its
    would-be alert would have been resolved) is closed at `as_of`."""
    when = utc_naive(as_of)
    shares_by = config.control_shares()
    c = alert_controls_table
    with engine.begin() as conn:
        live = {
            (str(r.customer_id), str(r.kind)): int(r.id)
            for r in conn.execute(sa.select(c.c.id, c.c.customer_id, c.c.kind).where(c.c.closed_at.is_(None)))
        }
        if not live and not any(s > 0 for s in shares_by.values()):
            return candidates, HoldOut(0, 0, 0)  # controls are off and none is live
        ids = candidates["customer_id"].astype(str)
        kinds = candidates["kind"].astype(str)
        keys = pd.MultiIndex.from_arrays([ids, kinds])
        in_control = keys.isin(list(live)) if live else np.zeros(len(candidates), dtype=bool)
        share = np.array(
            [
                shares_by.get((k, str(t)), 0.0)
                for k, t in zip(kinds.tolist(), candidates["tier"].astype(object).tolist(), strict=True)
            ],
            dtype=np.float64,
        )
        may = (
            candidates["fires"].to_numpy(dtype=bool)
            & ~in_control
            & (share > 0)
            & (ids != MODEL_ID).to_numpy()
        )
        new = np.zeros(len(candidates), dtype=bool)
        if may.any():
            idx = np.flatnonzero(may)
            new[idx] = drawn(ids.iloc[idx], kinds.iloc[idx], when, share[idx])
        if new.any():  # a customer with a live alert stays treated
            a = alerts_table
            alerted = {
                (str(x), str(y))
                for x, y in conn.execute(
                    sa.select(a.c.customer_id, a.c.kind).where(
                        a.c.status.in_(WAITING), a.c.customer_id.in_(sorted(set(ids[new])))
                    )
                )
            }
            if alerted:
                new &= ~keys.isin(list(alerted))
        rows = candidates.assign(_share=share)
        if new.any():
            fresh = rows[new]
            conn.execute(
                sa.insert(c),
                [
                    {
                        "customer_id": str(r["customer_id"]),
                        "kind": str(r["kind"]),
                        "tier": None if pd.isna(r["tier"]) else str(r["tier"]),
                        "churn_probability": float(r["churn_probability"]),
                        "predicted_value": float(r["predicted_value"]),
                        "value_at_risk": float(r["value_at_risk"]),
                        "playbook": None if pd.isna(r["playbook"]) else str(r["playbook"]),
                        "share": float(r["_share"]),
                        "opened_at": when,
                        "updated_at": when,
                    }
                    for r in fresh.to_dict("records")
                ],
            )
        kept = rows[in_control]
        if not kept.empty:
            conn.execute(
                sa.update(c)
                .where(c.c.id == sa.bindparam("b_id"))
                .values(
                    tier=sa.bindparam("v_tier"),
                    churn_probability=sa.bindparam("v_p"),
                    predicted_value=sa.bindparam("v_value"),
                    value_at_risk=sa.bindparam("v_var"),
                    updated_at=when,
                ),
                [
                    {
                        "b_id": live.pop((str(r["customer_id"]), str(r["kind"]))),
                        "v_tier": None if pd.isna(r["tier"]) else str(r["tier"]),
                        "v_p": float(r["churn_probability"]),
                        "v_value": float(r["predicted_value"]),
                        "v_var": float(r["value_at_risk"]),
                    }
                    for r in kept.to_dict("records")
                ],
            )
        gone = [i for (cid, _), i in live.items() if cid != MODEL_ID]
        if gone:
            conn.execute(
                sa.update(c).where(c.c.id == sa.bindparam("b_id")).values(closed_at=when, updated_at=when),
                [{"b_id": i} for i in gone],
            )
    return candidates[~(new | in_control)], HoldOut(int(new.sum()), len(kept), len(gone))


def list_controls(engine: Engine, customer_id: str | None = None, live: bool | None = None) -> pd.DataFrame:
    """Stored controls, oldest first: every column of `alert_controls`."""
    c = alert_controls_table
    query = sa.select(c).order_by(c.c.opened_at, c.c.id)
    if customer_id is not None:
        query = query.where(c.c.customer_id == str(customer_id))
    if live is not None:
        query = query.where(c.c.closed_at.is_(None) if live else c.c.closed_at.is_not(None))
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return pd.DataFrame([dict(r) for r in rows], columns=[col.name for col in c.columns])
