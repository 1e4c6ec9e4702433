"""The retention dashboard (/ui) on a real `diamond serve`: its auth and CSRF over plain HTTP, and a person's
path through it in headless Chromium (Debian's, driven by Playwright; `make test` installs it). The parts
it stands on are tested in tests/unit/test_dashboard.py (sessions, recent events, charts) and
tests/integration/test_dashboard.py (the score history in the store, the overview in process).

Screenshots of the main pages go to test-artifacts/ (git-ignored)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from core.clock import utc_now
from serving import (
    access,
    alert_rules,
    alert_store,
    audit,
    charts,
    dashboard,
    monitoring,
    store,
    tier_store,
    webauth,
)
from serving.config import ServingConfig, session_secret
from tests.helpers import API_KEY, ROOT, run_diamond, serve_champion

LATER = "1998-03-31"  # a second scoring run, so there is a score history and tier movements
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTEFACTS = ROOT / "test-artifacts"
AGENT_NAME = NAME = "alice"  # the name the agent key was issued with: what the dashboard shows and records


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A key file with one key per role (made by `diamond keys add`), beside the legacy DIAMOND_API_KEYS
    that serve_champion sets (API_KEY, role agent); {"file": path, role: raw key, ...}."""
    file = tmp_path_factory.mktemp("keys") / "api-keys"
    made = {"file": str(file)}
    for name, role in (("vera", "viewer"), (AGENT_NAME, "agent"), ("adam", "admin")):
        printed = run_diamond("keys", "add", name, "--role", role, "--file", str(file)).stdout
        made[role] = re.search(r"shown once: (\S+)", printed).group(1)
    return made


@pytest.fixture(scope="module")
def server(
    cdnow_champion: Path, cdnow_dir: Path, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, str]
) -> Iterator[tuple[str, sa.Engine]]:
    """A served champion with two batch runs (CUTOFF and LATER) in its store, and that store."""
    work = tmp_path_factory.mktemp("dashboard")
    env = {"DIAMOND_SESSION_SECRET": "dashboard-test-secret", "DIAMOND_API_KEY_FILE": keys["file"]}
    with serve_champion(cdnow_champion, cdnow_dir, work, env=env) as url:
        run_diamond("score", "--data", str(cdnow_dir), "--as-of", LATER, cwd=work)
        engine = sa.create_engine(f"sqlite:///{work / 'diamond.db'}")
        yield url, engine
        engine.dispose()


def _login(url: str, key: str = API_KEY, next_: str = "/ui/", source: str | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source) if source else None
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=60, transport=transport)
    reply = client.post("/ui/login", data={"key": key, "next": next_})
    assert reply.status_code == 303, reply.text
    return client


def _csrf(client: httpx.Client) -> str:
    page = client.get("/ui/")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text).group(1)


# --- auth and CSRF over plain HTTP --------------------------------------------------------------------------


def test_pages_without_a_session_go_to_the_login_page(server: tuple[str, sa.Engine]) -> None:
    url, _ = server
    assert httpx.get(f"{url}/ui").headers["location"] == "/ui/"
    home = httpx.get(f"{url}/ui/")
    assert home.status_code == 303 and home.headers["location"] == "/ui/login"
    deep = httpx.get(f"{url}/ui/customers/00002?x=1")
    assert deep.status_code == 303
    assert deep.headers["location"] == "/ui/login?next=%2Fui%2Fcustomers%2F00002%3Fx%3D1"
    assert httpx.post(f"{url}/ui/alerts/1/ack").headers["location"] == "/ui/login"
    login = httpx.get(f"{url}/ui/login")
    assert login.status_code == 200 and '<html lang="en">' in login.text and 'for="key"' in login.text
    assert 'name="name"' not in login.text  # nobody types a name: the key carries it
    assert "default-src 'self'" in login.headers["content-security-policy"]
    assert httpx.get(f"{url}/ui/static/app.css").status_code == 200


