"""Fault injection for alert delivery, end to end: the real `diamond alerts deliver` process (subprocess)
against a real Standard Webhooks receiver on 127.0.0.1 and a real SQLite store.

Each scenario starts from an outbox of 120 alerts (ids ``alert-{i}-v1-crm``, filled with
``serving.outbox.enqueue``), runs delivery under one fault, and checks: every signature verifies, every id
is processed exactly once by the receiver after de-duplication by ``webhook-id``, retries re-send the
same id and the same bytes, nothing is lost (every row ends delivered or dead), the store agrees with the
receiver. Settings: ``base_delay_s`` 0.05, ``max_delay_s`` 0.2, ``max_attempts`` 3 (5 in 1, 8 in 3).

Measured (pytest -s prints one ``RESULT`` line per scenario; numbers from a run on 2 CPUs):

    scenario                                         enqueued attempts on-wire dup'd once lost dead
    1. HTTP 500 on the first 1-3 attempts of 30 ids       120      180     180     0  120    0    0
    2. 10 ids answered after 0.6 s (timeout 0.3 s)        120      130     130    10  120    0    0
    3. receiver gone after 50, back on the same port      120      190     120     0  120    0    0
    4. SIGKILL after the POST of the 30th alert           120      121     121     1  120    0    0
    5. 12 ids always refused, then 6 of them retried      120      150     150     0  114    0    6

* enqueued: alerts in the outbox; attempts: the sender's attempts (the outbox counters, refused and cut
  connections included); on-wire: authentic requests that reached the receiver; dup'd: of those, re-sends
  of an id the receiver had already processed (same webhook-id, absorbed by the de-dup); once: distinct
  ids processed, each exactly once; lost: neither delivered nor dead (must be 0); dead: dead letters.
* 1: one `diamond alerts deliver` run retried every refused id within its own loop; each id arrived
  refusals + 1 times, no dead letters.
* 2: each timed-out request had been processed, so its retry is a duplicate on the wire, same id.
* 3: the receiver cut connections after the 50th, then stopped listening; the other 70 each failed at
  least once (here 70 extra attempts, none reached a receiver) and were delivered once it was back.
* 4: killed after the POST, before the outcome commit: 29 delivered, the 30th stays pending under its
  claim lease. A restarted `diamond alerts deliver` delivers the other 90 and leaves it (1 pending):
  the lease (``deliver_due(lease_s=300)``) cannot be set from the CLI or serving.yaml, so the step after
  the lease is ``serving.delivery.deliver_due(..., now=now + 300 s + timeout)`` in-process, which re-sends
  it once with the same id (the one duplicate).
* 5: the 12 ids became dead letters after 3 attempts each (`diamond alerts dead` lists exactly them);
  after the receiver was fixed only the 6 requeued with ``retry_dead`` were sent (once each), the
  other 6 stayed dead and were never sent to it.
* Attempts in 3 and duplicates in 2 depend on timing and may vary slightly between runs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from serving import store
from serving.config import ServingConfig
from serving.delivery import DeliveryReport, deliver_due
from serving.outbox import OUTBOX, dead_letters, enqueue, pending_count, retry_dead
from tests.helpers import DIAMOND, run_diamond
from tests.helpers.webhooks import WEBHOOK_SECRET as SECRET
from tests.helpers.webhooks import WebhookReceiver

SECRET_ENV = "DIAMOND_TEST_RELIABILITY_SECRET"
# alerts in the outbox at the start of every scenario (`make bench-reliability` enqueues 1,200)
ENQUEUED = int(os.environ.get("DIAMOND_FAULT_ALERTS", "120"))
LEASE_S = 300.0  # deliver_due's default lease; `diamond alerts deliver` cannot change it


# ------------------------------------------------------------------------------------------- helpers


@dataclass
class Site:
    """One test's working folder: serving.yaml, the SQLite store and the environment for the CLI."""

    path: Path
    config: Path
    engine: sa.Engine
    ids: list[str]
    runs: int = 0  # `diamond alerts deliver` processes started


