"""The scoring service as a CRM system meets it: a real `diamond serve` (BentoML) on 127.0.0.1, a model
trained in the test and promoted in a real MLflow store, a batch snapshot written by `diamond score`, and
real HTTP calls. API keys read from a file are tested in tests/unit/test_serving.py."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest
import yaml

from tests.helpers import API_KEY as KEY
from tests.helpers import CUTOFF, ROOT, STORES, free_port, run_diamond, serve_champion
from tests.helpers.webhooks import WEBHOOK_SECRET as SECRET
from tests.helpers.webhooks import WebhookReceiver


@pytest.fixture(scope="module")
def crm() -> Iterator[WebhookReceiver]:
    """The CRM's webhook endpoint, answering 204."""
    receiver = WebhookReceiver(ok_status=204)
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module", params=STORES)
def server(
    request: pytest.FixtureRequest,
    cdnow_champion: Path,
    cdnow_dir: Path,
    crm: WebhookReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path]]:
    """A served champion whose batch run delivered its alerts to a local webhook receiver; promotions are
    noticed within half a second. Its serving store is a SQLite file, then a PostgreSQL database; the tests
    of the registry rather than the store run on SQLite only (`registry_only`)."""
    work = tmp_path_factory.mktemp("serving")
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres").new_schema()
    crm.reset()
    hook = {"name": "crm", "url": crm.url, "secret_env": "DIAMOND_TEST_WEBHOOK_SECRET"}
    webhooks = {**yaml.safe_load((ROOT / "serving.yaml").read_text())["webhooks"]}
    with serve_champion(
        cdnow_champion,
        cdnow_dir,
        work,
        serving={"poll_s": 0.5, "webhooks": {**webhooks, "endpoints": [hook]}},
        env={"DIAMOND_TEST_WEBHOOK_SECRET": SECRET},
        store_url=url,
    ) as base:
        yield base, work


registry_only = pytest.mark.parametrize("server", ["sqlite"], indirect=True)
"""For tests of the model registry and the process, not the serving store: one store is enough."""