def test_a_key_logs_in_with_a_server_side_session_named_after_the_key(
    server: tuple[str, sa.Engine], keys: dict[str, str]
) -> None:
    url, engine = server
    wrong = httpx.post(f"{url}/ui/login", data={"key": "not-a-key", "next": "/ui/"})
    assert wrong.status_code == 401 and "not accepted" in wrong.text and "set-cookie" not in wrong.headers
    assert audit.entries(engine, ["login-failed"], limit=1)["client"].tolist() == ["127.0.0.1"]
    typed = {"name": "Mallory", "key": keys["agent"], "next": "/ui/overview"}  # a typed name is ignored
    good = httpx.post(f"{url}/ui/login", data=typed)
    assert good.status_code == 303 and good.headers["location"] == "/ui/overview"
    cookie = good.headers["set-cookie"]
    assert cookie.startswith(f"{webauth.COOKIE}=") and keys["agent"] not in cookie
    for attribute in ("HttpOnly", "Path=/ui", "SameSite=strict", "Max-Age=28800"):
        assert attribute.lower() in cookie.lower()
    token = good.cookies[webauth.COOKIE]
    session = webauth.find(engine, session_secret(), token, access.KeyRing.from_env(), utc_now())
    assert session is not None and (session.name, session.role) == (AGENT_NAME, "agent")
    page = httpx.get(f"{url}/ui/", cookies={webauth.COOKIE: token})
    assert page.status_code == 200 and f'<strong id="who">{AGENT_NAME}</strong>' in page.text
    assert "Mallory" not in page.text
    assert audit.entries(engine, ["login"], limit=1)[["who", "role"]].values.tolist() == [
        [AGENT_NAME, "agent"]
    ]
    # the session opens the dashboard, never the API
    api = httpx.get(f"{url}/model", headers={"cookie": f"{webauth.COOKIE}={token}"})
    assert api.status_code == 401 and api.headers["content-type"] == "application/json"
    assert httpx.post(f"{url}/score", json={"customers": [{"customer_id": "00002"}]}).status_code == 401


def test_forged_expired_ended_and_revoked_sessions_are_refused(
    server: tuple[str, sa.Engine], keys: dict[str, str]
) -> None:
    url, engine = server
    secret, ring, now = session_secret(), access.KeyRing.from_env(), utc_now()

    def status(token: str) -> int:
        return httpx.get(f"{url}/ui/", cookies={webauth.COOKIE: token}).status_code

    agent = ring.match(keys["agent"])
    valid = webauth.open_session(engine, secret, agent, now)  # a row in the served store: the server sees it
    assert status(valid) == 200
    payload, signature = valid.split(".")
    assert status(f"{payload}.{signature[::-1]}") == 303
    assert status(webauth.open_session(engine, b"another secret", agent, now)) == 303
    assert status(webauth.open_session(engine, secret, agent, now - timedelta(hours=9))) == 303  # expired
    gone = access.ApiKey("gone", "admin", access.hash_key("a-key-no-longer-accepted"))
    assert status(webauth.open_session(engine, secret, gone, now)) == 303
    assert status(keys["agent"]) == 303  # the raw key is not a session
    ended = webauth.find(engine, secret, valid, ring, now)
    webauth.end(engine, ended, now)
    assert status(valid) == 303  # ended in the store: refused by the server at once


def test_signing_out_ends_the_session_at_once(server: tuple[str, sa.Engine], keys: dict[str, str]) -> None:
    url, engine = server
    client = _login(url, keys["agent"])
    cookie = client.cookies[webauth.COOKIE]
    csrf = _csrf(client)
    out = client.post("/ui/logout", data={"csrf": csrf})
    assert out.status_code == 303 and 'diamond_session=""' in out.headers["set-cookie"]
    # the old cookie, replayed, no longer opens a page nor acts (it acknowledged alerts for 8 h before)
    replay = httpx.Client(base_url=url, cookies={webauth.COOKIE: cookie}, follow_redirects=False)
    assert replay.get("/ui/").status_code == 303
    target = int(alert_store.list_alerts(engine, "open", limit=1)["id"].iloc[0])
    assert replay.post(f"/ui/alerts/{target}/ack", data={"csrf": csrf}).status_code == 303  # to the login
    assert alert_store.get_alert(engine, target)["status"] == "open"
    assert audit.entries(engine, ["logout"], limit=1)["who"].tolist() == [AGENT_NAME]


