"""The retention dashboard: server-rendered pages mounted in the scoring service at /ui (serving.service).

Pages: the alert list (customers ranked by value at risk; filters by status, tier and owner; paged in the
database; a live model-health alert as a banner above the ranking, never inside it), a customer page (score
and tier history, the top reasons in words, the latest events, the playbook, the customer's alerts with
acknowledge / snooze / resolve), and an overview (tier distribution and value at risk by tier, tier
movements of the latest run, alerts by status, and model health: the latest run's drift). Wiring only: the
data comes from serving.alert_store, serving.tier_store, serving.store and serving.monitoring; the charts from
serving.charts.

Auth: the sign-in form takes an API key, checked against the accepted keys (serving.access.KeyRing), and
opens a server-side session (serving.webauth) named after the key, with the key's role; the browser gets a
signed cookie naming the session, HttpOnly and SameSite=Strict, never the key itself. serving.middleware
.ApiKeys admits /ui only with a live session (or a bearer key), checks the role each page and action needs
(serving.access.required: viewer to read, agent to act on alerts, admin to erase a customer) and throttles
wrong keys per address. Acknowledge, snooze, resolve, erase and sign out are POST forms carrying the
session's CSRF token; the key's name is recorded on the alert, in its action log and in the audit table.
Signing out ends the session in the store, at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import jinja2
import pandas as pd
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request, cookie_parser
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from core.clock import utc_now
from core.config import ConfigError
from features.value import REVENUE
from serving import (
    access,
    alert_rules,
    alert_store,
    audit,
    capacity,
    charts,
    effect,
    erasure,
    indicators,
    monitoring,
    outcomes,
    scoring,
    store,
    tier_store,
    webauth,
)
from serving.config import ServingConfig, session_secret
from training.contract import CONTRACT, CONTRACT_BOOSTER, SILENCE
from training.tiers import DEFAULT_TIERS

if TYPE_CHECKING:
    from serving.champion import Served

MOUNT = "/ui"
LOGIN = f"{MOUNT}/login"
log = logging.getLogger("diamond.access")
PAGE = 50  # alerts per page
DRIFT_TOP = 10  # most drifted columns on the overview (the two scores are shown wherever they rank)
HEALTH = f"{MOUNT}/overview#model-health"  # where the model-health alert is explained and acted on
HERE = Path(__file__).parent
SNOOZE_HOURS = {"24": "1 day", "72": "3 days", "168": "1 week"}
HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


# --- the gate (called by serving.middleware.ApiKeys before anything under /ui runs) ---------------------


@dataclass(frozen=True)
class Gate:
    """This worker's accepted keys (the key file re-read when it changes) and its sign-in throttle."""

    keys: access.KeyRing
    throttle: access.Throttle


@cache
def gate() -> Gate:
    """Made on the first request, once per worker, from the environment and serving.yaml's `auth`."""
    auth = ServingConfig.load().auth
    return Gate(access.KeyRing.from_env(), access.Throttle(auth.max_failures, auth.window_s))


def session_of(scope: Scope) -> webauth.Session | None:
    """The live session the request's cookie names, if any (serving.webauth.find; a store query)."""
    raw = dict(scope.get("headers") or []).get(b"cookie", b"").decode("latin-1")
    token = cookie_parser(raw).get(webauth.COOKIE) if raw else None
    if not token:
        return None
    return webauth.find(_state().engine, session_secret(), token, gate().keys, utc_now())


def client_of(scope: Scope) -> str:
    """The request's peer address (behind a proxy, the proxy's: see docs/serving.md)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def wrong_key(scope: Scope, how: str) -> None:
    """Count a wrong key against the client's address (serving.access.Throttle) and log it, never the key."""
    client = client_of(scope)
    gate().throttle.fail(client)
    log.warning("refused a wrong API key (%s) from %s on %s %s", how, client, scope["method"], scope["path"])


def login_location(scope: Scope) -> str:
    """Where a browser without a session goes: the login page, back to the page it asked for (GETs)."""
    if scope["method"] != "GET" or scope["path"] in (MOUNT, f"{MOUNT}/"):
        return LOGIN
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    return f"{LOGIN}?{urlencode({'next': target})}"


