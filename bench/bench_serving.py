"""Online scoring speed: Diamond's POST /score by id against a bare BentoML service that loads the same churn
booster (bench/bare_service.py), both loaded closed-loop in the same run.

    .venv/bin/python bench/bench_serving.py --rounds 3       # make bench-serving: 10 s per cell, 3 rounds
    .venv/bin/python bench/bench_serving.py --duration 3 --rounds 1 --quick   # a smoke run, nothing recorded

Setup (a temporary folder, nothing shared): the bundled CDNOW history, the demo's model trained (one trial)
and promoted in a private MLflow store, a batch snapshot from `diamond score`; then three servers side by
side on 127.0.0.1: Diamond with 1 worker, Diamond with 2 workers (serving.yaml `workers`), and the bare
service on the booster and snapshot rows exported from the same store.

Load: N connections, each sending its next request as soon as the last answer arrived (closed loop, bodies
encoded beforehand; by `wrk` when it is installed (`make bench-serving` installs it with apt), one thread per
connection so that every request is timed, else an aiohttp client in Python, which takes a large share of the
two cores from the servers: `--client`), at concurrency 1, 8 and 32, with one customer per request and with
1,000 customers per request (random snapshot ids, the same sequence for every side), 2 s of warm-up then
`--duration` seconds per cell on the same connections (the warm-up not counted, for every side), `--rounds`
rounds with the cells interleaved. Every server is measured once all its workers answer ready. Latency is per
request, pooled over the rounds; throughput is answers per second (customers per second for 1,000-customer
requests); the goals' ratios are the median of the rounds' ratios. The load generator shares the machine's
cores with the servers, and other processes on a shared machine move absolute numbers: the ratios against
the bare service, measured in the same rounds, are what the goals are judged on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import serving_timeline
from bench.common import ROOT, free_port, machine, record_row, wait_ready

BIN = Path(sys.executable).parent
KEY = "bench-key"
CONCURRENCY = (1, 8, 32)
START, END = "<!-- serving:start -->", "<!-- serving:end -->"
HEADER = (
    "| date | side | workers | customers per request | concurrency | requests/s | customers/s | p50 ms "
    "| p99 ms | vs bare (same cell) | errors | machine |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
)
GOALS_START, GOALS_END = "<!-- serving-goals:start -->", "<!-- serving-goals:end -->"
GOALS_HEADER = "| date | goal | measured | result |\n|---|---|---|---|\n"


def _run(*args: str, cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run([str(BIN / "diamond"), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"diamond {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def prepare(work: Path) -> dict[str, str]:
    """CDNOW, the demo model (one trial) as champion, and a batch snapshot; the environment that serves it."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "DIAMOND_STORE_URL": f"sqlite:///{work / 'diamond.db'}",
        "DIAMOND_API_KEYS": KEY,
        "BENTOML_DO_NOT_TRACK": "True",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": str(ROOT),
    }
    (work / "training.yaml").write_text("trials: 1\n", encoding="utf-8")
    _run("data", "cdnow", "--out", str(work / "cdnow"), cwd=work, env=env)
    _run("train", "--data", str(work / "cdnow"), "--config", str(work / "training.yaml"), cwd=work, env=env)
    _run("score", "--data", str(work / "cdnow"), cwd=work, env=env)
    export = (
        "import json, numpy as np; from serving import champion, store; from serving.config import "
        "ServingConfig; from training.tracking import MlflowConfig;"
        "h = champion.ChampionHolder(MlflowConfig.load()); assert h.refresh(), h.last_error;"
        "art = h.current.artefact; art.churn.booster.save_model('bare/churn.ubj');"
        "rows = store.read_features(store.engine(ServingConfig.load().store_url));"
        "np.save('bare/inputs.npy', rows[art.columns].to_numpy(dtype=np.float32, na_value=np.nan));"
        "json.dump(rows['customer_id'].astype(str).tolist(), open('bare/ids.json', 'w'))"
    )
    (work / "bare").mkdir()
    done = subprocess.run([sys.executable, "-c", export], cwd=work, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"exporting the booster failed:\n{done.stderr}")
    return env