def test_actions_need_this_sessions_csrf_token_and_record_who(
    server: tuple[str, sa.Engine], keys: dict[str, str]
) -> None:
    url, engine = server
    alice, other = _login(url, keys["agent"]), _login(url, API_KEY)
    target = int(alert_store.list_alerts(engine, "open", limit=1)["id"].iloc[0])
    path = f"/ui/alerts/{target}/resolve"
    assert alice.post(path, data={"next": "/ui/"}).status_code == 403
    assert alice.post(path, data={"csrf": _csrf(other), "next": "/ui/"}).status_code == 403
    assert httpx.post(f"{url}{path}", data={"csrf": _csrf(alice)}).status_code == 303  # no cookie: login
    assert alert_store.get_alert(engine, target)["status"] == "open"
    done = alice.post(path, data={"csrf": _csrf(alice), "next": "https://evil.example/"})
    assert done.status_code == 303 and done.headers["location"] == f"/ui/?done=resolve&alert={target}"
    row = alert_store.get_alert(engine, target)
    assert row["status"] == "resolved" and row["resolved_by"] == AGENT_NAME
    log = alert_store.actions(engine, [target])
    assert log[["action", "who"]].values.tolist() == [["resolved", AGENT_NAME]]
    logged = audit.entries(engine, ["resolved"], limit=1)
    assert logged[["who", "role", "target"]].values.tolist() == [[AGENT_NAME, "agent", str(target)]]
    again = alice.post(path, data={"csrf": _csrf(alice), "next": "/ui/"})
    assert again.status_code == 409 and "resolved" in again.text
    snooze = f"/ui/alerts/{int(alert_store.list_alerts(engine, 'open', limit=1)['id'].iloc[0])}/snooze"
    odd = other.post(snooze, data={"csrf": _csrf(other), "hours": "5"})  # not one of the offered choices
    assert odd.status_code == 409 and "choose one of" in odd.text
    legacy_name = f"key-{access.hash_key(API_KEY)[:8]}"  # a DIAMOND_API_KEYS key is named by its digest
    assert (
        f'<strong id="who">{legacy_name}</strong> <span class="role">(agent)</span>' in other.get("/ui/").text
    )


def test_login_never_redirects_off_the_dashboard(server: tuple[str, sa.Engine]) -> None:
    url, _ = server
    for target in ("https://evil.example/", "//evil.example/ui/", "/model", "/ui\\..\\x"):
        reply = httpx.post(f"{url}/ui/login", data={"key": API_KEY, "next": target})
        assert reply.headers["location"] == "/ui/", target


# --- roles: every route x every role ------------------------------------------------------------------------

# (method, path, what it needs); the paths name no real alert or customer, so nothing changes: an allowed
# request reaches the route (404), a refused one stops at the gate (403)
MATRIX = [
    ("POST", "/score", "viewer"),
    ("GET", "/model", "viewer"),
    ("GET", "/docs.json", "viewer"),
    ("GET", "/", "viewer"),
    ("GET", "/ui/", "viewer"),
    ("GET", "/ui/overview", "viewer"),
    ("GET", "/ui/effect", "viewer"),
    ("GET", "/ui/queue", "viewer"),
    ("GET", "/ui/customers/no-such-customer", "viewer"),
    ("POST", "/ui/alerts/999999/ack", "agent"),
    ("POST", "/ui/alerts/999999/snooze", "agent"),
    ("POST", "/ui/alerts/999999/resolve", "agent"),
    ("POST", "/ui/customers/no-such-customer/forget", "admin"),
    ("GET", "/no-rule-for-this-path", "admin"),
]


def test_every_role_on_every_route(server: tuple[str, sa.Engine], keys: dict[str, str]) -> None:
    """The role x route matrix, over HTTP on the running service: API routes with bearer keys, dashboard
    routes with a signed-in session of each role (and its CSRF token); plus the legacy key (agent)."""
    url, _ = server
    roles = {"viewer": keys["viewer"], "agent": keys["agent"], "admin": keys["admin"], "legacy": API_KEY}
    sessions = {who: _login(url, key) for who, key in roles.items()}
    seen: dict[tuple[str, str, str], int] = {}
    for method, path, needs in MATRIX:
        for who, key in roles.items():
            role = "agent" if who == "legacy" else who
            if path.startswith("/ui/"):
                client = sessions[who]
                data = {"csrf": _csrf(client), "hours": "24"} if method == "POST" else None
                reply = client.request(method, path, data=data)
            else:
                body = {"customers": [{"customer_id": "00002"}]} if method == "POST" else None
                reply = httpx.request(
                    method, f"{url}{path}", json=body, headers={"authorization": f"Bearer {key}"}
                )
            seen[(method, path, who)] = reply.status_code
            allowed = access.at_least(role, needs)
            if allowed:
                assert reply.status_code in (200, 404), (
                    method,
                    path,
                    who,
                    reply.status_code,
                    reply.text[:300],
                )
            else:
                assert reply.status_code == 403, (method, path, who, reply.status_code)
                if not path.startswith("/ui/"):
                    assert (
                        needs in reply.json()["error"] and reply.headers["content-type"] == "application/json"
                    )
                else:
                    assert "Not allowed" in reply.text and f"this needs {needs}" in reply.text
    assert {k for k, v in seen.items() if v == 403} == {
        (m, p, w)
        for m, p, n in MATRIX
        for w in roles
        if not access.at_least("agent" if w == "legacy" else w, n)
    }
    covered = {(m, p) for m, p, _ in MATRIX}
    assert {k for k in access.API_ROUTES} <= covered  # every API route with a rule is in the matrix
    assert len({n for _, _, n in MATRIX}) == 3


