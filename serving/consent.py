"""Consent to be contacted: serving.yaml's `consent.attribute` names a column of the history's customers
table (e.g. `contact_opt_out`, or `email_opt_in` with `meaning: opt_in`). A customer who may not be contacted
still gets scores, tiers and alerts, visible to the retention team and marked "do not contact"
(alerts.do_not_contact), but nothing about them is ever queued for a webhook, and messages still waiting in
the outbox for their alerts are withdrawn when a run finds the consent gone.

Reading a value, the cautious way: with `opt_out`, only an explicit no (false, no, n, f, 0, or an empty or
missing value) allows contact; with `opt_in`, only an explicit yes (true, yes, y, t, 1) does. Anything else
(`maybe`, `unknown`, 2) stops contact. (Every customer of a history with a customers table is in it: the
history contract refuses events of unknown customers.)
"""

from __future__ import annotations

import math
from collections.abc import Collection

import sqlalchemy as sa

from features.history import History
from serving.alert_rules import MODEL_ID
from serving.config import ConsentConfig
from serving.schema import alerts_table, outbox_table

YES = frozenset({"true", "yes", "y", "t", "1", "1.0"})
NO = frozenset({"false", "no", "n", "f", "0", "0.0", ""})


def allows_contact(value: object, meaning: str) -> bool:
    """Whether one attribute value allows contacting the customer (see the module's rules)."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    text = "" if missing else str(value).strip().lower()
    if meaning == "opt_in":
        return text in YES
    return text in NO


def no_contact(history: History, config: ConsentConfig) -> frozenset[str] | None:
    """The ids of the history's customers who may not be contacted; None when consent is not configured.
    ValueError when the attribute is configured but the history has no such customers column: contacting
    everyone because a column was renamed would be the wrong way to fail."""
    if config.attribute is None:
        return None
    table = history.customers
    if table is None or config.attribute not in table.column_names:
        have = ", ".join(c for c in (table.column_names if table is not None else []) if c != "customer_id")
        raise ValueError(
            f"serving.yaml consent.attribute: the history's customers table has no column "
            f"{config.attribute!r} (it has: {have or 'no customers table'})"
        )
    ids = table.column("customer_id").to_pylist()
    values = table.column(config.attribute).to_pylist()
    return frozenset(
        str(c) for c, v in zip(ids, values, strict=True) if not allows_contact(v, config.meaning)
    )


def mark(engine: sa.Engine, stopped: Collection[str]) -> list[int]:
    """Set do_not_contact on every live customer alert (true for `stopped` customers, false otherwise) and
    withdraw the undelivered outbox messages of the alerts now marked; returns the marked alert ids."""
    a, o = alerts_table, outbox_table
    if not stopped:  # everyone may be contacted: only alerts marked earlier change, nothing is withdrawn
        with engine.begin() as con:
            con.execute(
                sa.update(a)
                .where(a.c.status != "resolved", a.c.customer_id != MODEL_ID, a.c.do_not_contact == sa.true())
                .values(do_not_contact=False)
            )
        return []
    with engine.begin() as con:
        live = con.execute(
            sa.select(a.c.id, a.c.customer_id, a.c.do_not_contact).where(
                a.c.status != "resolved", a.c.customer_id != MODEL_ID
            )
        ).all()
        changes = [
            (r.id, r.customer_id in stopped)
            for r in live
            if bool(r.do_not_contact) != (r.customer_id in stopped)
        ]
        if changes:
            con.execute(
                sa.update(a)
                .where(a.c.id == sa.bindparam("b_id"))
                .values(do_not_contact=sa.bindparam("flag")),
                [{"b_id": i, "flag": flag} for i, flag in changes],
            )
        marked = [int(r.id) for r in live if r.customer_id in stopped]
        for alert_id in marked:
            con.execute(
                sa.delete(o).where(o.c.webhook_id.like(f"alert-{alert_id}-v%"), o.c.status != "delivered")
            )
    return marked