def start(name: str, work: Path, env: dict[str, str], workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """`diamond serve` with serving.yaml `workers`, or the bare service; waits until every worker answers
    ready (GET /readyz names the worker that answered; a worker still loading would leave the other one all
    the load, as in a session-8 round that measured 2 workers at 1.08x one)."""
    port = free_port()
    folder = work / name
    folder.mkdir(exist_ok=True)
    (folder / "serving.yaml").write_text(f"workers: {workers}\npoll_s: 30\n", encoding="utf-8")
    env = {
        **env,
        "DIAMOND_SERVING_CONFIG": str(folder / "serving.yaml"),
        "BENCH_BARE_DIR": str(work / "bare"),
    }
    if name == "bare":
        cmd = [
            str(BIN / "bentoml"),
            "serve",
            "bench.bare_service:Bare",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        cwd = ROOT
    else:
        cmd, cwd = [str(BIN / "diamond"), "serve", "--port", str(port)], work
    log = (folder / "serve.log").open("w")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, folder / "serve.log", workers)
    return proc, url


async def closed_loop(
    url: str, bodies: list[bytes], concurrency: int, duration: float, warmup: float = 2.0
) -> dict[str, Any]:
    """`concurrency` connections, each sending its next body as soon as its last answer arrived; latencies
    and answers counted after the warm-up."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        t0 = time.perf_counter()
        measure_from, end = t0 + warmup, t0 + warmup + duration

        async def loop(k: int) -> None:
            i = k
            while (start := time.perf_counter()) < end:
                body = bodies[i % len(bodies)]
                i += concurrency
                try:
                    async with session.post(url, data=body) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if start >= measure_from:
                    latencies.append((time.perf_counter() - start) * 1000)
                    if status != 200:
                        errors[str(status)] = errors.get(str(status), 0) + 1

        await asyncio.gather(*(loop(k) for k in range(concurrency)))
    return {"latencies": latencies, "seconds": duration, "errors": errors}


def wrk_loop(
    url: str, bodies: list[bytes], concurrency: int, duration: float, folder: Path, warmup: float = 2.0
) -> dict[str, Any]:
    """The same closed loop by `wrk` (C, epoll), one thread per connection so that its Lua script can time
    every request (bench/serving_timeline.py): one run of `warmup` + `duration` seconds, the requests sent in
    the first `warmup` seconds not counted (the same connections carry on, as in the aiohttp client; the
    connections' spread over the workers settles then, serving.traffic.Rebalance)."""
    rows = serving_timeline.run_wrk(url, bodies, concurrency, warmup + duration, folder)
    t0 = min(sent for sent, _, _ in rows)
    kept = [(sent, answered, status) for sent, answered, status in rows if sent >= t0 + warmup]
    if not kept:  # nothing sent after the warm-up came back before the end: slower than the run is long
        raise SystemExit(
            f"{url}: no answer within {warmup + duration:g} s after the warm-up; use a longer --duration"
        )
    seconds = max(answered for _, answered, _ in kept) - (t0 + warmup)
    bad = sum(status != 200 for *_, status in kept)
    return {
        "latencies": [(answered - sent) * 1000 for sent, answered, _ in kept],
        "seconds": seconds,
        "errors": {"status": bad} if bad else {},
    }


def summary(runs: list[dict[str, Any]], customers: int) -> dict[str, Any]:
    """Throughput over the rounds' measured seconds; latency percentiles over every request of the rounds."""
    latencies = [x for r in runs for x in r["latencies"]]
    seconds = sum(r["seconds"] for r in runs)
    q = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) > 1
        else [float("nan")] * 99
    )
    return {
        "requests_per_s": len(latencies) / seconds,
        "customers_per_s": len(latencies) * customers / seconds,
        "p50": q[49],
        "p99": q[98],
        "errors": sum(sum(r["errors"].values()) for r in runs),
    }


def bodies_for(ids: list[str], customers: int, bare: bool, n: int = 400) -> list[bytes]:
    rng = random.Random(customers)  # the same customers, in the same order, for every side
    out = []
    for _ in range(n):
        chosen = rng.sample(ids, customers)
        body = {"customer_ids": chosen} if bare else {"customers": [{"customer_id": c} for c in chosen]}
        out.append(json.dumps(body).encode())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per cell and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, cells interleaved")
    parser.add_argument("--quick", action="store_true", help="do not record into bench/README.md")
    parser.add_argument(
        "--client",
        choices=("wrk", "aiohttp"),
        default="wrk" if shutil.which("wrk") else "aiohttp",
        help="load generator (default: wrk when installed)",
    )
    args = parser.parse_args()
    print(f"load generator: {args.client}", flush=True)
    with tempfile.TemporaryDirectory(prefix="diamond-bench-serving-") as tmp:
        work = Path(tmp)
        print("setting up: CDNOW, the demo model, a batch snapshot ...", flush=True)
        env = prepare(work)
        ids = json.loads((work / "bare" / "ids.json").read_text())
        servers: dict[tuple[str, int], tuple[subprocess.Popen[bytes], str]] = {}
        try:  # a server that fails to start stops the ones started before it too
            servers[("diamond", 1)] = start("diamond-1", work, env, 1)
            servers[("diamond", 2)] = start("diamond-2", work, env, 2)
            servers[("bare", 1)] = start("bare", work, env, 1)
            results, rounds = measure(servers, ids, args.duration, args.rounds, args.client, work)
        finally:
            for proc, _ in servers.values():
                os.killpg(proc.pid, signal.SIGTERM)
            for proc, _ in servers.values():
                proc.wait(timeout=30)
    report(results, rounds, args.quick)


Cell = tuple[str, int, int, int]  # side, workers, customers per request, concurrency