def test_a_viewer_sees_no_action_buttons_and_an_admin_sees_erase(
    server: tuple[str, sa.Engine], keys: dict[str, str]
) -> None:
    url, engine = server
    cid = str(alert_store.list_alerts(engine, "open", limit=1)["customer_id"].iloc[0])
    viewer, admin = _login(url, keys["viewer"]), _login(url, keys["admin"])
    listed = viewer.get("/ui/").text
    assert "Acknowledge alert" not in listed and '<strong id="who">vera</strong>' in listed
    page = admin.get(f"/ui/customers/{cid}").text
    assert "Acknowledge alert" in page and f"Erase customer {cid}" in page
    assert "Erase customer" not in viewer.get(f"/ui/customers/{cid}").text
    # a bearer key may read pages but never act: acting needs a session's CSRF token
    bearer = httpx.get(f"{url}/ui/", headers={"authorization": f"Bearer {keys['admin']}"})
    assert bearer.status_code == 200 and "Acknowledge alert" not in bearer.text


def test_the_effect_page_names_the_value_target_of_the_served_model(
    server: tuple[str, sa.Engine], keys: dict[str, str]
) -> None:
    """Any signed-in role reads /ui/effect (a viewer here, as MATRIX has it); the page says what its
    incremental value is in: the value target of the version this service serves (GET /model), in the
    words of `diamond effect`."""
    url, _ = server
    model = httpx.get(f"{url}/model", headers={"authorization": f"Bearer {keys['viewer']}"}).json()
    assert model["value_target"]["target"] == "revenue"  # CDNOW has no margin
    page = _login(url, keys["viewer"]).get("/ui/effect")
    assert page.status_code == 200
    line = re.search(r'<p class="hint" data-value-target>(.*?)</p>', page.text, re.S)
    assert line is not None, page.text
    assert html.unescape(" ".join(line.group(1).split())) == (
        f"Value: revenue: net amount (refunds negative) (the served model's, version {model['version']}; "
        "value_after and incr. value measure it)."
    )