def refusal(scope: Scope, code: int, message: str, headers: dict[str, str]) -> Response:
    """The page of a request the gate refused with 403 (role too weak) or 429 (too many wrong keys)."""
    title = "Not allowed" if code == 403 else "Too many attempts"
    request = Request(scope)
    response = _page(request, "message.html", code, title=title, message=message)
    response.headers.update(headers)
    return response


# --- state ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    config: ServingConfig
    engine: sa.Engine


@cache
def _state() -> _State:
    """Loaded on the first request, once per worker, from the same settings as the service."""
    config = ServingConfig.load()
    engine = store.prepare(store.engine(config.store_url))
    return _State(config, engine)


@cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["money"] = lambda v: "" if _missing(v) else f"{float(v):,.2f}"
    env.filters["prob"] = lambda v: "" if _missing(v) else f"{float(v):.2f}"
    env.filters["when"] = lambda v: "" if _missing(v) else pd.Timestamp(v).strftime("%Y-%m-%d %H:%M")
    env.filters["day"] = lambda v: "" if _missing(v) else pd.Timestamp(v).strftime("%Y-%m-%d")
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


def _page(request: Request, template: str, code: int = 200, /, **context: Any) -> HTMLResponse:
    user = _user(request)
    session = user.session if user else None
    csrf = webauth.csrf_token(session_secret(), session.token) if session else ""
    html = (
        _templates()
        .get_template(template)
        .render(
            base=MOUNT,
            who=user.username if user else None,
            role=user.role if user else None,
            signed_in=session is not None,
            csrf=csrf,
            **context,
        )
    )
    return HTMLResponse(html, status_code=code, headers=HEADERS)


def _user(request: Request) -> Any:
    """The request's serving.middleware.Principal (name, role, session), or None (the sign-in page)."""
    user = request.scope.get("user")
    return user if getattr(user, "role", None) else None


# --- login ------------------------------------------------------------------------------------------------


def login_form(request: Request) -> Response:
    target = _safe_next(request.query_params.get("next"))
    return _page(request, "login.html", next=target, error=None)


async def login(request: Request) -> Response:
    return await run_in_threadpool(_login, request, await request.form())


