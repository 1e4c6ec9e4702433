"""Benchmark: one synthetic history's training set built by DuckDB and by Spark (local mode, this machine).

Each engine runs in its own child process; the parent samples the RSS of the child's whole process tree
(for Spark: Python driver + JVM + Python workers) every 0.2 s and keeps the peak. The Spark child writes an
event log; its task metrics (executor run time, records and bytes read, shuffle) give per-stage costs that
`bench/spark.md` extrapolates to a cluster. Usage:

    python bench/bench_spark.py --customers 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_features import ensure_history
from common import ROOT, machine

CUTOFFS = ["2025-03-31", "2025-06-30", "2025-09-30"]
HORIZON = "90d"


def child(engine: str, data: str, out: str, events_dir: str, cores: int) -> None:
    """Build and write the training set; print one JSON line of rows and stage timings."""
    from features import build

    t0 = time.perf_counter()
    if engine == "duckdb":
        import pyarrow.parquet as pq

        from features.history import load_history

        history = load_history(data)
        loaded = time.perf_counter()
        table = build.build_training_set(history, CUTOFFS, HORIZON)
        pq.write_table(table, out)
        rows = table.num_rows
    else:
        from features import spark as fsp

        spark = fsp.session(
            f"local[{cores}]",
            conf={
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                "spark.driver.memory": "8g",
                "spark.sql.shuffle.partitions": str(4 * cores),
                "spark.eventLog.enabled": "true",
                "spark.eventLog.compress": "false",
                "spark.eventLog.dir": events_dir,
            },
        )
        spark.sparkContext.setLogLevel("ERROR")
        loaded = time.perf_counter()
        history = fsp.load_history(spark, data)
        table, fits = fsp.build_training_set(history, CUTOFFS, HORIZON)
        fsp.write_training_set(table, out, fits)
        rows = spark.read.parquet(out).count()
        spark.stop()
    print(json.dumps({"rows": rows, "load_s": loaded - t0, "build_s": time.perf_counter() - loaded}))


def run(engine: str, data: Path, out: Path, events_dir: Path, cores: int) -> dict:
    cmd = [sys.executable, __file__, "--child", engine, "--data", str(data), "--out", str(out)]
    cmd += ["--events", str(events_dir), "--cores", str(cores)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{engine} child failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.read().strip().splitlines()[-1])
    return {"engine": engine, "wall_s": wall, "peak_rss_mib": peak / 2**20, **result}


def task_metrics(events_dir: Path) -> dict:
    """Per stage: tasks, summed executor run time, the slowest task, records and bytes read, shuffle bytes."""
    stages: dict[int, dict] = defaultdict(
        lambda: {"tasks": 0, "run_s": 0.0, "max_task_s": 0.0, "records_in": 0, "bytes_in": 0, "shuffle_w": 0}
    )
    names: dict[int, str] = {}
    for log in events_dir.rglob("events_*"):  # rolling event log v2: events_N_<app> files (+ appstatus)
        for line in log.open(encoding="utf-8"):
            if not line.strip():
                continue
            event = json.loads(line)
            kind = event.get("Event")
            if kind == "SparkListenerStageCompleted":
                info = event["Stage Info"]
                names[info["Stage ID"]] = info["Stage Name"].split(" at ")[0]
            if kind != "SparkListenerTaskEnd" or "Task Metrics" not in event:
                continue
            m, s = event["Task Metrics"], stages[event["Stage ID"]]
            run_s = m["Executor Run Time"] / 1000
            s["tasks"] += 1
            s["run_s"] += run_s
            s["max_task_s"] = max(s["max_task_s"], run_s)
            s["records_in"] += m["Input Metrics"]["Records Read"]
            s["bytes_in"] += m["Input Metrics"]["Bytes Read"]
            s["shuffle_w"] += m["Shuffle Write Metrics"]["Shuffle Bytes Written"]
    return {sid: {"name": names.get(sid, "?"), **v} for sid, v in sorted(stages.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N]")
    parser.add_argument("--data-dir", default=str(ROOT / "bench" / ".data"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "spark_results.json"), help="raw results")
    parser.add_argument("--child", choices=("duckdb", "spark"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--events", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.out, args.events, args.cores)
        return
    data, events = ensure_history(Path(args.data_dir), args.customers, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        work = Path(tmp)
        (work / "events").mkdir()
        results = [run("duckdb", data, work / "duck.parquet", work / "events", args.cores)]
        print(json.dumps(results[-1]), flush=True)
        results.append(run("spark", data, work / "spark", work / "events", args.cores))
        print(json.dumps(results[-1]), flush=True)
        stages = task_metrics(work / "events")
    report = {
        "customers": args.customers,
        "events_at_last_cutoff": events,
        "cutoffs": CUTOFFS,
        "machine": machine(),
        "results": results,
        "stages": stages,
    }
    Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    total = sum(s["run_s"] for s in stages.values())
    print(f"spark task time {total:.0f} s over {sum(s['tasks'] for s in stages.values())} tasks")
    for sid, s in stages.items():
        if s["run_s"] > 0.05 * total:
            line = f"{s['tasks']} tasks, {s['run_s']:.1f} s, slowest {s['max_task_s']:.1f} s"
            print(f"  stage {sid} {s['name']}: {line}")


if __name__ == "__main__":
    main()