def _score(url: str, body: object, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/score", json=body, headers=headers, timeout=60)


def test_batch_scoring_raised_alerts_and_delivered_them_signed(
    server: tuple[str, Path], crm: WebhookReceiver
) -> None:
    _, work = server
    out = (work / "score.out").read_text(encoding="utf-8").replace("\n", " ")
    notified = int(re.search(r"([\d,]+) to notify", out).group(1).replace(",", ""))
    assert notified > 0 and f"webhooks: {notified:,} delivered, 0 to retry, 0 dead" in out
    assert crm.rejected == []  # every signature valid
    assert len(crm.ids) == len(set(crm.ids)) == notified  # each alert once
    payload = json.loads(crm.requests[0].body)
    for field in ("customer_id", "kind", "tier", "churn_probability", "value_at_risk", "reasons", "playbook"):
        assert field in payload
    listed = run_diamond("alerts", "list", "--limit", "3", cwd=work).stdout
    assert f"{notified:,} live alert(s)" in listed


@registry_only
def test_health_is_open_everything_else_needs_a_key(server: tuple[str, Path]) -> None:
    url, _ = server
    assert httpx.get(f"{url}/healthz").status_code == 200
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["ready"] is True and ready["version"] == "1" and ready["feature_set"] == "rfm_v1"
    body = {"customers": [{"customer_id": "00002"}]}
    assert _score(url, body, key=None).status_code == 401
    assert _score(url, body, key="wrong").status_code == 401
    assert httpx.get(f"{url}/model").status_code == 401
    assert httpx.get(f"{url}/docs.json").status_code == 401
    model = httpx.get(f"{url}/model", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert model["feature_set"] == "rfm_v1" and model["horizon_days"] == 273
    assert list(model["tiers"]) == ["diamond", "gold", "silver", "bronze"]
    assert model["time_to_churn"] == {"churn": "non_contractual", "horizons": [30, 60, 90, 180]}
    assert model["value_target"] == {"target": "revenue", "cost_to_serve": {}}  # CDNOW has no margin
    spec = httpx.get(f"{url}/docs.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert "/score" in spec["paths"] and spec["paths"]["/score"]["post"]["security"] == [{"bearerKey": []}]
    assert "get" in spec["paths"]["/readyz"] and "get" in spec["paths"]["/model"]
    assert spec["components"]["securitySchemes"]["bearerKey"]["scheme"] == "bearer"


def test_by_id_inline_mixed_and_unknown(server: tuple[str, Path], cdnow_dir: Path) -> None:
    url, _ = server
    tx = pd.read_csv(cdnow_dir / "transactions.csv.gz", dtype={"customer_id": str})
    mine = tx[(tx["customer_id"] == "00002") & (tx["timestamp"] <= CUTOFF)]
    inline = {
        "customer_id": "00002-inline",
        "transactions": [
            {"timestamp": t, "amount": a} for t, a in zip(mine["timestamp"], mine["amount"], strict=True)
        ],
    }
    body = {"customers": [{"customer_id": "00002"}, {"customer_id": "nobody"}, inline], "as_of": CUTOFF}
    response = _score(url, body)
    assert response.status_code == 200, response.text
    scores = response.json()["scores"]
    assert [s["customer_id"] for s in scores] == ["00002", "nobody", "00002-inline"]  # request order
    snap, unknown, online = scores
    assert snap["found"] and snap["source"] == "snapshot" and online["source"] == "inline"
    assert not unknown["found"] and "send its history inline" in unknown["error"]
    # the same customer and cutoff: the same numbers from the batch snapshot and from inline history
    for field in ("churn_probability", "predicted_value", "value_at_risk"):
        assert online[field] == pytest.approx(snap[field], rel=1e-9), field
    assert online["tier"] == snap["tier"] and online["rfm_segment"] == snap["rfm_segment"]
    assert 0 < snap["churn_probability"] < 1 and snap["horizon_days"] == 273
    assert 1 <= len(snap["reasons"]) <= 3 and snap["reasons"][0]["text"].endswith("churn risk.")
    # 00002 bought twice on one day (1997-01-12): one purchase day, below the default of 2 (issue 16 fix)
    assert snap["model_version"] == "1" and snap["cold_start"] is True and online["cold_start"] is True
    # time to churn: 261 days of silence at 1997-09-30, so 00002 lapses (273 days) on day 12 unless they buy
    for answer in (snap, online):
        curve = [answer[f"churn_{t}d"] for t in (30, 60, 90, 180)]
        assert curve == [pytest.approx(snap["churn_probability"], rel=1e-9)] * 4
        assert answer["days_to_churn"] == 12.0
    assert unknown["churn_30d"] is None and unknown["days_to_churn"] is None
    # which model scored them: CDNOW has no subscribers, so purchase silence on both paths; null when unknown
    assert snap["churn_model"] == online["churn_model"] == "purchase_silence"
    assert unknown["churn_model"] is None


@registry_only
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"customers": [{"customer_id": ""}]}, "customer_id"),
        ({"customers": "00002"}, "customers"),
        (
            {
                "customers": [
                    {"customer_id": "a", "transactions": [{"timestamp": "1997-01-05", "amount": "NaN"}]}
                ]
            },
            "amount",
        ),
        ({"customers": [{"customer_id": "a", "transactions": [{"amount": 3}]}]}, "timestamp"),
        ({"customers": [{"customer_id": "a"}, {"customer_id": "a"}]}, "duplicate customer_id"),
        ({"customers": [{"customer_id": str(i)} for i in range(1001)]}, "at most 1000 items"),
        ({"customers": []}, "at least 1 item"),
        ({"customers": [{"customer_id": "a", "shoe_size": 3}]}, "shoe_size"),
        (
            {
                "customers": [
                    {"customer_id": "a", "transactions": [{"timestamp": "1998-01-05", "amount": 3}]}
                ],
                "as_of": CUTOFF,
            },
            "after the as-of date",
        ),
    ],
)
def test_bad_payloads_get_4xx_naming_the_field(server: tuple[str, Path], body: object, expected: str) -> None:
    url, _ = server
    response = _score(url, body)
    assert 400 <= response.status_code < 500, response.text
    assert expected in response.text


