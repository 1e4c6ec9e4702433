"""The alert store: one live alert per (customer, kind), its lifecycle and the log of what people did.

`sync_alerts` reconciles a run's candidate alerts (serving.alert_rules) with the stored alerts in one
transaction: it opens new alerts, updates live ones in place, re-notifies the ones the rules say to and
auto-resolves the ones whose customer no longer qualifies. People then acknowledge, snooze or resolve; each
such action is logged (alert_actions: who, what, when) in the same transaction as the change. The rest reads
alerts back: listed, counted, one by one, their owners and actions, exported to CSV or JSON.

Storage is SQLAlchemy Core with portable SQL (SQLite by default, PostgreSQL in production), in the tables
`alerts` and `alert_actions` of serving.schema. "At most one live
alert per (customer, kind)" is a partial unique index on (customer_id, kind) WHERE status != 'resolved' (both
SQLite and PostgreSQL have them), so it holds even against a concurrent writer. Live means open, acknowledged
or snoozed: an alert someone has taken on is still the one alert for that customer and kind.

Run-driven times (opened_at, updated_at, due_at, last_notified_at, auto resolved_at) are the run's as_of;
people's actions default to the wall clock. All times are naive UTC.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.clock import utc_naive, utc_now
from serving import bulk, capacity
from serving.alert_rules import (
    MODEL_ID,
    as_text,
    candidate_rows,
    check_candidates,
    is_missing,
    reason_texts,
    should_renotify,
    status_at,
)
from serving.alert_rules import priorities as alert_rules_priorities
from serving.config import AlertConfig
from serving.schema import alert_actions_table, alerts_table

STATUSES = ("queued", "open", "acknowledged", "snoozed", "resolved")
LIVE = ("open", "acknowledged", "snoozed")  # actionable: in someone's list
WAITING = (*LIVE, capacity.QUEUED)  # the one alert of a (customer, kind), live or waiting for capacity
AUTO = "auto"  # resolved_by of alerts the sync resolved
ALERT_COLUMNS = [
    "id",
    "customer_id",
    "kind",
    "status",
    "tier",
    "churn_probability",
    "predicted_value",
    "value_at_risk",
    "reasons",
    "playbook",
    "due_at",
    "owner",
    "opened_at",
    "updated_at",
    "last_notified_at",
    "notified_value_at_risk",
    "resolved_at",
    "resolved_by",
    "snoozed_until",
    "version",
    "do_not_contact",
    "priority",
    "entered_at",
]
OUTCOME_COLUMNS = ["outcome", "outcome_at", "days_to_outcome", "value_after", "outcome_final"]
"""What the export adds to each alert from serving.outcomes (None where none is recorded yet)."""
_TIME_COLUMNS = (
    "due_at",
    "opened_at",
    "updated_at",
    "last_notified_at",
    "resolved_at",
    "snoozed_until",
    "entered_at",
)


@dataclass(frozen=True)
class SyncResult:
    """What one sync did. `notify`: (alert id, version) to enqueue, webhook id f"alert-{id}-v{version}"."""

    notify: list[tuple[int, int]]
    opened: int
    updated: int
    renotified: int
    resolved: int
    queued: int = 0  # new alerts left waiting for their team's capacity (serving.capacity)
    entered: int = 0  # alerts queued by earlier runs that entered their team's list in this one


def sync_alerts(
    engine: Engine,
    as_of: datetime | pd.Timestamp | str,
    candidates: pd.DataFrame,
    config: AlertConfig,
    model: bool = False,
    reasons: Callable[[np.ndarray], list[list[str]]] | None = None,
) -> SyncResult:
    """Reconcile this run's candidates (from serving.alert_rules.evaluate) with the stored alerts, in one
    transaction.

    `model` False reconciles the customers' alerts, True the model-level ones (customer_id MODEL_ID, from
    serving.monitoring); each leaves the other's alerts alone, and a candidate on the wrong side is refused.

    - a firing (customer, kind) without a live alert: insert an open alert, version 1, notify;
    - a live alert with a candidate row: update it in place (tier, scores, reasons, playbook). Notify again
      (version + 1, new due_at) only if the row fires and `should_renotify` says so: for an open alert, the
      cool-down has passed since the last notification or value at risk worsened by at least
      `renotify_margin`; an acknowledged alert (someone owns it) is re-notified only when it worsens. A
      snoozed alert stays quiet until snoozed_until, then is open again (`status_at`);
    - a live alert without a candidate row (not firing, not holding within the margin, or the customer was
      not scored): resolved, resolved_by 'auto'.

    With `alerts.capacity`, a new alert of a team is stored `queued` (not notified); a queued alert is kept
    up to date like a live one (never notified) and leaves the queue (auto-resolved) when its row is gone.
    Then queued alerts enter by priority while their team has budget (serving.capacity.admit), notified.

    Running the same as_of twice changes nothing more and notifies nothing more (the cool-down has not
    passed and nothing worsened), unless cooldown_hours is 0.

    `reasons`, when given, returns the reasons of the candidates at the given positions and stands in for
    their `reasons` column: it is asked only for the rows that fire or keep a live alert (a batch run's
    candidates hold nearly every customer within the margin of a tier-drop rule; few of them matter).
    """
    when = utc_naive(as_of)
    check_candidates(candidates)
    ids = as_text(candidates["customer_id"])
    wrong = ids[(ids == MODEL_ID) != model]
    if not wrong.empty:
        raise ValueError(
            f"candidates: customer_id {wrong.iloc[0]!r} "
            + (f"is reserved for model alerts ({MODEL_ID})" if not model else f"is not {MODEL_ID}")
        )
    t = alerts_table
    side = t.c.customer_id == MODEL_ID if model else t.c.customer_id != MODEL_ID
    notify: list[tuple[int, int]] = []
    opened = updated = renotified = resolved = 0
    with engine.begin() as conn:
        # what the sync reads of a live alert (not its reasons' text nor its scores: it writes them)
        read = [t.c[c] for c in ("id", "customer_id", "kind", "status", "version", "snoozed_until")]
        read += [t.c.due_at, t.c.last_notified_at, t.c.notified_value_at_risk]
        live = {
            (r.customer_id, r.kind): r
            for r in conn.execute(
                sa.select(*read).where(t.c.status.in_(WAITING), side).order_by(t.c.id)
            ).all()
        }
        # a row that neither fires nor has a live alert to keep changes nothing: left out before conversion
        fires = candidates["fires"] if "fires" in candidates else pd.Series(True, index=candidates.index)
        if live:  # a first run has no live alert: no (customer, kind) index of every candidate to build
            keys = pd.MultiIndex.from_arrays([ids, as_text(candidates["kind"])])
            known = keys.isin(list(live))
        else:
            known = np.zeros(len(candidates), dtype=bool)
        wanted = fires.to_numpy(dtype=bool) | known
        kept = candidates[wanted]
        if reasons is not None:
            kept = kept.assign(reasons=reasons(np.flatnonzero(wanted)))
        known = known[wanted]
        # the rest fire without a live alert: new alerts, open, version 1, converted and inserted as columns
        waits = capacity.queued_on_arrival(kept[~known], None if model else config.capacity)
        fresh = _new_alerts(kept[~known], when, waits)
        opened, queued = int((~waits).sum()), int(waits.sum())
        updates: list[dict[str, Any]] = []
        renotify: list[tuple[int, int, int]] = []  # (position among kept, id, version)
        for position, row in zip(np.flatnonzero(known).tolist(), candidate_rows(kept[known]), strict=True):
            current = live.pop((row.customer_id, row.kind))
            status, snoozed_until = status_at(current.status, current.snoozed_until, when)
            change = {
                **_scored(row, when),
                "status": status,
                "snoozed_until": snoozed_until,
                "due_at": current.due_at,
                "last_notified_at": current.last_notified_at,
                "notified_value_at_risk": current.notified_value_at_risk,
                "version": current.version,
            }
            if (
                status != capacity.QUEUED
                and row.fires
                and should_renotify(
                    status,
                    float(row.value_at_risk),
                    current.notified_value_at_risk,
                    current.last_notified_at,
                    when,
                    config,
                )
            ):
                change.update(
                    due_at=row.due_at,
                    last_notified_at=when,
                    notified_value_at_risk=float(row.value_at_risk),
                    version=current.version + 1,
                )
                renotify.append((position, int(current.id), current.version + 1))
            updates.append({"b_id": current.id, **change})
        updated, renotified = len(updates), len(renotify)
        pending = renotify
        if len(fresh):  # in candidate order, so ids rise with priority as one by one did
            bulk.insert_frame(conn, t, fresh)
            query = sa.select(t.c.id, t.c.customer_id, t.c.kind).where(t.c.status == "open", side)
            stored = conn.execute(query.where(t.c.opened_at == when)).all()
            opening = fresh[~waits]
            new_ids = _ids_of(stored, opening["customer_id"], opening["kind"])
            places = np.flatnonzero(~known)[~waits]
            pending = _in_order(renotify, places, new_ids)
        notify = [(alert_id, version) for _, alert_id, version in pending]  # in candidate order
        if updates:
            cols = [k for k in updates[0] if k != "b_id"]
            stmt = (
                sa.update(t)
                .where(t.c.id == sa.bindparam("b_id"))
                .values({c: sa.bindparam(f"v_{c}") for c in cols})
            )
            conn.execute(stmt, [{"b_id": u["b_id"], **{f"v_{c}": u[c] for c in cols}} for u in updates])
        if live:
            stmt = (
                sa.update(t)
                .where(t.c.id == sa.bindparam("b_id"))
                .values(
                    status="resolved", resolved_at=when, resolved_by=AUTO, updated_at=when, snoozed_until=None
                )
            )
            conn.execute(stmt, [{"b_id": r.id} for r in live.values()])
            resolved = len(live)
        entered = [] if model else capacity.admit(conn, when, config)  # budget freed, queue moves on
        notify += entered
        if queued and entered:  # this run's new alerts that entered at once count as opened
            mine = sa.select(t.c.id).where(t.c.opened_at == when, t.c.entered_at == when, side)
            now_open = {int(i) for i in conn.execute(mine).scalars()}
            at_once = sum(1 for i, _ in entered if i in now_open)
            opened, queued = opened + at_once, queued - at_once
            entered = [e for e in entered if e[0] not in now_open]
    return SyncResult(
        notify=notify,
        opened=opened,
        updated=updated,
        renotified=renotified,
        resolved=resolved,
        queued=queued,
        entered=len(entered),
    )


def _ids_of(stored: Sequence[Sequence[Any]], customer_ids: pd.Series, kinds: pd.Series) -> np.ndarray:
    """The id of each (customer_id, kind) among the `stored` (id, customer_id, kind) rows; KeyError naming
    a pair not stored."""
    found = {(who, what): alert_id for alert_id, who, what in stored}
    pairs = zip(customer_ids.tolist(), kinds.tolist(), strict=True)
    return np.array([found[pair] for pair in pairs], dtype=np.int64)


def _in_order(
    renotify: list[tuple[int, int, int]], places: np.ndarray, new_ids: np.ndarray
) -> list[tuple[int, int, int]]:
    """(position, alert id, version) of the re-notified alerts and of the new ones (version 1, at `places`
    with ids `new_ids`), by position: what `sorted` gives the tuples (positions are distinct), as arrays."""
    old = np.array(renotify, dtype=np.int64).reshape(-1, 3)
    places = np.asarray(places, dtype=np.int64)
    position = np.concatenate([old[:, 0], places])
    order = np.argsort(position, kind="stable")
    alert_id = np.concatenate([old[:, 1], np.asarray(new_ids, dtype=np.int64)])[order]
    version = np.concatenate([old[:, 2], np.ones(len(places), dtype=np.int64)])[order]
    return list(zip(position[order].tolist(), alert_id.tolist(), version.tolist(), strict=True))


def _scored(row: Any, when: datetime) -> dict[str, Any]:
    """What a run writes into a live alert from its candidate row (serving.alert_rules.candidate_rows)."""
    return {
        "tier": row.tier,
        "churn_probability": float(row.churn_probability),
        "predicted_value": float(row.predicted_value),
        "value_at_risk": float(row.value_at_risk),
        "reasons": json.dumps(list(row.reasons)),
        "playbook": row.playbook,
        "priority": float(row.priority),
        "updated_at": when,
    }


def _new_alerts(rows: pd.DataFrame, when: datetime, queued: np.ndarray | None = None) -> pd.DataFrame:
    """The alerts table's rows for candidates that open a new alert, column by column (a batch run opens
    hundreds of thousands on a first run): the values `candidate_rows` and `_scored` give one row, open,
    version 1, notified now; where `queued`, waiting for capacity instead: not entered, not notified."""
    value_at_risk = rows["value_at_risk"].to_numpy(dtype=np.float64)
    waits = np.zeros(len(rows), dtype=bool) if queued is None else queued
    # typed columns (not objects for pandas to infer): NaT and NaN are stored as NULL alike
    now = np.where(waits, np.datetime64("NaT", "us"), np.datetime64(when, "us"))
    return pd.DataFrame(
        {
            "customer_id": rows["customer_id"].astype(str).to_numpy(dtype=object),
            "kind": rows["kind"].astype(str).to_numpy(dtype=object),
            "status": np.where(waits, capacity.QUEUED, "open").astype(object),
            "due_at": _times(rows["due_at"]),
            "opened_at": when,
            "entered_at": now,
            "last_notified_at": now,
            "notified_value_at_risk": np.where(waits, np.nan, value_at_risk),
            "priority": alert_rules_priorities(rows),
            "version": 1,
            "tier": _texts(rows["tier"]),
            "churn_probability": rows["churn_probability"].to_numpy(dtype=np.float64),
            "predicted_value": rows["predicted_value"].to_numpy(dtype=np.float64),
            "value_at_risk": value_at_risk,
            "reasons": reasons_json(rows["reasons"]),
            "playbook": _texts(rows["playbook"]),
            "updated_at": when,
        }
    )


def reasons_json(column: pd.Series) -> list[str]:
    """Each cell's `reason_texts` as the JSON text `json.dumps` writes: a list of texts (what a batch run
    gives) joined from each text's JSON string (json's own encoder for them), without json.dumps' per-call
    set-up (a first run opens hundreds of thousands of alerts)."""
    out = []
    for r in column.tolist():
        texts = r if type(r) is list and all(type(x) is str for x in r) else reason_texts(r)
        out.append("[" + ", ".join(map(encode_basestring_ascii, texts)) + "]")
    return out


def _texts(column: pd.Series) -> list[str | None]:
    return [None if is_missing(v) else str(v) for v in column.tolist()]


def _times(column: pd.Series) -> list[datetime | None]:
    """Naive UTC datetimes (None for missing), each distinct value converted once (a due time per tier)."""
    codes, distinct = pd.factorize(column.to_numpy(dtype=object))  # missing (None, NaN, NaT): -1
    naive = np.array([utc_naive(v) for v in distinct] + [None], dtype=object)
    return list(naive[codes])  # -1: the None at the end


def list_alerts(
    engine: Engine,
    status: str | Iterable[str] | None = "open",
    tier: str | None = None,
    owner: str | None = None,
    customer_id: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    model: bool | None = None,
) -> pd.DataFrame:
    """Stored alerts, highest priority first (then oldest first). `status`: one status, several, or None
    for all; 'live' means open, acknowledged or snoozed (not `queued`: waiting for capacity). `model` True
    keeps only the model-level alerts (MODEL_ID), False only the customers', None both. `limit`/`offset`
    page through them in the database. `reasons` come back as lists."""
    t = alerts_table
    query = _filtered(sa.select(t), status, tier, owner, customer_id, model)
    query = query.order_by(t.c.priority.desc(), t.c.id).limit(limit).offset(offset or None)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return _alert_frame(rows)


def count_alerts(
    engine: Engine,
    status: str | Iterable[str] | None = "open",
    tier: str | None = None,
    owner: str | None = None,
    customer_id: str | None = None,
    model: bool | None = None,
) -> int:
    """How many alerts `list_alerts` would return without a limit."""
    query = sa.select(sa.func.count()).select_from(alerts_table)
    query = _filtered(query, status, tier, owner, customer_id, model)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def owners(engine: Engine) -> list[str]:
    """Everyone who owns a live alert, sorted."""
    t = alerts_table
    query = sa.select(t.c.owner).where(t.c.status.in_(LIVE), t.c.owner.is_not(None)).distinct()
    with engine.connect() as conn:
        return sorted(str(o) for o in conn.execute(query).scalars())


def actions(engine: Engine, alert_ids: Iterable[int]) -> pd.DataFrame:
    """The logged actions on these alerts, oldest first: alert_id, action, who, at, detail."""
    t = alert_actions_table
    ids = [int(i) for i in alert_ids]
    query = sa.select(t.c.alert_id, t.c.action, t.c.who, t.c.at, t.c.detail).where(t.c.alert_id.in_(ids))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(t.c.at, t.c.id)).all()
    return pd.DataFrame(rows, columns=["alert_id", "action", "who", "at", "detail"])


def get_alert(engine: Engine, alert_id: int) -> dict[str, Any]:
    """One stored alert as a dict (reasons as a list); KeyError when there is none with this id."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(alerts_table).where(alerts_table.c.id == alert_id)).mappings().first()
    if row is None:
        raise KeyError(f"no alert {alert_id}")
    return _alert_dict(row)