@pytest.fixture(scope="module")
def filled_outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with ENQUEUED alerts enqueued (ids ``alert-{i}-v1-crm``), written once and copied per test."""
    db = tmp_path_factory.mktemp("template") / "diamond.db"
    eng = store.prepare(sa.create_engine(f"sqlite:///{db}"))
    for i in range(ENQUEUED):
        payload = {"alert_id": i, "customer_id": f"C-{i:04d}", "tier": "gold", "value_at_risk": 100.0 + i}
        enqueue(eng, "crm", payload, f"alert-{i}-v1-crm")
    eng.dispose()
    return db


@pytest.fixture
def site(tmp_path: Path, filled_outbox: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    db = tmp_path / "diamond.db"
    shutil.copyfile(filled_outbox, db)
    monkeypatch.setenv("DIAMOND_STORE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("DIAMOND_SERVING_CONFIG", str(tmp_path / "serving.yaml"))
    monkeypatch.setenv(SECRET_ENV, SECRET)
    eng = sa.create_engine(f"sqlite:///{db}")
    assert pending_count(eng) == ENQUEUED
    yield Site(tmp_path, tmp_path / "serving.yaml", eng, [f"alert-{i}-v1-crm" for i in range(ENQUEUED)])
    eng.dispose()


def configure(site: Site, receiver: WebhookReceiver, *, max_attempts: int, timeout_s: float = 2.0) -> None:
    webhooks = {
        "max_attempts": max_attempts,
        "base_delay_s": 0.05,
        "max_delay_s": 0.2,
        "endpoints": [{"name": "crm", "url": receiver.url, "secret_env": SECRET_ENV, "timeout_s": timeout_s}],
    }
    site.config.write_text(yaml.safe_dump({"webhooks": webhooks}), encoding="utf-8")


def deliver(site: Site) -> int:
    """One `diamond alerts deliver` run; the pending count it prints."""
    site.runs += 1
    printed = run_diamond("alerts", "deliver", cwd=site.path).stdout
    found = re.search(r"([\d,]+) pending", printed)
    assert found, printed
    return int(found.group(1).replace(",", ""))


def deliver_until_done(site: Site, bound: int = 8) -> int:
    """Run `diamond alerts deliver` (as cron would) until nothing is pending; the number of runs."""
    for run in range(1, bound + 1):
        if deliver(site) == 0:
            assert pending_count(site.engine) == 0
            return run
    raise AssertionError(f"still {pending_count(site.engine)} pending after {bound} runs")


def outbox(site: Site) -> dict[str, dict[str, Any]]:
    with site.engine.connect() as conn:
        return {r["webhook_id"]: dict(r) for r in conn.execute(sa.select(OUTBOX)).mappings()}


def popen_deliver(site: Site) -> subprocess.Popen[bytes]:
    site.runs += 1
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    with (site.path / "deliver.log").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [DIAMOND, "alerts", "deliver"], cwd=site.path, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def wait_for(condition: Callable[[], bool], bound_s: float = 60.0) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@dataclass(frozen=True)
class Outcome:
    scenario: str
    enqueued: int
    attempts: int  # sender side: sum of the outbox's attempt counters (refused connections included)
    on_wire: int  # authentic requests that reached the receiver
    duplicates: int  # of those, re-sends of an id the receiver had already accepted
    delivered_once: int  # distinct ids accepted after de-dup
    lost: int  # neither accepted nor dead
    dead: int


def outcome(scenario: str, site: Site, receiver: WebhookReceiver, extra_attempts: int = 0) -> Outcome:
    """Tally a finished scenario and check the invariants every scenario shares."""
    rows = outbox(site)
    assert set(rows) == set(site.ids)
    assert receiver.rejected == []  # every signature verified
    assert all(len(bodies) == 1 for bodies in receiver.bodies.values())  # retries re-send the same bytes
    assert set(receiver.ids) <= set(site.ids)
    assert all(r["status"] in ("delivered", "dead") for r in rows.values())  # nothing left pending
    dead = {w for w, r in rows.items() if r["status"] == "dead"}
    delivered = {w for w, r in rows.items() if r["status"] == "delivered"}
    assert delivered == set(receiver.processed)  # the store agrees with the receiver
    lost = [w for w in site.ids if w not in receiver.processed and w not in dead]
    result = Outcome(
        scenario,
        len(site.ids),
        sum(r["attempts"] for r in rows.values()) + extra_attempts,
        len(receiver.ids),
        receiver.duplicates,
        len(receiver.processed),
        len(lost),
        len(dead),
    )
    print(f"\nRESULT {result} cli_runs={site.runs}")
    return result


# ------------------------------------------------------------------------------------------ scenarios


def refuse_first(i: int) -> int:
    """Alert i is refused (HTTP 500) this many times before it is accepted: 1-3 for every 4th alert."""
    return 1 + i % 3 if i % 4 == 0 else 0


def test_http_500_then_accept(site: Site, receiver: WebhookReceiver) -> None:
    refusals = {f"alert-{i}-v1-crm": refuse_first(i) for i in range(ENQUEUED)}
    receiver.fault = lambda webhook_id, nth: "fail" if nth <= refusals[webhook_id] else None
    configure(site, receiver, max_attempts=5)

    deliver_until_done(site)

    refused = sum(1 for n in refusals.values() if n)
    result = outcome(f"HTTP 500 on the first 1-3 attempts of {refused} ids", site, receiver)
    assert result.delivered_once == ENQUEUED and result.lost == 0 and result.dead == 0
    assert receiver.per_id == Counter({w: n + 1 for w, n in refusals.items()})  # each retry: the same id
    assert result.on_wire == ENQUEUED + sum(refusals.values()) == result.attempts
    assert result.duplicates == 0
    assert dead_letters(site.engine) == []


def test_receiver_times_out(site: Site, receiver: WebhookReceiver) -> None:
    slow = {f"alert-{i}-v1-crm" for i in range(3, ENQUEUED, 12)}  # 10 ids: processed, answered too late
    receiver.fault = lambda webhook_id, nth: "slow" if nth == 1 and webhook_id in slow else None
    configure(site, receiver, max_attempts=3, timeout_s=0.3)

    deliver_until_done(site)

    result = outcome(f"timeout (0.6 s answer, 0.3 s timeout) on {len(slow)} ids", site, receiver)
    assert result.delivered_once == ENQUEUED and result.lost == 0 and result.dead == 0
    # the sender timed out on each slow id and sent it again with the same id, which the receiver had
    # already processed: a duplicate on the wire, absorbed by the de-dup. (A request that is merely late
    # on a loaded machine would time out too: tolerated, it can only add duplicates of the same kind.)
    assert slow <= {w for w, n in receiver.per_id.items() if n > 1}
    assert result.duplicates == result.on_wire - ENQUEUED >= len(slow)


def test_receiver_goes_away_and_comes_back(site: Site, receiver: WebhookReceiver) -> None:
    receiver.down_after = 50
    configure(site, receiver, max_attempts=8)

    proc = popen_deliver(site)
    try:
        assert receiver.went_down.wait(60)
        receiver.stop()  # the receiver is gone: connections refused on its port

        def every_remaining_row_failed() -> bool:
            with site.engine.connect() as conn:
                untried = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(OUTBOX)
                    .where(OUTBOX.c.status == "pending", OUTBOX.c.last_error.is_(None))
                ).scalar_one()
            return untried == 0

        wait_for(every_remaining_row_failed)  # the outage lasts until each remaining alert has failed
        failed_while_down = pending_count(site.engine)
        receiver.down = False
        receiver.down_after = None
        receiver.start()  # back, on the same port
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    if pending_count(site.engine):  # the run may end while the last retries wait for their backoff
        deliver_until_done(site)

    result = outcome("receiver gone after 50, back on the same port", site, receiver)
    assert failed_while_down == ENQUEUED - 50
    assert result.delivered_once == ENQUEUED and result.lost == 0 and result.dead == 0
    assert result.attempts > ENQUEUED  # refused / cut connections were retried...
    assert result.on_wire == ENQUEUED and result.duplicates == 0  # ...and nothing arrived twice
    assert set(receiver.per_id.values()) == {1}


def test_sigkill_mid_delivery(site: Site, receiver: WebhookReceiver) -> None:
    receiver.delay_s = 0.05  # a slow receiver
    receiver.hold_at = 30  # the 30th alert is processed, then its answer waits for the kill
    configure(site, receiver, max_attempts=3)

    proc = popen_deliver(site)
    try:
        assert receiver.held.wait(60)
        proc.send_signal(signal.SIGKILL)  # killed after the POST, before the outcome is committed
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    receiver.release.set()
    receiver.delay_s = 0.0
    in_flight = receiver.held_id
    assert in_flight is not None

    rows = outbox(site)
    assert sum(r["status"] == "delivered" for r in rows.values()) == 29
    assert rows[in_flight]["status"] == "pending" and rows[in_flight]["attempts"] == 1  # claimed, leased
    assert rows[in_flight]["last_error"] is None

    # restart: everything due is delivered; the killed run's row waits for its lease
    assert deliver(site) == 1
    assert pending_count(site.engine) == 1 and outbox(site)[in_flight]["status"] == "pending"
    assert receiver.per_id[in_flight] == 1

    # the CLI cannot shorten the lease (deliver_due's lease_s=300 is not configurable): step time past it
    config = ServingConfig.load(site.config)
    later = datetime.now(UTC) + timedelta(seconds=LEASE_S + 2.0 + 1)
    report = deliver_due(
        site.engine, config.endpoints(), now=later, max_attempts=3, base_delay_s=0.05, max_delay_s=0.2
    )
    assert report == DeliveryReport(delivered=1)

    result = outcome("SIGKILL after the POST of the 30th alert", site, receiver)
    assert result.delivered_once == ENQUEUED and result.lost == 0 and result.dead == 0
    assert receiver.per_id[in_flight] == 2 and result.duplicates == 1  # re-sent once, same id, de-duplicated
    assert result.on_wire == ENQUEUED + 1
    assert dead_letters(site.engine) == []


def test_always_failing_ids_become_dead_letters(site: Site, receiver: WebhookReceiver) -> None:
    broken = {f"alert-{i}-v1-crm" for i in range(0, ENQUEUED, 10)}  # 12 ids (of 120) always refused
    receiver.fault = lambda webhook_id, nth: "fail" if webhook_id in broken else None
    configure(site, receiver, max_attempts=3)

    deliver_until_done(site)

    assert {r["webhook_id"] for r in dead_letters(site.engine)} == broken
    assert all(receiver.per_id[w] == 3 for w in broken)  # max_attempts, then dead
    listed = run_diamond("alerts", "dead", cwd=site.path).stdout.splitlines()
    assert listed[-1] == f"{len(broken)} dead letter(s)"
    assert {line.split()[0] for line in listed[:-1]} == broken
    assert all("attempts 3" in line and "HTTP 500" in line for line in listed[:-1])

    # the receiver is fixed; an operator requeues half of the dead letters: only those are sent again
    receiver.fault = lambda webhook_id, nth: None
    retried = sorted(broken)[: len(broken) // 2]
    attempts_before = sum(outbox(site)[w]["attempts"] for w in retried)  # retry_dead resets them
    for webhook_id in retried:
        retry_dead(site.engine, webhook_id)
    assert deliver(site) == 0

    result = outcome(
        f"{len(broken)} ids always refused (max_attempts 3), {len(retried)} then retried",
        site,
        receiver,
        attempts_before,
    )
    assert {r["webhook_id"] for r in dead_letters(site.engine)} == broken - set(retried)
    assert all(receiver.per_id[w] == 4 for w in retried)  # 3 refused + 1 accepted after retry_dead
    assert all(receiver.per_id[w] == 3 for w in broken - set(retried))  # never sent to the fixed receiver
    assert result.delivered_once == ENQUEUED - len(broken) + len(retried) and result.lost == 0
    assert result.dead == len(broken) - len(retried)
    assert result.duplicates == 0
