"""Keys, roles, routes and the sign-in throttle (serving.access), as pure rules on text and times; the
middleware that enforces them on a running service is tested in tests/e2e/test_dashboard.py (the role x route
matrix)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from starlette.routing import Mount

from core.config import ConfigError
from serving import access, dashboard
from serving.access import ApiKey, KeyRing, Throttle, hash_key, required


def test_key_file_lines_carry_a_name_a_role_and_a_digest(tmp_path: Path) -> None:
    text = (
        "# the retention team\n"
        f"ann agent sha256:{hash_key('ann-key')}\n"
        f"ops admin {hash_key('ops-key').upper()}  # digests in any case\n"
        "\n"
        f"{hash_key('old-key')}\n"  # a line of the previous format: a bare digest
    )
    keys = access.parse_key_file(text, "keys.txt")
    old = hash_key("old-key")
    assert keys == [
        ApiKey("ann", "agent", hash_key("ann-key")),
        ApiKey("ops", "admin", hash_key("ops-key")),
        ApiKey(f"key-{old[:8]}", access.LEGACY_ROLE, old),
    ]
    assert access.LEGACY_ROLE == "agent"  # what every key could do before roles, nothing more


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ann-key\n", "line 1: expected a sha256 hex digest"),  # a raw key where a digest belongs
        (f"ann boss {hash_key('k')}\n", "line 1: role 'boss' is not one of viewer, agent, admin"),
        (f"ann {hash_key('k')}\n", "line 1: expected NAME ROLE SHA256"),
        (f"<b>x</b> viewer {hash_key('k')}\n", "line 1: name '<b>x</b>'"),
        (f"a viewer {hash_key('k')}\nb agent {hash_key('k')}\n", "line 2: the same key is listed twice"),
        (f"a viewer {hash_key('k')}\na agent {hash_key('j')}\n", "line 2: the name 'a' is used twice"),
    ],
)
def test_a_bad_key_file_line_is_refused_with_its_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        access.parse_key_file(line, "keys.txt")


def test_the_environments_raw_keys_keep_working_as_agents() -> None:
    ring = KeyRing(" alpha , beta,,")
    alpha = ring.match("alpha")
    assert alpha == ApiKey(f"key-{hash_key('alpha')[:8]}", "agent", hash_key("alpha"))
    assert ring.match("beta") is not None and ring.match("gamma") is None and ring.match("") is None
    assert ring.by_id(alpha.id) == alpha and ring.by_id(access.key_id(hash_key("gamma"))) is None


def test_the_key_file_is_reread_when_it_changes_and_fails_closed(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    ann = access.add_key(file, "ann", "viewer")
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    ops = access.add_key(file, "ops", "admin")
    assert ann.startswith("dia_") and len(ann) > 40 and ann not in file.read_text()
    ring = KeyRing("legacy", str(file))
    assert {k.name: k.role for k in ring.accepted()} == {
        f"key-{hash_key('legacy')[:8]}": "agent",
        "ann": "viewer",
        "ops": "admin",
    }
    ann_id = ring.match(ann).id
    access.remove_key(file, "ann")  # another process edits the file: the ring sees it at once
    assert ring.match(ann) is None and ring.by_id(ann_id) is None and ring.match(ops).name == "ops"
    with pytest.raises(ConfigError, match="no key named 'ann'"):
        access.remove_key(file, "ann")
    with pytest.raises(ConfigError, match="name 'ops' is used twice"):
        access.add_key(file, "ops", "viewer")
    file.write_text(file.read_text() + "half-written line\n")  # an edit in progress
    assert ring.match(ops) is None and "line 2" in (ring.error or "")  # closed, not the old keys
    assert ring.match("legacy") is not None  # the environment's keys still work
    file.write_text(file.read_text().splitlines()[0] + "\n")  # the edit finished
    assert ring.match(ops) is not None and ring.error is None
    os.remove(file)
    assert ring.match(ops) is None and "cannot read the key file" in (ring.error or "")
    with pytest.raises(ConfigError, match="cannot read the key file"):
        KeyRing("", str(file))  # at start-up a missing file is an error, not an empty ring


def test_roles_include_the_weaker_ones() -> None:
    assert [r for r in access.ROLES if access.at_least("agent", r)] == ["viewer", "agent"]
    assert access.at_least("admin", "admin") and not access.at_least("viewer", "agent")
    assert not access.at_least("root", "viewer")


def test_every_route_has_a_rule_and_anything_else_needs_admin() -> None:
    assert required("POST", "/score") == "viewer"
    assert required("GET", "/model") == required("HEAD", "/model") == "viewer"
    assert required("GET", "/docs.json") == "viewer"
    assert required("POST", "/model") == "admin"  # a method without a rule
    assert required("GET", "/metrics") == required("POST", "/static_content/x.js") == "admin"
    assert required("GET", "/") == required("GET", "/static_content/swagger-ui.css") == "viewer"  # API docs
    assert required("GET", "/ui/") == required("GET", "/ui/customers/a%2Fb") == "viewer"
    assert required("POST", "/ui/alerts/12/ack") == required("POST", "/ui/alerts/3/snooze") == "agent"
    assert required("POST", "/ui/alerts/12/delete") == "admin"
    assert required("POST", "/ui/customers/00002/forget") == "admin"
    assert required("GET", "/ui/customers/00002/forget") == "viewer"  # a customer page (GET reads only)
    assert required("POST", "/ui/login") == required("GET", "/ui/static/app.css") == access.OPEN
    assert required("POST", "/ui/logout") == access.SESSION
    assert required("GET", "/ui/unknown/page") == "admin"
    # each route of the dashboard app is covered by a rule of its own, not by the admin default
    ruled = {(m, p.pattern) for m, p, _ in access.DASHBOARD_ROUTES}
    assert ("POST", "/ui/alerts/[0-9]+/(ack|snooze|resolve)") in ruled
    for route in dashboard.create_app().routes:
        if isinstance(route, Mount):
            assert ("GET", f"{dashboard.MOUNT}{route.path}/.*") in ruled
            continue
        for method in route.methods - {"HEAD"}:
            sample = (
                f"{dashboard.MOUNT}{route.path}".replace("{customer_id:path}", "c1")
                .replace("{alert_id:int}", "7")
                .replace("{action}", "ack")
            )
            assert [m for m, p, _ in access.DASHBOARD_ROUTES if m == method and p.fullmatch(sample)], sample


def test_the_throttle_refuses_a_client_after_too_many_failures_then_forgives() -> None:
    t = Throttle(failures=3, window_s=60, clients=2)
    for s in (0.0, 1.0):
        t.fail("10.0.0.1", now=s)
    assert t.wait("10.0.0.1", now=2.0) == 0.0
    t.fail("10.0.0.1", now=2.0)
    assert t.wait("10.0.0.1", now=3.0) == pytest.approx(57.0)  # until the first failure is 60 s old
    assert t.wait("10.0.0.2", now=3.0) == 0.0  # per client
    assert t.wait("10.0.0.1", now=60.0) == 0.0  # the first failure left the window
    t.fail("10.0.0.2", now=61.0)
    t.fail("10.0.0.3", now=62.0)  # a third client: the least recently failing one is forgotten
    assert t.wait("10.0.0.1", now=62.5) == 0.0