def get_alerts(engine: Engine, alert_ids: Sequence[int], chunk: int = 10_000) -> dict[int, dict[str, Any]]:
    """Stored alerts by id, each as `get_alert` gives it; KeyError naming the first id without an alert.
    Read `chunk` ids a query (a batch run notifies hundreds of thousands at once)."""
    ids = list(dict.fromkeys(int(i) for i in alert_ids))
    found: dict[int, dict[str, Any]] = {}
    t = alerts_table
    with engine.connect() as conn:
        for start in range(0, len(ids), chunk):
            query = sa.select(t).where(t.c.id.in_(ids[start : start + chunk]))
            found.update((int(r["id"]), _alert_dict(r)) for r in conn.execute(query).mappings())
    missing = [i for i in ids if i not in found]
    if missing:
        raise KeyError(f"no alert {missing[0]}")
    return found


def acknowledge(engine: Engine, alert_id: int, who: str, at: datetime | None = None) -> dict[str, Any]:
    """`who` takes the alert on: status acknowledged, owner who. Only a live alert can be acknowledged."""
    return _act(engine, alert_id, at, {"status": "acknowledged", "owner": who, "snoozed_until": None}, who)


def snooze(
    engine: Engine,
    alert_id: int,
    until: datetime | pd.Timestamp | str,
    at: datetime | None = None,
    who: str | None = None,
) -> dict[str, Any]:
    """Quiet a live alert until `until`: no notifications; the first sync at or after it reopens it."""
    end = utc_naive(until)
    return _act(
        engine, alert_id, at, {"status": "snoozed", "snoozed_until": end}, who, f"until {end:%Y-%m-%d %H:%M}"
    )


