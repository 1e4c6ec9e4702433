"""A real `diamond serve` on a store it cannot write (issue 18): the dashboard's actions answer 503 with a
page saying why instead of a bare 500, the pages still read; and every refused request (4xx) is one line of
the server's log that carries no value from the request."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import API_KEY, AUTH, serve_champion

MARKER = "zz-marker-9137"  # a value no log line may carry


@pytest.fixture(scope="module")
def read_only(
    cdnow_champion: Path, cdnow_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    work = tmp_path_factory.mktemp("read-only")
    env = {"DIAMOND_STORE_URL": f"sqlite:///file:{work / 'diamond.db'}?mode=ro&uri=true"}
    with serve_champion(cdnow_champion, cdnow_dir, work, env=env) as url:
        yield url, work


def test_the_dashboard_on_a_read_only_store_reads_and_refuses_writes_with_a_503_page(
    read_only: tuple[str, Path],
) -> None:
    """Signing in writes a session row (server-side sessions, serving.webauth), so on a store that cannot be
    written it is the 503 page saying why; pages still read with a key."""
    url, _ = read_only
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=60)
    reply = client.post("/ui/login", data={"name": "alice", "key": API_KEY, "next": "/ui/"})
    assert reply.status_code == 503, reply.text[:2000]
    assert "The store cannot be written right now" in reply.text and "nothing was changed" in reply.text
    assert "Traceback" not in reply.text and "readonly" not in reply.text
    page = client.get("/ui/?status=all", headers=AUTH)
    assert page.status_code == 200 and 'href="/ui/customers/' in page.text  # reading works


def test_every_refusal_is_one_log_line_without_request_values(read_only: tuple[str, Path]) -> None:
    url, work = read_only
    refusals = [
        httpx.post(f"{url}/score", json={"customers": [{"customer_id": MARKER, "x": MARKER}]}, headers=AUTH),
        httpx.post(
            f"{url}/score?{MARKER}=1", json={"customers": []}, headers={"Authorization": f"Bearer {MARKER}"}
        ),
        httpx.get(f"{url}/ui/customers/{MARKER}", headers=AUTH),
        httpx.get(f"{url}/{MARKER}", headers=AUTH),
        httpx.post(f"{url}/score", content=MARKER, headers={**AUTH, "content-type": "text/plain"}),
    ]
    codes = [r.status_code for r in refusals]
    assert [c // 100 for c in codes] == [4, 4, 2 if codes[2] == 200 else 4, 4, 4], codes
    log = (work / "serve.log").read_text(encoding="utf-8")
    lines = [line for line in log.splitlines() if "refused " in line]
    assert any("refused 400 POST /score" in line for line in lines), log[-3000:]
    assert any("refused 401 POST /score" in line for line in lines), log[-3000:]
    # an unknown route: 403 for a key whose role covers no such route (serving.access), else 404
    assert any(re.search(r"refused 40[34] GET \(other\)", line) for line in lines), log[-3000:]
    assert any("refused 415 POST /score" in line for line in lines), log[-3000:]
    assert len(lines) >= sum(1 for c in codes if 400 <= c < 500)
    assert MARKER not in log


def test_inline_timestamps_follow_the_rules_of_files(read_only: tuple[str, Path]) -> None:
    """Inline timestamps with and without an offset in one request were accepted though files are refused."""
    url, _ = read_only
    sent = [
        {"timestamp": "1997-03-01T10:00:00", "amount": 10.0},
        {"timestamp": "1997-03-02T10:00:00+05:00", "amount": 12.0},
    ]
    body = {"customers": [{"customer_id": "a", "transactions": sent}]}
    mixed = httpx.post(f"{url}/score", json=body, headers=AUTH, timeout=60)
    assert mixed.status_code == 400, mixed.text
    assert (
        "column 'timestamp': mixes time zones: 1 with no time zone, 1 with an offset" in mixed.json()["error"]
    )
    sent[0]["timestamp"] = "1997-03-01T10:00:00Z"  # one style: converted to UTC and scored
    same = httpx.post(f"{url}/score", json=body, headers=AUTH, timeout=60)
    assert same.status_code == 200, same.text
    assert same.json()["scores"][0]["as_of"] == "1997-03-02T05:00:00"
