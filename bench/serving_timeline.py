"""When are the slow requests? A per-request timeline of one closed-loop load on a running service (Diamond's
POST /score by id or the bare reference's /predict), to tell a periodic stall in the server (a poll, a
garbage collection) from the start of a run or from random noise.

    .venv/bin/python bench/serving_timeline.py --url http://127.0.0.1:3000/score --ids ids.json \
        --concurrency 8 --duration 30 [--bare] [--trace-dir DIR]

The load is `wrk` with one thread per connection (`-tC -cC`): each thread's Lua state then sees its
connection's requests and answers strictly alternate, so `request()` and `response()` timestamps
(CLOCK_MONOTONIC, the clock of Python's time.monotonic) give every request's latency. `--trace-dir`
merges the gc pauses that bench/trace/sitecustomize.py writes there (a service started with BENCH_TRACE_DIR
set and bench/trace on its PYTHONPATH). Prints the latency percentiles, the slow requests grouped into
episodes (when, how long, how many, which gc pauses fell inside) and the gaps between episodes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

KEY = "bench-key"

WRK_TIMELINE = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } diamond_timespec;
int clock_gettime(int clk_id, diamond_timespec *tp);
]]
local ts = ffi.new("diamond_timespec")
local function now() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9 end
local bodies = {%s}
local k = 0
local sent = 0
local out = nil
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("id", counter)
end
request = function()
  if out == nil then out = io.open(string.format("%s/wrk-%%d.tsv", id), "w") end
  k = k %% #bodies + 1
  sent = now()
  return wrk.format("POST", nil, nil, bodies[(k * 7 + id * 13) %% #bodies + 1])
end
response = function(status, headers, body)
  out:write(string.format("%%.6f\\t%%.6f\\t%%d\\n", sent, now(), status))
end
"""


def bodies_for(ids: list[str], bare: bool, n: int = 400, seed: int = 1) -> list[bytes]:
    """One-customer bodies, the same customers in the same order for Diamond and the bare service."""
    rng = random.Random(seed)
    chosen = [rng.choice(ids) for _ in range(n)]
    if bare:
        return [json.dumps({"customer_ids": [c]}).encode() for c in chosen]
    return [json.dumps({"customers": [{"customer_id": c}]}).encode() for c in chosen]


def run_wrk(url: str, bodies: list[bytes], concurrency: int, duration: float, folder: Path) -> list[tuple]:
    """(sent, answered, status) of every request of one wrk run, one thread per connection."""
    quoted = ",".join("[==[" + b.decode() + "]==]" for b in bodies)
    script = folder / "timeline.lua"
    script.write_text(WRK_TIMELINE % (quoted, folder), encoding="utf-8")
    for old in folder.glob("wrk-*.tsv"):
        old.unlink()
    headers = ["-H", f"Authorization: Bearer {KEY}", "-H", "Content-Type: application/json"]
    cmd = ["wrk", f"-t{concurrency}", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "60s"]
    subprocess.run([*cmd, "-s", str(script), *headers, url], check=True, capture_output=True, text=True)
    rows = []
    for f in folder.glob("wrk-*.tsv"):
        for line in f.read_text().splitlines():
            sent, answered, status = line.split("\t")
            rows.append((float(sent), float(answered), int(status)))
    return sorted(rows)


def read_gc(trace_dir: Path | None) -> list[tuple[float, float, int, str]]:
    """(start, ms, generation, file) of every gc pause the traced processes logged."""
    if trace_dir is None:
        return []
    pauses = []
    for f in trace_dir.glob("gc-*.tsv"):
        for line in f.read_text().splitlines():
            if line and not line.startswith("#"):
                start, ms, gen = line.split("\t")[:3]
                pauses.append((float(start), float(ms), int(gen), f.stem))
    return sorted(pauses)