def measure(
    servers: dict[tuple[str, int], tuple[subprocess.Popen[bytes], str]],
    ids: list[str],
    duration: float,
    rounds: int,
    client: str,
    work: Path,
) -> tuple[dict[Cell, dict[str, Any]], dict[Cell, list[dict[str, Any]]]]:
    """Every cell `rounds` times, the cells interleaved within a round: pooled over the rounds, and each
    round's own summary."""
    cells: list[Cell] = [
        (side, workers, customers, c)
        for customers in (1, 1000)
        for c in CONCURRENCY
        for side, workers in (("diamond", 1), ("bare", 1), ("diamond", 2))
        if workers == 1 or c >= 8
    ]
    bodies = {
        (bare, customers): bodies_for(ids, customers, bare, 400 if customers == 1 else 40)
        for bare in (False, True)
        for customers in (1, 1000)
    }
    runs: dict[Cell, list[dict[str, Any]]] = {cell: [] for cell in cells}
    for r in range(rounds):
        for cell in cells:
            side, workers, customers, c = cell
            url = servers[(side, workers)][1] + ("/predict" if side == "bare" else "/score")
            chosen = bodies[(side == "bare", customers)]
            if client == "wrk":
                run = wrk_loop(url, chosen, c, duration, work)
            else:
                run = asyncio.run(closed_loop(url, chosen, c, duration))
            runs[cell].append(run)
            s = summary([run], customers)
            print(
                f"round {r + 1}: {side:7s} workers {workers} customers {customers:5d} concurrency {c:2d}: "
                f"{s['requests_per_s']:8.1f} req/s {s['customers_per_s']:10,.0f} customers/s "
                f"p50 {s['p50']:7.1f} ms p99 {s['p99']:7.1f} ms errors {s['errors']}",
                flush=True,
            )
    pooled = {cell: summary(r, cell[2]) for cell, r in runs.items()}
    return pooled, {cell: [summary([run], cell[2]) for run in r] for cell, r in runs.items()}


def _ratios(rounds: dict[Cell, list[dict[str, Any]]], top: Cell, bottom: Cell) -> tuple[float, str]:
    """The median over rounds of top's throughput over bottom's in the same round, and every round's."""
    each = [
        a["requests_per_s"] / b["requests_per_s"] for a, b in zip(rounds[top], rounds[bottom], strict=True)
    ]
    return statistics.median(each), ", ".join(f"{x:.2f}" for x in each)


def goals(
    results: dict[Cell, dict[str, Any]], rounds: dict[Cell, list[dict[str, Any]]]
) -> list[tuple[str, str, bool]]:
    """The issue's online goals: ratios as the median of the rounds' own ratios (each round's cells ran
    minutes apart at most), p99 over every request of the rounds."""
    one, bare, two = results[("diamond", 1, 1, 8)], results[("bare", 1, 1, 8)], results[("diamond", 2, 1, 8)]
    many = results[("diamond", 1, 1000, 8)]
    ratio, ratio_rounds = _ratios(rounds, ("diamond", 1, 1, 8), ("bare", 1, 1, 8))
    scale, scale_rounds = _ratios(rounds, ("diamond", 2, 1, 8), ("diamond", 1, 1, 8))
    return [
        (
            "one customer by id, concurrency 8: throughput >= 0.8x the bare service",
            f"{ratio:.2f}x median of rounds ({ratio_rounds}; pooled {one['requests_per_s']:,.0f} vs "
            f"{bare['requests_per_s']:,.0f} req/s)",
            ratio >= 0.8,
        ),
        ("one customer by id, concurrency 8: p99 <= 25 ms", f"{one['p99']:.1f} ms", one["p99"] <= 25),
        (
            "2 workers >= 1.6x one worker (one customer, concurrency 8)",
            f"{scale:.2f}x median of rounds ({scale_rounds}; pooled {two['requests_per_s']:,.0f} vs "
            f"{one['requests_per_s']:,.0f} req/s)",
            scale >= 1.6,
        ),
        (
            "1,000 customers by id with reasons >= 50,000 customers/s (1 worker, concurrency 8)",
            f"{many['customers_per_s']:,.0f} customers/s",
            many["customers_per_s"] >= 50_000,
        ),
    ]


def report(
    results: dict[Cell, dict[str, Any]], rounds: dict[Cell, list[dict[str, Any]]], quick: bool
) -> None:
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    print()
    for cell, s in results.items():
        side, workers, customers, c = cell
        bare = results.get(("bare", 1, customers, c))
        vs = s["customers_per_s"] / bare["customers_per_s"] if bare and side != "bare" else None
        shown = "" if vs is None else f"{vs:.2f}x"
        print(json.dumps({"side": side, "workers": workers, "customers": customers, "concurrency": c, **s}))
        if not quick:
            row = (
                f"| {date} | {side} | {workers} | {customers:,} | {c} | {s['requests_per_s']:,.1f} "
                f"| {s['customers_per_s']:,.0f} | {s['p50']:.1f} | {s['p99']:.1f} | {shown} "
                f"| {s['errors']:,} | {machine()} |"
            )
            record_row(START, END, HEADER, row, key_columns=5)
    print()
    for goal, measured, ok in goals(results, rounds):
        print(f"{'PASS' if ok else 'FAIL'}  {goal}: {measured}")
        if not quick:
            row = f"| {date} | {goal} | {measured} | {'PASS' if ok else 'FAIL'} |"
            record_row(GOALS_START, GOALS_END, GOALS_HEADER, row, key_columns=2)


if __name__ == "__main__":
    main()
