"""Load on a real `diamond serve` (127.0.0.1 only): single-customer and 1,000-customer /score requests at a
steady rate, against GET /healthz at the same rate as the in-run reference; latency percentiles, errors and
the server's memory over time.

    .venv/bin/python bench/bench_load.py --duration 300          # the issue's 5 minutes per phase
    .venv/bin/python bench/bench_load.py --duration 20 --quick   # a smoke run

Setup (in a temporary folder, nothing shared): the bundled CDNOW history, a small model trained and promoted
in a private MLflow store, a batch snapshot from `diamond score`, then the server with an API key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import free_port, machine, record_row, wait_ready

DIAMOND = str(Path(sys.executable).with_name("diamond"))
KEY = "bench-key"
START, END = "<!-- load:start -->", "<!-- load:end -->"
HEADER = (
    "| phase | rate (req/s) | duration (s) | requests | errors | throughput (rows/s) | p50 (ms) | p95 (ms) "
    "| p99 (ms) | p99 / healthz p99 | server RSS start → end (MiB) | RSS growth after 30 s (MiB/min) "
    "| machine |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def _run(*args: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([DIAMOND, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"diamond {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def setup(work: Path) -> tuple[subprocess.Popen[bytes], str, list[str], dict[str, str]]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "DIAMOND_STORE_URL": f"sqlite:///{work / 'diamond.db'}",
        "DIAMOND_API_KEYS": KEY,
        "DIAMOND_SERVING_CONFIG": str(work / "serving.yaml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    (work / "serving.yaml").write_text("poll_s: 30\n", encoding="utf-8")  # no alerts or webhooks here
    (work / "training.yaml").write_text("trials: 1\n", encoding="utf-8")
    _run("data", "cdnow", "--out", str(work / "cdnow"), cwd=work, env=env)
    _run("train", "--data", str(work / "cdnow"), "--config", str(work / "training.yaml"), cwd=work, env=env)
    _run("score", "--data", str(work / "cdnow"), cwd=work, env=env)
    import pandas as pd

    ids = pd.read_csv(work / "cdnow" / "transactions.csv.gz", dtype={"customer_id": str})["customer_id"]
    port = free_port()
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen(
        [DIAMOND, "serve", "--port", str(port)],
        cwd=work,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, work / "serve.log")
    return proc, url, sorted(set(ids)), env


def rss_mib(pid: int) -> float:
    """Resident memory of the server's whole process tree (supervisor and workers)."""
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
    except psutil.Error:
        return float("nan")


def growth(times: list[float], memory: list[float], warmup_s: float = 30.0) -> float:
    """Server memory growth in MiB per minute: the least-squares slope of RSS over time after a warm-up
    (allocator pools and caches fill during the first seconds; a leak keeps climbing after)."""
    pairs = [(t, m) for t, m in zip(times, memory, strict=True) if t >= warmup_s and m == m]
    if len(pairs) < 3:
        pairs = [(t, m) for t, m in zip(times, memory, strict=True) if m == m]
    if len(pairs) < 2:
        return float("nan")
    slope = statistics.linear_regression([t for t, _ in pairs], [m for _, m in pairs]).slope
    return slope * 60


async def phase(
    url: str,
    method: str,
    path: str,
    bodies: Any,
    rate: float,
    duration: float,
    rows: int,
    pid: int,
    key: str = KEY,
) -> dict[str, Any]:
    """Open loop: request i leaves at start + i / rate whatever happened before (bounded in flight)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    memory: list[float] = [rss_mib(pid)]
    times: list[float] = [0.0]
    limit = asyncio.Semaphore(64)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client:

        async def one(body: Any) -> None:
            async with limit:
                t = time.perf_counter()
                try:
                    r = await client.request(method, path, json=body)
                    if r.status_code != 200:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                latencies.append((time.perf_counter() - t) * 1000)

        start, tasks, i = time.perf_counter(), [], 0
        next_sample = start + 1
        while (now := time.perf_counter()) < start + duration:
            due = start + i / rate
            if now >= due:
                tasks.append(asyncio.create_task(one(next(bodies) if bodies else None)))
                i += 1
            if now >= next_sample:
                memory.append(rss_mib(pid))
                times.append(now - start)
                next_sample += 1
            await asyncio.sleep(max(0.0, min(due, next_sample) - time.perf_counter()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    memory.append(rss_mib(pid))
    times.append(elapsed)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "errors": errors,
        "rows_per_s": len(latencies) * rows / elapsed,
        "p50": q[49],
        "p95": q[94],
        "p99": q[98],
        "rss_start": memory[0],
        "rss_end": memory[-1],
        "rss_max": max(memory),
        "rss_slope": growth(times, memory),
        "rss_series": memory[:: max(1, len(memory) // 20)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds per phase")
    parser.add_argument("--single-rate", type=float, default=50.0, help="single-customer requests per second")
    parser.add_argument("--batch-rate", type=float, default=1.0, help="1,000-customer requests per second")
    parser.add_argument("--quick", action="store_true", help="do not record into bench/README.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="diamond-load-") as tmp:
        proc, url, ids, _ = setup(Path(tmp))
        try:
            rng = random.Random(0)

            def singles() -> Any:
                while True:
                    yield {"customers": [{"customer_id": rng.choice(ids)}]}

            def batches() -> Any:
                while True:
                    yield {"customers": [{"customer_id": c} for c in rng.sample(ids, 1000)]}

            results = {
                "healthz": asyncio.run(
                    phase(url, "GET", "/healthz", None, args.single_rate, args.duration, 1, proc.pid)
                ),
                "score 1 customer": asyncio.run(
                    phase(url, "POST", "/score", singles(), args.single_rate, args.duration, 1, proc.pid)
                ),
                "score 1,000 customers": asyncio.run(
                    phase(url, "POST", "/score", batches(), args.batch_rate, args.duration, 1000, proc.pid)
                ),
            }
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    reference = results["healthz"]["p99"]
    rates = {
        "healthz": args.single_rate,
        "score 1 customer": args.single_rate,
        "score 1,000 customers": args.batch_rate,
    }
    for name, r in results.items():
        print(json.dumps({"phase": name, **{k: v for k, v in r.items() if k != "rss_series"}}), flush=True)
        print(f"  memory over time (MiB): {[round(x) for x in r['rss_series']]}", flush=True)
        if not args.quick:
            errors = sum(r["errors"].values())
            row = (
                f"| {name} | {rates[name]:g} | {args.duration:g} | {r['requests']:,} | {errors:,} "
                f"| {r['rows_per_s']:,.0f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
                f"| {r['p99'] / reference:.2f} | {r['rss_start']:,.0f} → {r['rss_end']:,.0f} "
                f"| {r['rss_slope']:+.2f} "
                f"| {machine()} |\n"
            )
            record_row(START, END, HEADER, row, key_columns=3)


if __name__ == "__main__":
    main()