def _login(request: Request, form: FormData) -> Response:
    """Check the key (the gate has refused a throttled address already); a wrong one is counted, logged and
    audited; a right one opens a session named after the key."""
    target = _safe_next(str(form.get("next") or ""))
    state, client = _state(), client_of(request.scope)
    key = gate().keys.match(str(form.get("key") or "").strip())
    if key is None:
        wrong_key(request.scope, "dashboard sign-in")
        audit.record(state.engine, "login-failed", None, client=client)
        return _page(request, "login.html", 401, next=target, error="That API key is not accepted.")
    ttl = state.config.auth.session_hours * 3600
    token = webauth.open_session(state.engine, session_secret(), key, utc_now(), ttl, client)
    audit.record(state.engine, "login", key.name, key.role, client=client)
    response = RedirectResponse(target, status_code=303, headers=HEADERS)
    response.set_cookie(
        webauth.COOKIE,
        token,
        max_age=int(ttl),
        path=MOUNT,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    return await run_in_threadpool(_logout, request, await request.form())


def _logout(request: Request, form: FormData) -> Response:
    """End the session in the store (at once, for every worker) and drop the cookie."""
    session = _form_session(request, form)
    if session is None:
        return _refused(request)
    state = _state()
    webauth.end(state.engine, session, utc_now())
    audit.record(state.engine, "logout", session.name, session.role, client=client_of(request.scope))
    response = RedirectResponse(LOGIN, status_code=303, headers=HEADERS)
    response.delete_cookie(webauth.COOKIE, path=MOUNT, httponly=True, samesite="strict")
    return response


def _safe_next(raw: str | None) -> str:
    """Only a page of this dashboard: never another site (open redirect) or a protocol-relative URL."""
    if raw and raw.startswith(f"{MOUNT}/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return f"{MOUNT}/"


# --- pages ------------------------------------------------------------------------------------------------


def alert_list(request: Request) -> Response:
    state, q = _state(), request.query_params
    status = q.get("status") or "open"
    shown = [s for s in alert_store.STATUSES if s != capacity.QUEUED]  # queued ones: the queue page
    if status not in (*shown, "live"):
        status = "open"
    tier, owner = q.get("tier") or None, q.get("owner") or None
    try:
        page = max(int(q.get("page") or 1), 1)
    except ValueError:
        page = 1
    total = alert_store.count_alerts(state.engine, status, tier, owner, model=False)
    rows = alert_store.list_alerts(
        state.engine, status, tier, owner, limit=PAGE, offset=(page - 1) * PAGE, model=False
    )
    health = _records(alert_store.list_alerts(state.engine, "live", model=True))
    drift = monitoring.latest_drift(state.engine) if health else None
    filters = {k: v for k, v in (("status", status), ("tier", tier), ("owner", owner)) if v}
    return _page(
        request,
        "alerts.html",
        health=health,
        drifted=drift["over"] if drift else None,
        health_link=HEALTH,
        rows=_records(rows),
        total=total,
        page=page,
        pages=max((total + PAGE - 1) // PAGE, 1),
        first=(page - 1) * PAGE,
        status=status,
        tier=tier,
        owner=owner,
        statuses=[*shown, "live"],
        tiers=_order(state),
        owners=alert_store.owners(state.engine),
        query=urlencode(filters),
        here=_here(request),
        snooze=SNOOZE_HOURS,
        done=_done(request),
    )


def customer(request: Request) -> Response:
    state, cid = _state(), request.path_params["customer_id"]
    if cid == alert_rules.MODEL_ID:  # not a customer: the model-health alert lives on the overview
        return RedirectResponse(HEALTH, status_code=303, headers=HEADERS)
    snap = store.read_rows(state.engine, store.SCORES, [cid])
    history = store.score_history(state.engine, cid)
    tier_rows = tier_store.tier_history(state.engine, cid)
    if snap.empty and history.empty and tier_rows.empty:
        return _page(request, "message.html", 404, title="Unknown customer", message=f"No scores for {cid}.")
    now = _records(snap)[0] if not snap.empty else None
    reasons = json.loads(now["reasons"]) if now and isinstance(now.get("reasons"), str) else []
    own = alert_store.list_alerts(state.engine, status=None, customer_id=cid, limit=PAGE)
    log = alert_store.actions(state.engine, own["id"].tolist()) if not own.empty else pd.DataFrame()
    found = outcomes.for_alerts(state.engine, own["id"].tolist()) if not own.empty else pd.DataFrame()
    playbook = _playbook(state, own, now)
    points = [(f"{pd.Timestamp(r.as_of):%Y-%m-%d}", r.churn_probability) for r in history.itertuples()]
    return _page(
        request,
        "customer.html",
        customer_id=cid,
        now=now,
        curve=_curve(now),
        churn_model=churn_model(now),
        reasons=reasons,
        history=_records(history),
        chart=charts.line(points, f"Churn probability of {cid} over the scoring runs") if points else None,
        tier_history=_records(tier_rows.iloc[::-1]),
        events=_records(store.recent_events(state.engine, cid)),
        alerts=_records(own),
        log={int(k): _records(g) for k, g in log.groupby("alert_id")} if not log.empty else {},
        outcome=dict(zip(found.index.astype(int), _records(found), strict=True)) if not found.empty else {},
        playbook=playbook,
        here=_here(request),
        snooze=SNOOZE_HOURS,
        done=_done(request),
    )


CHURN_MODELS = {
    CONTRACT: "contract: cancellation hazard",
    CONTRACT_BOOSTER: "contract: churn model on cancellations",
    SILENCE: "purchase silence",
}


def churn_model(now: dict[str, Any] | None) -> dict[str, str] | None:
    """Which model scored a customer's latest score, as the page names it; None when the snapshot says
    nothing (written before the score table had `churn_model`)."""
    name = now.get("churn_model") if now else None
    if not isinstance(name, str) or not name:
        return None
    return {"name": name, "label": CHURN_MODELS.get(name, name)}


def _curve(now: dict[str, Any] | None) -> dict[str, Any] | None:
    """The time to churn of a customer's latest score: [(days, P(churned by then))] up to and including the
    model's horizon, and the expected days to churn; None when the score has no curve (an older model or
    a snapshot written before there was one)."""
    if now is None:
        return None
    points = [(int(c[6:-1]), now.get(c)) for c in scoring.CURVE_COLUMNS[:-1]]
    horizon = now.get("horizon_days")
    points = [(t, p) for t, p in points if p is not None and (horizon is None or t < horizon)]
    if not points:
        return None
    if horizon is not None:
        points.append((int(horizon), now.get("churn_probability")))
    return {"points": points, "days": now.get("days_to_churn")}


def effect_page(request: Request) -> Response:
    """Treated alerts against their held-out controls, all runs together, by owner too (serving.effect,
    docs/effect.md), and the tier migration matrix of the latest runs (serving.indicators); the value line
    says what the incremental value is in, as `diamond effect` does: the served model's value target (revenue
    when none is loaded)."""
    state = _state()
    served: Served | None = request.app.state.served()
    value = effect.value_line(
        served.artefact.value_target if served else REVENUE, served.version if served else None
    )
    try:
        table = effect.stored_report(
            state.engine, state.config.alerts, state.config.file or "serving.yaml", False
        )
        problem = None
    except ConfigError as exc:
        table, problem = pd.DataFrame(columns=effect.REPORT_COLUMNS), str(exc)
    tiers, order = indicators.tier_history(state.engine)
    moves = indicators.migration(tiers)
    context = effect_context(table, None, moves, order, MOVES)
    return _page(request, "effect.html", problem=problem, value=value, **context)


QUEUE_PAGE = 100  # queued alerts shown per team


def queue_page(request: Request) -> Response:
    """Each team's budget and use this period, and its queue in the order alerts would enter
    (serving.capacity), as of the latest run."""
    state = _state()
    rules = capacity.rules_of(state.engine, state.config)
    when = capacity.clock(state.engine)
    waiting, teams = capacity.queue(state.engine, rules, when)
    groups = [
        (str(team), _records(rows.head(QUEUE_PAGE))) for team, rows in waiting.groupby("team", sort=True)
    ]
    return _page(
        request,
        "queue.html",
        as_of=when,
        configured=rules is not None and rules.capacity is not None,
        teams=teams,
        queue=groups,
        limit=QUEUE_PAGE,
    )


MOVES = 3  # migration matrices on the effect page: between the latest runs


def effect_context(
    table: pd.DataFrame, rates: pd.DataFrame | None, moves: pd.DataFrame, order: list[str], last: int | None
) -> dict[str, Any]:
    """What effect.html and effect_report.html show: the cumulative rows, the owners' rows, the realised
    rates and the migration matrices (the `last` ones, newest first; None: all)."""
    pairs = []
    if not moves.empty:
        ends = sorted(moves["to_run"].unique(), reverse=True)[: last or None]
        for end in ends:
            one = moves[moves["to_run"] == end]
            rows, cols, counts = indicators.matrix(one, order)
            pairs.append(
                {
                    "from_run": one["from_run"].iloc[0],
                    "to_run": end,
                    "cols": cols,
                    "lines": list(zip(rows, counts, strict=True)),
                }
            )
    scope = table["scope"] if not table.empty else pd.Series(dtype=object)
    return {
        "rows": _records(table[scope == "cumulative"]),
        "owners": _records(table[scope == "owner"]),
        "rates": _records(rates) if rates is not None else [],
        "moves": pairs,
    }


def effect_report_html(
    table: pd.DataFrame,
    rates: pd.DataFrame,
    moves: pd.DataFrame,
    order: list[str],
    value: str | None = None,
) -> str:
    """`diamond effect --html`: the effect table, by owner, the realised rates and every migration matrix,
    as one standalone page (escaped like the dashboard's); `value` says what the incremental value is in."""
    context = effect_context(table, rates, moves, order, None)
    return (
        _templates()
        .get_template("effect_report.html")
        .render(written=f"{utc_now():%Y-%m-%d %H:%M} UTC", value=value, **context)
    )


def overview(request: Request) -> Response:
    state = _state()
    order = _order(state)
    summary = store.tier_summary(state.engine)
    names = [t for t in order if t in summary] + sorted(set(summary) - set(order))
    run = tier_store.latest_run(state.engine)
    moves = tier_store.tier_movements(state.engine, run[0], include_new=True) if run else pd.DataFrame()
    directions = moves.groupby("direction")["customers"].sum().to_dict() if not moves.empty else {}
    by_status = {s: alert_store.count_alerts(state.engine, s, model=False) for s in alert_store.STATUSES}
    drift = monitoring.latest_drift(state.engine)
    columns = _top_columns(drift["psi"], DRIFT_TOP) if drift else []
    return _page(
        request,
        "overview.html",
        run=store.latest_run(state.engine),
        tier_run=run,
        summary=[(t, *summary[t]) for t in names],
        tier_chart=charts.bars([(t, summary[t][0]) for t in names], "Customers per tier") if names else None,
        risk_chart=charts.bars([(t, summary[t][1]) for t in names], "Value at risk per tier", fmt="{:,.2f}")
        if names
        else None,
        moves=_records(moves),
        move_chart=charts.bars(
            [(d, directions.get(d, 0)) for d in ("promoted", "demoted", "new")],
            "Tier movements in the latest run",
        )
        if run
        else None,
        by_status=by_status,
        drift=drift,
        columns=columns,
        top=DRIFT_TOP,
        drift_chart=charts.bars(
            [(c["name"], c["psi"]) for c in columns],
            "PSI of the most drifted columns against the model's training population",
            fmt="{:.3f}",
            width=620,
            label_w=200,
            threshold=drift["psi_alert"],
        )
        if drift and columns
        else None,
        health=_records(alert_store.list_alerts(state.engine, "live", model=True)),
        here=_here(request),
        snooze=SNOOZE_HOURS,
        done=_done(request),
    )


# --- actions ----------------------------------------------------------------------------------------------


async def act(request: Request) -> Response:
    """Acknowledge, snooze or resolve one alert, then back to the page the form was on."""
    return await run_in_threadpool(_act, request, await request.form())


def _act(request: Request, form: FormData) -> Response:
    session = _form_session(request, form)
    if session is None:
        return _refused(request)
    state, action = _state(), request.path_params["action"]
    alert_id = request.path_params["alert_id"]
    who = session.name
    try:
        if action == "ack":
            alert_store.acknowledge(state.engine, alert_id, who)
        elif action == "resolve":
            alert_store.resolve(state.engine, alert_id, who)
            try:  # the budget it frees lets queued alerts enter
                capacity.release(state.engine, state.config)
            except ConfigError as exc:  # e.g. a webhook secret this process lacks: the run will admit them
                log.warning("queued alerts not admitted after resolving alert %s: %s", alert_id, exc)
        elif action == "snooze":
            hours = str(form.get("hours") or "")
            if hours not in SNOOZE_HOURS:
                raise ValueError(f"snooze: choose one of {', '.join(SNOOZE_HOURS.values())}")
            until = utc_now() + timedelta(hours=int(hours))
            alert_store.snooze(state.engine, alert_id, until, who=who)
        else:
            return _page(request, "message.html", 404, title="Not found", message=f"No action {action!r}.")
    except KeyError:
        return _page(request, "message.html", 404, title="Not found", message=f"No alert {alert_id}.")
    except ValueError as exc:
        return _page(request, "message.html", 409, title="Not changed", message=str(exc))
    done = {"ack": "acknowledged", "resolve": "resolved", "snooze": "snoozed"}[action]
    audit.record(state.engine, done, who, session.role, str(alert_id), client_of(request.scope))  # type: ignore[arg-type]
    back = _safe_next(str(form.get("next") or ""))
    joiner = "&" if "?" in back else "?"
    return RedirectResponse(
        f"{back}{joiner}{urlencode({'done': action, 'alert': alert_id})}", status_code=303, headers=HEADERS
    )


async def forget(request: Request) -> Response:
    """Erase one customer (serving.erasure; admins only, by the gate), then back to the alert list."""
    return await run_in_threadpool(_forget, request, await request.form())


def _forget(request: Request, form: FormData) -> Response:
    session = _form_session(request, form)
    if session is None:
        return _refused(request)
    cid = request.path_params["customer_id"]
    done = erasure.forget(_state().engine, [cid], session.name, session.role, client_of(request.scope))
    if not done.found:
        return _page(
            request, "message.html", 404, title="Unknown customer", message=f"Nothing stored for {cid}."
        )
    return _page(
        request,
        "message.html",
        200,
        title="Customer erased",
        message=f"Every row about that customer was deleted ({done.rows:,} rows); the audit table keeps only "
        "a salted hash. See docs/dashboard.md for what stays.",
    )


def _form_session(request: Request, form: FormData) -> webauth.Session | None:
    """The session, if the form carries its CSRF token (a bearer key alone cannot act); the one session
    the action then records, checked by the gate for this very request."""
    user = _user(request)
    session: webauth.Session | None = user.session if user else None
    if session is None or not webauth.csrf_ok(session_secret(), session.token, str(form.get("csrf") or "")):
        return None
    return session


def _refused(request: Request) -> Response:
    """The 403 page of a form without this session's CSRF token."""
    return _page(
        request,
        "message.html",
        403,
        title="Refused",
        message="This form has expired or did not come from this dashboard. Reload the page and retry.",
    )


# --- helpers ----------------------------------------------------------------------------------------------


def _order(state: _State) -> list[str]:
    run = tier_store.latest_run(state.engine)
    return run[1] if run else list(DEFAULT_TIERS)


def _playbook(state: _State, own: pd.DataFrame, now: dict[str, Any] | None) -> str | None:
    """The live alert's playbook, else what the config says for the customer's tier."""
    live = own[own["status"].isin(alert_store.LIVE)]
    if not live.empty and isinstance(live["playbook"].iloc[0], str):
        return str(live["playbook"].iloc[0])
    if not now or state.config.alerts is None:
        return None
    rules = state.config.alert_rules(_order(state))
    book = rules.playbooks.get(str(now.get("tier"))) if rules is not None else None
    return book.text if book else None


def _top_columns(psi: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The n most drifted columns of a drift run (worst first), plus the two scores wherever they rank."""
    return [c for i, c in enumerate(psi) if i < n or c["kind"] == "score"]


def _here(request: Request) -> str:
    """This page without the one-off `done` notice, for forms to come back to."""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k not in ("done", "alert")])
    return request.url.path + (f"?{query}" if query else "")


def _done(request: Request) -> dict[str, str] | None:
    action, alert_id = request.query_params.get("done"), request.query_params.get("alert")
    words = {"ack": "acknowledged", "snooze": "snoozed", "resolve": "resolved"}
    if action in words and alert_id and alert_id.isdigit():
        return {"action": words[action], "alert": alert_id}
    return None


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows for the templates, missing values (NaN, NaT, pandas' NA) as None: NaN is truthy in Jinja."""
    return [{k: None if _missing(v) else v for k, v in r.items()} for r in frame.to_dict("records")]


def _missing(value: object) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _no_model() -> Served | None:
    return None


def create_app(served: Callable[[], Served | None] = _no_model) -> Starlette:
    """The dashboard as an ASGI app, routes relative to MOUNT; `served()` is the model the service serves
    now (serving.service: this worker's champion), whose value target the effect page names."""
    app = Starlette(
        routes=[
            Route("/", alert_list, methods=["GET"]),
            Route("/login", login_form, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/overview", overview, methods=["GET"]),
            Route("/effect", effect_page, methods=["GET"]),
            Route("/queue", queue_page, methods=["GET"]),
            Route("/customers/{customer_id:path}/forget", forget, methods=["POST"]),
            Route("/customers/{customer_id:path}", customer, methods=["GET"]),
            Route("/alerts/{alert_id:int}/{action}", act, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={sa.exc.OperationalError: _store_unavailable},
    )
    app.state.served = served
    return app


def _store_unavailable(request: Request, exc: Exception) -> Response:
    """A store that cannot be written (read-only, full) or reached: 503 and a page saying so, not a bare
    500; nothing was changed (each action is one transaction)."""
    message = "The store cannot be written right now (read-only, full or unreachable): nothing was changed. "
    return _page(request, "message.html", 503, title="Store unavailable", message=message + "Retry later.")