def test_wrong_keys_are_throttled_per_address_and_logged(
    server: tuple[str, sa.Engine], keys: dict[str, str]
) -> None:
    """From 127.0.0.2, a burst of wrong keys (API and sign-in) until the address is refused, even with a
    right key; 127.0.0.1 is not affected. Each refusal is logged without the key."""
    url, engine = server
    limit = ServingConfig.load().auth.max_failures
    attacker = httpx.Client(
        base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=60
    )
    codes = []
    for i in range(limit):
        if i % 2:
            codes.append(attacker.post("/ui/login", data={"key": f"guess-{i}"}).status_code)
        else:
            codes.append(attacker.get("/model", headers={"authorization": f"Bearer guess-{i}"}).status_code)
    assert codes == [401] * limit
    refused = attacker.get("/model", headers={"authorization": f"Bearer {keys['admin']}"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "too many wrong keys" in refused.json()["error"]
    page = attacker.post("/ui/login", data={"key": keys["admin"]}, follow_redirects=False)
    assert page.status_code == 429 and "Too many attempts" in page.text and "set-cookie" not in page.headers
    ok = httpx.get(f"{url}/model", headers={"authorization": f"Bearer {keys['admin']}"})
    assert ok.status_code == 200  # another address
    failed = audit.entries(engine, ["login-failed"])
    assert (failed["client"] == "127.0.0.2").sum() == limit // 2
    log = (Path(engine.url.database).parent / "serve.log").read_text(encoding="utf-8")
    lines = [line for line in log.splitlines() if "refused a wrong API key" in line and "127.0.0.2" in line]
    assert len(lines) == limit and not any("guess-" in line for line in log.splitlines())


# --- in a browser -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (make chromium)")
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield chromium
        chromium.close()


def _browser_login(browser: object, url: str, key: str) -> tuple[object, object]:
    """A fresh browser context signed in through the form with `key`: (context, page)."""
    context = browser.new_context(base_url=url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto("/ui/")
    assert page.url.endswith("/ui/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/ui/")
    return context, page


@pytest.fixture
def page(browser: object, server: tuple[str, sa.Engine], keys: dict[str, str]) -> Iterator[object]:
    """A fresh browser context, signed in through the form with the agent key (named NAME)."""
    context, page = _browser_login(browser, server[0], keys["agent"])
    assert page.locator("#who").inner_text() == NAME
    yield page
    context.close()


def _shown_ids(page: object) -> list[int]:
    rows = page.locator("table.alerts tbody tr")
    return [int(x) for x in rows.evaluate_all("rs => rs.map(r => r.dataset.alertId)")]


def test_browser_alert_list_is_ranked_by_value_at_risk(page: object, server: tuple[str, sa.Engine]) -> None:
    _, engine = server
    stored = alert_store.list_alerts(engine, "open", limit=50, model=False)  # customers only
    assert len(stored) > 10
    assert _shown_ids(page) == stored["id"].tolist()
    shown = page.locator("table.alerts tbody tr").evaluate_all("rs => rs.map(r => +r.dataset.valueAtRisk)")
    assert shown == sorted(shown, reverse=True)
    assert page.get_by_role("heading", level=1).inner_text().startswith("Open alerts")
    page.screenshot(path=str(ARTEFACTS / "alerts.png"), full_page=True)
    # filter by tier: only that tier, still ranked
    tier = str(stored["tier"].iloc[0])
    page.get_by_label("Tier").select_option(tier)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(rf".*tier={tier}.*"))
    in_tier = alert_store.list_alerts(engine, "open", tier=tier, limit=50, model=False)
    assert _shown_ids(page) == in_tier["id"].tolist()


def test_browser_customer_page(page: object, server: tuple[str, sa.Engine]) -> None:
    _, engine = server
    first = page.locator("table.alerts tbody tr").first
    cid = first.get_attribute("data-customer")
    first.get_by_role("link", name=cid).click()
    page.wait_for_url(re.compile(rf".*/ui/customers/{cid}$"))
    assert page.get_by_role("heading", level=1).inner_text() == f"Customer {cid}"
    history = store.score_history(engine, cid)
    assert len(history) == 2  # both runs
    section = page.locator("section", has=page.get_by_role("heading", name="Score history"))
    assert section.locator("tbody tr").count() == 2 and section.locator("svg[role=img]").count() == 1
    tiers_shown = page.locator("section", has=page.get_by_role("heading", name="Tier history"))
    assert tiers_shown.locator("tbody tr").count() == len(tier_store.tier_history(engine, cid))
    snap = store.read_rows(engine, store.SCORES, [cid])
    words = [r["text"] for r in json.loads(snap["reasons"].iloc[0])]
    assert page.locator("ul.why li").all_inner_texts()[0].startswith(words[0])
    events = store.recent_events(engine, cid)
    assert 0 < len(events) <= store.RECENT_EVENTS
    shown = page.locator("section", has=page.get_by_role("heading", name="Recent events")).locator("tbody tr")
    assert shown.count() == len(events)
    playbook = page.locator("section", has=page.get_by_role("heading", name="Playbook")).locator("p")
    assert (
        playbook.inner_text() == alert_store.list_alerts(engine, "open", customer_id=cid)["playbook"].iloc[0]
    )
    # time to churn: each point within the horizon, then P(churn over H) at H, and the expected days
    now = snap.iloc[0]
    curve = page.locator("section", has=page.get_by_role("heading", name="Time to churn"))
    within = [
        c for c in ("churn_30d", "churn_60d", "churn_90d", "churn_180d") if int(c[6:-1]) < now.horizon_days
    ]
    assert curve.locator("thead th.num").all_inner_texts() == [
        *(f"{c[6:-1]} days" for c in within),
        f"{now.horizon_days} days",
    ]
    shown_curve = curve.locator("tbody td.num").all_inner_texts()
    assert shown_curve == [*(f"{now[c]:.2f}" for c in within), f"{now.churn_probability:.2f}"]
    assert f": {now.days_to_churn:.0f}." in page.locator("#days-to-churn").inner_text()
    # which model scored the customer, as the snapshot says
    model = page.locator("#churn-model")
    assert model.get_attribute("data-model") == now.churn_model
    assert model.inner_text() == {
        "contract_hazard": "contract: cancellation hazard",
        "contract_booster": "contract: churn model on cancellations",
    }.get(now.churn_model, "purchase silence")
    page.screenshot(path=str(ARTEFACTS / "customer.png"), full_page=True)


def test_browser_acknowledged_alert_leaves_the_open_list(page: object, server: tuple[str, sa.Engine]) -> None:
    _, engine = server
    target = _shown_ids(page)[0]
    page.get_by_role("button", name=f"Acknowledge alert {target}").click()
    page.wait_for_url(re.compile(r".*done=ack.*"))
    assert page.get_by_role("status").inner_text() == f"Alert {target} acknowledged."
    page.reload()
    assert target not in _shown_ids(page)
    row = alert_store.get_alert(engine, target)
    assert row["status"] == "acknowledged" and row["owner"] == NAME
    page.get_by_label("Status").select_option("acknowledged")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*status=acknowledged.*"))
    assert target in _shown_ids(page)


def test_browser_overview(page: object, server: tuple[str, sa.Engine]) -> None:
    _, engine = server
    page.get_by_role("link", name="Overview").click()
    page.wait_for_url(re.compile(r".*/ui/overview$"))
    summary = store.tier_summary(engine)
    dist = page.locator("section", has=page.get_by_role("heading", name="Tier distribution"))
    rows = dist.locator("tbody tr").all_inner_texts()
    assert {r.split("\t")[0]: int(r.split("\t")[1].replace(",", "")) for r in rows} == {
        t: n for t, (n, _) in summary.items()
    }
    moves = tier_store.tier_movements(engine, tier_store.latest_run(engine)[0], include_new=True)
    shown = page.locator("section", has=page.get_by_role("heading", name="Tier movements since the last run"))
    assert shown.locator("tbody tr").count() == len(moves) > 0
    assert page.locator("svg[role=img]").count() == 4  # tiers, value at risk, movements, drift
    page.screenshot(path=str(ARTEFACTS / "overview.png"), full_page=True)


def test_browser_model_health_is_the_stored_drift(page: object, server: tuple[str, sa.Engine]) -> None:
    _, engine = server
    drift = monitoring.latest_drift(engine)  # the LATER run: CDNOW's cohort has aged since the cutoff
    assert drift is not None and drift["alert"] and drift["over"] >= 1
    page.goto("/ui/overview")
    health = page.locator("section", has=page.get_by_role("heading", name="Model health"))
    facts = health.locator("dl.facts").inner_text()
    assert f"{drift['max_psi']:.3f}" in facts and drift["worst"] in facts
    assert f"v{drift['model_version']}" in facts and f"{drift['as_of']:%Y-%m-%d}" in facts
    assert health.locator("#drift-over").inner_text().startswith(f"{drift['over']} of ")
    assert "population stability index" in health.inner_text()
    rows = health.locator("table.drift tbody tr")
    shown = rows.evaluate_all("rs => rs.map(r => [r.dataset.column, +r.dataset.psi, r.className])")
    top = drift["psi"][: dashboard.DRIFT_TOP]
    expected = top + [c for c in drift["psi"] if c["kind"] == "score" and c not in top]
    assert [(n, p) for n, p, _ in shown] == [(c["name"], c["psi"]) for c in expected]
    assert {"churn_probability", "predicted_value"} <= {n for n, _, _ in shown}
    over = [n for n, p, _ in shown if p >= drift["psi_alert"]]
    assert [n for n, _, cls in shown if cls == "over"] == over and len(over) == drift["over"]
    assert rows.nth(0).locator("td.num").inner_text() == f"{drift['psi'][0]['psi']:.3f}"
    chart = health.locator("svg[role=img]")
    assert chart.count() == 1 and chart.locator(f'rect[fill="{charts.LINE}"]').count() == len(over)
    assert health.get_by_role("button", name=re.compile(r"Resolve alert \d+")).count() == 1
    page.screenshot(path=str(ARTEFACTS / "overview-model-health.png"), full_page=True)
    health.screenshot(path=str(ARTEFACTS / "model-health.png"))


def test_browser_model_health_banner_until_resolved(page: object, server: tuple[str, sa.Engine]) -> None:
    url, engine = server
    live = alert_store.list_alerts(engine, "live", model=True)
    assert len(live) == 1  # raised by the LATER run's drift
    alert_id, opened = int(live["id"].iloc[0]), pd.Timestamp(live["opened_at"].iloc[0])
    over = monitoring.latest_drift(engine)["over"]
    banner = page.get_by_role("region", name="Model health")
    says = f"Model health: drift over threshold on {over} columns since {opened:%Y-%m-%d}"
    assert banner.inner_text().startswith(says)
    customers = page.locator("table.alerts tbody tr").evaluate_all("rs => rs.map(r => r.dataset.customer)")
    assert alert_rules.MODEL_ID not in customers and len(customers) == dashboard.PAGE
    assert alert_store.count_alerts(engine, "open", model=False) + 1 == alert_store.count_alerts(
        engine, "open"
    )
    # acknowledge and resolve it from the banner, through the same CSRF-protected forms as customer alerts
    banner.get_by_role("button", name=f"Acknowledge alert {alert_id}").click()
    page.wait_for_url(re.compile(r".*done=ack.*"))
    assert f"(acknowledged, {NAME})" in banner.inner_text()
    banner.get_by_role("button", name=f"Resolve alert {alert_id}").click()
    page.wait_for_url(re.compile(r".*done=resolve.*"))
    assert page.get_by_role("status").inner_text() == f"Alert {alert_id} resolved."
    assert banner.count() == 0
    row = alert_store.get_alert(engine, alert_id)
    assert row["status"] == "resolved" and row["resolved_by"] == NAME
    assert alert_store.actions(engine, [alert_id])["action"].tolist() == ["acknowledged", "resolved"]
    # the model is not a customer: its old page is the overview's model-health section
    moved = _login(url).get(f"/ui/customers/{alert_rules.MODEL_ID}")
    assert moved.status_code == 303 and moved.headers["location"] == "/ui/overview#model-health"
    page.goto(f"/ui/customers/{alert_rules.MODEL_ID}")
    assert page.url.endswith("/ui/overview#model-health")
    health = page.locator("section", has=page.get_by_role("heading", name="Model health"))
    assert "resolved by hand" in health.inner_text() and health.get_by_role("button").count() == 0


def test_browser_a_wrong_key_is_refused(browser: object, server: tuple[str, sa.Engine]) -> None:
    url, _ = server
    context = browser.new_context(base_url=url)
    page = context.new_page()
    page.goto("/ui/customers/00002")
    page.get_by_label("API key").fill("guessed-key")
    with page.expect_response(lambda r: r.url.endswith("/ui/login") and r.request.method == "POST") as reply:
        page.get_by_role("button", name="Sign in").click()
    assert reply.value.status == 401
    assert page.get_by_role("alert").inner_text() == "That API key is not accepted."
    assert context.cookies() == []
    page.screenshot(path=str(ARTEFACTS / "login-refused.png"), full_page=True)
    page.goto("/ui/")
    assert page.url.endswith("/ui/login")
    context.close()


def test_browser_sign_out_ends_the_session_even_for_a_copied_cookie(
    browser: object, server: tuple[str, sa.Engine], keys: dict[str, str]
) -> None:
    url, engine = server
    context, page = _browser_login(browser, url, keys["agent"])
    stolen = [c for c in context.cookies() if c["name"] == webauth.COOKIE]
    assert len(stolen) == 1
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{url}/ui/login")
    assert [c for c in context.cookies() if c["name"] == webauth.COOKIE] == []
    # the cookie copied before signing out, put back into another browser: refused at once
    thief = browser.new_context(base_url=url)
    thief.add_cookies(stolen)
    other = thief.new_page()
    other.goto("/ui/overview")
    assert "/ui/login" in other.url and other.get_by_label("API key").count() == 1
    other.goto("/ui/")
    assert other.url.endswith("/ui/login")
    assert audit.entries(engine, ["logout"], limit=1)["who"].tolist() == [NAME]
    thief.close()
    context.close()


def test_browser_a_removed_key_ends_its_sessions_at_the_next_request(
    browser: object, server: tuple[str, sa.Engine], keys: dict[str, str]
) -> None:
    url, _ = server
    printed = run_diamond("keys", "add", "temp-agent", "--role", "agent", "--file", keys["file"]).stdout
    temp = re.search(r"shown once: (\S+)", printed).group(1)
    context, page = _browser_login(browser, url, temp)
    assert page.locator("#who").inner_text() == "temp-agent"
    page.get_by_role("link", name="Overview").click()
    page.wait_for_url(re.compile(r".*/ui/overview$"))
    run_diamond("keys", "remove", "temp-agent", "--file", keys["file"])  # no restart
    page.reload()
    assert "/ui/login" in page.url  # the very next request: signed out
    page.get_by_label("API key").fill(temp)
    with page.expect_response(lambda r: r.url.endswith("/ui/login") and r.request.method == "POST") as reply:
        page.get_by_role("button", name="Sign in").click()
    assert reply.value.status == 401  # and the key itself is refused
    assert httpx.get(f"{url}/model", headers={"authorization": f"Bearer {temp}"}).status_code == 401
    context.close()


def test_browser_an_admin_erases_a_customer(
    browser: object, server: tuple[str, sa.Engine], keys: dict[str, str]
) -> None:
    url, engine = server
    cid = str(alert_store.list_alerts(engine, "open", limit=1)["customer_id"].iloc[-1])
    context, page = _browser_login(browser, url, keys["admin"])
    page.goto(f"/ui/customers/{cid}")
    page.get_by_role("button", name=f"Erase customer {cid}").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Customer erased"
    assert alert_store.list_alerts(engine, None, customer_id=cid).empty
    assert store.read_rows(engine, store.SCORES, [cid]).empty and store.score_history(engine, cid).empty
    page.goto(f"/ui/customers/{cid}")
    assert page.get_by_role("heading", level=1).inner_text() == "Unknown customer"
    forgot = audit.entries(engine, ["forget"], limit=1)
    assert forgot[["who", "role"]].values.tolist() == [["adam", "admin"]]
    assert forgot["target"].iloc[0] == audit.customer_hash(audit.salt(engine), cid) != cid
    context.close()


# --- capacity: the queue page, and a resolve letting the queue move on --------------------------------------

TEAM_BUDGET = 5


@pytest.fixture(scope="module")
def queued_server(
    cdnow_champion: Path, cdnow_dir: Path, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, str]
) -> Iterator[tuple[str, sa.Engine]]:
    """A served champion whose diamond and gold alerts share a budget of TEAM_BUDGET a week, scored at
    CUTOFF and then LATER (a later week: the budget renews, the alerts in hand still use it)."""
    import yaml

    work = tmp_path_factory.mktemp("queued")
    alerts = yaml.safe_load((ROOT / "serving.yaml").read_text(encoding="utf-8"))["alerts"]
    alerts["capacity"] = {
        "period_days": 7,
        "teams": {"accounts": {"tiers": ["diamond", "gold"], "budget": TEAM_BUDGET}},
    }
    env = {"DIAMOND_SESSION_SECRET": "dashboard-test-secret", "DIAMOND_API_KEY_FILE": keys["file"]}
    with serve_champion(cdnow_champion, cdnow_dir, work, serving={"alerts": alerts}, env=env) as url:
        run_diamond("score", "--data", str(cdnow_dir), "--as-of", LATER, cwd=work)
        engine = sa.create_engine(f"sqlite:///{work / 'diamond.db'}")
        yield url, engine
        engine.dispose()


def _queue_rows(page: object) -> list[str]:
    return page.locator("table.queue[data-team=accounts] tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.customer)"
    )


def test_browser_the_queue_page_and_a_resolve_that_lets_the_next_alert_enter(
    browser: object, queued_server: tuple[str, sa.Engine], keys: dict[str, str]
) -> None:
    from serving import capacity

    url, engine = queued_server
    config = ServingConfig.load(Path(engine.url.database).parent / "serving.yaml")
    rules = capacity.rules_of(engine, config)
    when = capacity.clock(engine)
    waiting, teams = capacity.queue(engine, rules, when)
    team = next(t for t in teams if t.team == "accounts")
    assert team.budget == TEAM_BUDGET and team.used <= TEAM_BUDGET and team.queued > 0
    live = alert_store.list_alerts(engine, "live", model=False)
    in_team = live[live["tier"].isin(["diamond", "gold"])]
    assert len(in_team) <= TEAM_BUDGET  # never more in the team's hands than its budget
    queued = alert_store.list_alerts(engine, "queued")
    assert not queued.empty and queued["priority"].tolist() == sorted(queued["priority"], reverse=True)

    context, page = _browser_login(browser, url, keys["viewer"])
    assert not set(queued["id"]) & set(_shown_ids(page))  # queued alerts are not in the alert list
    page.get_by_role("link", name="Queue").click()
    page.wait_for_url(re.compile(r".*/ui/queue$"))
    assert page.get_by_role("heading", level=1).inner_text() == "Capacity and the queue"
    cells = page.locator("table.teams tr[data-team=accounts] td").all_inner_texts()
    assert cells[:6] == [
        "accounts",
        str(TEAM_BUDGET),
        str(team.live),
        str(team.done),
        str(team.free),
        f"{team.queued:,}",
    ]
    mine = waiting[waiting["team"] == "accounts"]
    assert _queue_rows(page) == mine["customer_id"].head(dashboard.QUEUE_PAGE).tolist()
    page.screenshot(path=str(ARTEFACTS / "queue.png"), full_page=True)
    context.close()

    # an agent resolves an alert that entered at the first run (an earlier week): its budget frees at
    # once, and the first in the queue enters: open, entered at the store's clock (the latest run)
    first = alert_store.list_alerts(engine, "live", model=False)
    earlier = first[first["tier"].isin(["diamond", "gold"]) & (first["entered_at"] < pd.Timestamp(when))]
    assert not earlier.empty, "no alert of the team from the first run is still live"
    target = earlier.iloc[0]
    head = mine.iloc[0]
    context, page = _browser_login(browser, url, keys["agent"])
    page.goto(f"/ui/customers/{target['customer_id']}")
    page.get_by_role("button", name=f"Resolve alert {target['id']}").click()
    page.wait_for_load_state()
    entered = alert_store.get_alert(engine, int(head["id"]))
    assert entered["status"] == "open" and entered["entered_at"] == when
    page.goto("/ui/queue")
    assert head["customer_id"] not in _queue_rows(page)
    context.close()