def episodes(rows: list[tuple], slow_ms: float, join_s: float = 0.05) -> list[dict[str, Any]]:
    """Slow requests (latency > slow_ms) grouped: requests whose time in flight overlaps, or starts within
    join_s of the previous one's end, make one episode."""
    slow = sorted((s, a) for s, a, _ in rows if (a - s) * 1000 > slow_ms)
    out: list[dict[str, Any]] = []
    for s, a in slow:
        if out and s <= out[-1]["end"] + join_s:
            e = out[-1]
            e["end"], e["n"], e["worst"] = max(e["end"], a), e["n"] + 1, max(e["worst"], (a - s) * 1000)
        else:
            out.append({"start": s, "end": a, "n": 1, "worst": (a - s) * 1000})
    return out


def report(rows: list[tuple], gc_pauses: list[tuple], slow_ms: float, label: str) -> dict[str, Any]:
    t0 = rows[0][0]
    lat = [(a - s) * 1000 for s, a, _ in rows]
    q = statistics.quantiles(lat, n=100, method="inclusive")
    span = rows[-1][1] - t0
    print(
        f"{label}: {len(rows)} requests in {span:.1f} s ({len(rows) / span:.0f}/s), p50 {q[49]:.1f} ms, "
        f"p99 {q[98]:.1f} ms, max {max(lat):.1f} ms, errors {sum(st != 200 for *_, st in rows)}"
    )
    eps = episodes(rows, slow_ms)
    big_gc = [p for p in gc_pauses if p[1] >= 2 and t0 <= p[0] <= rows[-1][1]]
    print(
        f"  {len(eps)} episodes with requests slower than {slow_ms:g} ms; gc pauses >= 2 ms in the run: "
        f"{len(big_gc)}"
    )
    for e in eps[:40]:
        inside = [
            f"gen{g} {ms:.0f}ms@{(st - t0):.2f}" for st, ms, g, _ in big_gc if e["start"] <= st <= e["end"]
        ]
        print(
            f"  at {e['start'] - t0:7.2f} s for {(e['end'] - e['start']) * 1000:6.0f} ms: {e['n']:4d} slow, "
            f"worst {e['worst']:6.0f} ms  {' '.join(inside)}"
        )
    starts = [e["start"] for e in eps]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    if gaps:
        print(f"  gaps between episodes (s): {' '.join(f'{g:.1f}' for g in gaps[:40])}")
    per_second: dict[int, list[float]] = {}
    for (s, _, _), x in zip(rows, lat, strict=True):
        per_second.setdefault(int(s - t0), []).append(x)
    print("  per second: " + " ".join(f"{k}:{len(v)}/{max(v):.0f}" for k, v in sorted(per_second.items())))
    first_second = [x for (s, _, _), x in zip(rows, lat, strict=True) if s - t0 < 1.0]
    rest = [x for (s, _, _), x in zip(rows, lat, strict=True) if s - t0 >= 1.0]
    p99_rest = statistics.quantiles(rest, n=100, method="inclusive")[98] if len(rest) > 1 else float("nan")
    print(f"  first second: max {max(first_second):.1f} ms; after it: p99 {p99_rest:.1f} ms")
    return {
        "p50": q[49],
        "p99": q[98],
        "max": max(lat),
        "episodes": len(eps),
        "requests": len(rows),
        "span": span,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ids", type=Path, required=True, help="JSON list of customer ids")
    parser.add_argument("--bare", action="store_true", help="the bare service's body format")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--slow-ms", type=float, default=25.0)
    parser.add_argument("--trace-dir", type=Path)
    parser.add_argument("--label", default="run")
    args = parser.parse_args()
    bodies = bodies_for(json.loads(args.ids.read_text()), args.bare)
    with tempfile.TemporaryDirectory(prefix="diamond-timeline-") as tmp:
        rows = run_wrk(args.url, bodies, args.concurrency, args.duration, Path(tmp))
    report(rows, read_gc(args.trace_dir), args.slow_ms, args.label)


if __name__ == "__main__":
    main()