def resolve(engine: Engine, alert_id: int, who: str, at: datetime | None = None) -> dict[str, Any]:
    """Close a live alert by hand. A later run that still fires for the customer opens a new alert."""
    when = utc_naive(at) if at is not None else utc_now()
    return _act(engine, alert_id, when, {"status": "resolved", "resolved_at": when, "resolved_by": who}, who)


def export_alerts(
    engine: Engine,
    path: str | Path,
    status: str | Iterable[str] | None = None,
    key: bytes | None = None,
) -> int:
    """Write the alerts (all statuses by default) ranked by value at risk to .csv or .json, by extension.
    CSV keeps reasons as JSON text; both write times as ISO 8601. Returns the number of alerts written.

    CSV text cells that a spreadsheet would run as a formula (starting with = + - @, a tab or a carriage
    return: a customer id `=HYPERLINK(...)`) get a leading apostrophe (OWASP's CSV injection advice); JSON is
    data, written as it is. With `key`, customer ids are replaced by `pseudonym(key, id)` in both formats."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"{target}: export to .csv or .json")
    frame = list_alerts(engine, status=status)
    frame = _with_outcomes(engine, frame)
    if key is not None:
        model = frame["customer_id"] == MODEL_ID
        frame["customer_id"] = frame["customer_id"].where(model, pseudonyms(key, frame["customer_id"]))
    records = [_jsonable(r) for r in frame.to_dict("records")]
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        target.write_text(json.dumps(records, indent=1), encoding="utf-8")
    else:
        flat = pd.DataFrame(
            [{**r, "reasons": json.dumps(r["reasons"])} for r in records],
            columns=[*ALERT_COLUMNS, *OUTCOME_COLUMNS],
        )
        text = flat.select_dtypes(include=["object", "string"]).columns
        flat[text] = flat[text].apply(neutralise)
        flat.to_csv(target, index=False)
    return len(records)


EXPORT_KEY_ENV = "DIAMOND_EXPORT_KEY"
"""The environment variable holding the key of pseudonymised exports (`alerts export --pseudonymise`)."""
FORMULA = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet takes as the start of a formula in a cell."""