@registry_only
def test_not_json_is_a_4xx(server: tuple[str, Path]) -> None:
    url, _ = server
    response = httpx.post(
        f"{url}/score", content=b"\xff not json", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    assert 400 <= response.status_code < 500


@registry_only
def test_a_slow_inline_request_does_not_hold_up_requests_by_id(server: tuple[str, Path]) -> None:
    """A large inline request (within the caps: 1,000 customers, 90,000 purchases) is featurised in the
    worker's thread pool; by-id requests sent while it runs are answered before it is (with BentoML's
    default of one thread, they waited for it)."""
    url, _ = server
    events = [
        {"timestamp": f"1997-{m:02d}-{d:02d}", "amount": 10.0 + d} for m in range(1, 10) for d in range(1, 11)
    ]
    slow = {
        "customers": [{"customer_id": f"x{i}", "transactions": events} for i in range(1000)],
        "as_of": CUTOFF,
    }
    done: dict[str, float] = {}
    answers: dict[str, httpx.Response] = {}

    def send_slow() -> None:
        answers["slow"] = _score(url, slow)
        done["slow"] = time.monotonic()

    worker = threading.Thread(target=send_slow)
    worker.start()
    time.sleep(0.5)  # the slow body is sent and being scored
    for i in range(3):
        answers[f"by id {i}"] = _score(url, {"customers": [{"customer_id": "00002"}]})
        done[f"by id {i}"] = time.monotonic()
    worker.join()
    assert answers["slow"].status_code == 200, answers["slow"].text[:500]
    assert all(s["found"] for s in answers["slow"].json()["scores"])
    for i in range(3):
        assert answers[f"by id {i}"].status_code == 200 and answers[f"by id {i}"].json()["scores"][0]["found"]
    assert done["by id 2"] < done["slow"], "the by-id requests waited for the slow inline one"


@registry_only
@pytest.mark.parametrize(
    ("customer", "expected"),
    [
        ({"attributes": {"customer_id": "00003"}}, "attribute name 'customer_id' is reserved"),
        ({"attributes": {f"a{i}": 1.0 for i in range(101)}}, "101 given, at most 100 per customer"),
        (
            {
                "transactions": [
                    {"timestamp": "1997-01-05T10:00:00+05:00", "amount": 3.0},
                    {"timestamp": "1997-01-06", "amount": 1.0},
                ]
            },
            "mixes time zones",
        ),
    ],
)
def test_inline_limits_and_reserved_names_are_400s(
    server: tuple[str, Path], customer: dict, expected: str
) -> None:
    url, _ = server
    body = {
        "customers": [
            {"customer_id": "00002", "transactions": [{"timestamp": "1997-01-05", "amount": 3.0}], **customer}
        ]
    }
    response = _score(url, body)
    assert response.status_code == 400 and expected in response.text
    future = _score(url, {"customers": [{"customer_id": "00002"}], "as_of": "9999-12-31"})
    assert future.status_code == 400 and "is in the future" in future.json()["error"]


def test_two_workers_serve_side_by_side(
    cdnow_champion: Path, cdnow_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """serving.yaml `workers: 2`: two service processes, each answering by id from its own snapshot."""
    work = tmp_path_factory.mktemp("workers")
    with serve_champion(
        cdnow_champion, cdnow_dir, work, serving={"workers": 2}, restore_env_early=True
    ) as url:
        tree = psutil.Process(int((work / "serve.pid").read_text())).children(recursive=True)
        workers = [p for p in tree if "worker" in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in tree]
        for _ in range(10):
            answer = _score(url, {"customers": [{"customer_id": "00002"}]})
            assert answer.status_code == 200 and answer.json()["scores"][0]["found"]
        # GET /readyz says which worker answered: on new connections, both answer, and both are ready
        seen = {}
        for _ in range(200):
            ready = httpx.get(f"{url}/readyz").json()
            seen[ready["worker"]] = ready["ready"]
            if len(seen) == 2:
                break
        assert seen == {1: True, 2: True}
        # a client's keep-alive pool is spread over both workers (serving.traffic.Rebalance), not left on
        # the worker that happened to accept it: 8 persistent connections, 300 requests each
        body = json.dumps({"customers": [{"customer_id": "00002"}]}).encode()
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        clients = [
            httpx.Client(base_url=url, headers=headers, limits=httpx.Limits(max_connections=1))
            for _ in range(8)
        ]
        failures: list[int] = []

        def load(client: httpx.Client) -> None:
            for _ in range(300):
                status = client.post("/score", content=body).status_code
                if status != 200:
                    failures.append(status)

        threads = [threading.Thread(target=load, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        workers_now = {c.get("/readyz").json()["worker"] for c in clients}  # on each client's connection
        for c in clients:
            c.close()
        assert failures == [] and workers_now == {1, 2}


def test_a_promotion_is_picked_up_without_a_restart(server: tuple[str, Path], cdnow_dir: Path) -> None:
    url, work = server
    assert httpx.get(f"{url}/readyz").json()["version"] == "1"
    # a new version, trained on more data, promoted by hand while the service runs
    config = work / "training.yaml"
    run_diamond(
        "train", "--data", str(cdnow_dir), "--cutoff", "1997-12-31", "--config", str(config), cwd=work
    )
    run_diamond("promote", "--version", "2", "--data", str(cdnow_dir), "--force", "--note", "test", cwd=work)
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/readyz").json()["version"] != "2" and time.monotonic() < deadline:
        time.sleep(0.5)
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["version"] == "2" and ready["last_error"] is None
    scored = _score(url, {"customers": [{"customer_id": "00002"}]}).json()
    assert scored["model_version"] == "2" and scored["scores"][0]["model_version"] == "2"


def _wait_for(url: str, done: object, what: str) -> dict:
    deadline = time.monotonic() + 60
    while not done(ready := httpx.get(f"{url}/readyz").json()):  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: {ready}"
        time.sleep(0.5)
    return ready


@registry_only
def test_a_tracking_store_outage_keeps_the_model_serving(server: tuple[str, Path]) -> None:
    """The tracking store turns to garbage under the running service (a disk or server failure): every
    poll fails, the loaded model keeps serving and /readyz says why; once the store is back the error
    clears by itself."""
    url, work = server
    store = work / "mlflow.db"
    saved = store.read_bytes()
    try:
        store.write_bytes(b"not a database" * 4096)
        ready = _wait_for(url, lambda r: r["last_error"] is not None, "the outage was never noticed")
        assert ready["ready"] is True and ready["serving_last_good"] is True
        assert _score(url, {"customers": [{"customer_id": "00002"}]}).status_code == 200
    finally:
        store.write_bytes(saved)
    ready = _wait_for(url, lambda r: r["last_error"] is None, "the error never cleared")
    assert ready["serving_last_good"] is False


@registry_only
def test_a_broken_champion_leaves_the_last_good_model_serving(server: tuple[str, Path]) -> None:
    """The alias moves to a version with no scoring artefact: the last good one keeps serving, and says so."""
    from mlflow import MlflowClient

    url, work = server
    good = httpx.get(f"{url}/readyz").json()["version"]
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("diamond").experiment_id
    run = client.create_run(experiment, run_name="broken")
    (work / "broken").mkdir()
    (work / "broken" / "README.txt").write_text("not a model", encoding="utf-8")
    client.log_artifacts(run.info.run_id, str(work / "broken"), "broken")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(
        "diamond", f"runs:/{run.info.run_id}/broken", run.info.run_id
    ).version
    client.set_registered_model_alias("diamond", "champion", version)
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/readyz").json()["last_error"] is None and time.monotonic() < deadline:
        time.sleep(0.5)
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["ready"] is True and ready["version"] == good and ready["serving_last_good"] is True
    assert "scoring artefact" in ready["last_error"]
    assert _score(url, {"customers": [{"customer_id": "00002"}]}).json()["model_version"] == good


def _register_incompatible(work: Path, version: str) -> str:
    """A copy of `version` whose artefact names a feature set this code does not know, registered as a new
    version and made champion; returns the new version."""
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    source = client.get_model_version_download_uri("diamond", version)
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(work / "incompatible"))
    )
    spec_file = next(local.rglob("scoring.json"))
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    spec["feature_set"] = "core_v99"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    experiment = client.get_experiment_by_name("diamond").experiment_id
    run = client.create_run(experiment, run_name="incompatible")
    client.log_artifacts(run.info.run_id, str(local), "incompatible")
    client.set_terminated(run.info.run_id)
    new = client.create_model_version("diamond", f"runs:/{run.info.run_id}/incompatible", run.info.run_id)
    client.set_registered_model_alias("diamond", "champion", new.version)
    return str(new.version)


@registry_only
def test_an_incompatible_champion_leaves_the_last_good_model_serving(server: tuple[str, Path]) -> None:
    """The alias moves to a model trained on a feature set this code does not know (a newer Diamond's, say):
    it is refused, the last good one keeps serving, and /readyz says why."""
    url, work = server
    good = httpx.get(f"{url}/readyz").json()["version"]
    bad = _register_incompatible(work, good)
    deadline = time.monotonic() + 60
    while "incompatible" not in str(httpx.get(f"{url}/readyz").json()["last_error"]):
        assert time.monotonic() < deadline, httpx.get(f"{url}/readyz").text
        time.sleep(0.5)
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["version"] == good != bad and ready["serving_last_good"] is True
    assert "core_v99" in ready["last_error"] and "unknown feature set" in ready["last_error"]
    assert _score(url, {"customers": [{"customer_id": "00002"}]}).json()["model_version"] == good


@registry_only
def test_serve_refuses_to_start_on_a_champion_it_cannot_serve(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh start has no last good model to fall back on: the champion is now the incompatible version
    (test above), so `diamond serve` exits at once with a clear message instead of serving 503s."""
    _, work = server
    done = run_diamond("serve", "--port", str(free_port()), cwd=work, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not starting: models:/diamond@champion cannot be served" in done.stderr
    assert "incompatible model" in done.stderr and "core_v99" in done.stderr


@registry_only
def test_serve_refuses_to_start_when_the_tracking_store_is_unreachable(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, work = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    done = run_diamond("serve", "--port", str(free_port()), cwd=work, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not starting: models:/diamond@champion cannot be served" in done.stderr
    assert "127.0.0.1" in done.stderr and "Traceback" not in done.stderr


@registry_only
def test_secrets_never_reach_the_logs(server: tuple[str, Path]) -> None:
    """After every request above (good keys, wrong keys, webhooks delivered), neither an API key nor the
    webhook secret appears in the server's log or the batch run's output."""
    _, work = server
    _score(server[0], {"customers": [{"customer_id": "00002"}]}, key="wrong-key-not-logged")
    logs = (work / "serve.log").read_text(encoding="utf-8") + (work / "score.out").read_text(encoding="utf-8")
    assert len(logs) > 200  # the logs are really there
    for secret in (KEY, "another-key", "wrong-key-not-logged", SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in logs