def neutralise(column: pd.Series) -> pd.Series:
    """Text cells starting with a formula character (FORMULA) prefixed with an apostrophe, so a spreadsheet
    shows them as text instead of running them; other cells (numbers, missing) unchanged."""
    text = column.astype("string")
    risky = text.str.startswith(FORMULA).fillna(False).astype(bool)
    return column.where(~risky, "'" + text)


def pseudonyms(key: bytes, ids: pd.Series) -> pd.Series:
    """Each id's pseudonym: `pseudonym(key, id)`."""
    return pd.Series([pseudonym(key, str(i)) for i in ids], index=ids.index, dtype=object)


def pseudonym(key: bytes, customer_id: str) -> str:
    """A stable, keyed pseudonym for a customer id: HMAC-SHA256 under `key`, 128 bits in hex. Without the key
    it cannot be reversed or recomputed from a list of ids; with it, the same id always maps to the same
    pseudonym, so exports can still be joined."""
    return "p_" + hmac.new(key, customer_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


# --- helpers ------------------------------------------------------------------------------------------------


def _act(
    engine: Engine,
    alert_id: int,
    at: datetime | None,
    values: dict[str, Any],
    who: str | None,
    detail: str | None = None,
) -> dict[str, Any]:
    when = utc_naive(at) if at is not None else utc_now()
    t = alerts_table
    with engine.begin() as conn:
        done = conn.execute(
            sa.update(t).where(t.c.id == alert_id, t.c.status.in_(LIVE)).values(updated_at=when, **values)
        )
        if done.rowcount != 1:
            _missing_or_closed(conn, alert_id)
        conn.execute(
            sa.insert(alert_actions_table).values(
                alert_id=alert_id, action=values["status"], who=who, at=when, detail=detail
            )
        )
        row = conn.execute(sa.select(t).where(t.c.id == alert_id)).mappings().one()
    return _alert_dict(row)


def _filtered(
    query: Any,
    status: str | Iterable[str] | None,
    tier: str | None,
    owner: str | None,
    customer_id: str | None,
    model: bool | None = None,
) -> Any:
    t = alerts_table
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        wanted = [s for w in wanted for s in (LIVE if w == "live" else (w,))]
        bad = set(wanted) - set(STATUSES)
        if bad:
            raise ValueError(f"unknown status {sorted(bad)}; one of {list(STATUSES)} or 'live'")
        query = query.where(t.c.status.in_(wanted))
    if tier is not None:
        query = query.where(t.c.tier == tier)
    if owner is not None:
        query = query.where(t.c.owner == owner)
    if customer_id is not None:
        query = query.where(t.c.customer_id == str(customer_id))
    if model is not None:
        query = query.where(t.c.customer_id == MODEL_ID if model else t.c.customer_id != MODEL_ID)
    return query


def _with_outcomes(engine: Engine, frame: pd.DataFrame) -> pd.DataFrame:
    """The alerts with their outcomes (serving.outcomes): saved, lost or pending, when, the value spent
    after, and whether the window is complete (`outcome_final`)."""
    from serving.outcomes import for_alerts  # the outcomes read the alerts: imported where used

    found = for_alerts(engine, frame["id"].astype(int).tolist()).rename(columns={"mature": "outcome_final"})
    joined = frame.join(found, on="id")
    for col in OUTCOME_COLUMNS:
        if col not in joined:
            joined[col] = None
    joined["outcome_at"] = pd.to_datetime(joined["outcome_at"])
    return joined.astype({c: object for c in OUTCOME_COLUMNS if c != "outcome_at"})


def _missing_or_closed(conn: Connection, alert_id: int) -> None:
    status = conn.execute(sa.select(alerts_table.c.status).where(alerts_table.c.id == alert_id)).scalar()
    if status is None:
        raise KeyError(f"no alert {alert_id}")
    raise ValueError(f"alert {alert_id} is {status}; only open, acknowledged or snoozed alerts can change")


def _alert_dict(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    out["reasons"] = json.loads(out["reasons"]) if out.get("reasons") else []
    return out


def _alert_frame(rows: Sequence[Mapping[Any, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame([_alert_dict(r) for r in rows], columns=ALERT_COLUMNS)
    for col in _TIME_COLUMNS:
        frame[col] = pd.to_datetime(frame[col])
    return frame


def _jsonable(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if _missing(value):
            out[key] = None
        elif isinstance(value, pd.Timestamp | datetime):
            out[key] = pd.Timestamp(value).isoformat()
        elif isinstance(value, np.integer):
            out[key] = int(value)
        elif isinstance(value, np.floating):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def _missing(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)
