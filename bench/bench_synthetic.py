"""Benchmark of the synthetic history generator against the parquet I/O floor.

Runs ``features.datasets.synthetic.write`` in a subprocess and, in the same run, a reference subprocess that
only writes the same number of rows (and columns) of random numpy float64/int64 data to parquet with
pyarrow. Reports wall time, peak RSS, rows written and rows/s of both and the generator/reference ratios,
prints a markdown table and records the result in ``bench/README.md``.

Usage: ``python bench/bench_synthetic.py --customers 1000000 [--seed 0] [--no-readme]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from common import README, ROOT, machine, measure, record_row

START_MARK = "<!-- synthetic-results:start -->"
END_MARK = "<!-- synthetic-results:end -->"
TABLE_HEADER = (
    "| date | customers | seed | rows | wall s | peak RSS MiB | rows/s | on disk MiB "
    "| ref wall s | ref peak RSS MiB | time ratio | memory ratio | machine | versions |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
)
REF_CHUNK_ROWS = 1_000_000  # the reference writes in chunks too, like the generator's streaming writer

GENERATOR_CODE = """
import json, sys
from features.datasets import synthetic
rows = synthetic.write(sys.argv[1], int(sys.argv[2]), seed=int(sys.argv[3]))
print(json.dumps(rows))
"""


@dataclass
class Run:
    """Outcome of one measured subprocess."""

    wall_s: float
    peak_rss_mib: float
    rows: dict[str, int]
    disk_mib: float

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_s(self) -> float:
        return self.total_rows / self.wall_s


def _measure(cmd: list[str], out_dir: Path) -> Run:
    """Run ``cmd``; wall time, that child's own peak RSS, and what it wrote."""
    m = measure(cmd)
    disk = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return Run(m.wall_s, m.peak_rss_mib, m.result, disk / 2**20)


def reference_child(out_dir: str, spec_json: str, seed: int) -> None:
    """I/O floor: write ``rows`` random float64/int64 rows per table (same column count) with pyarrow."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec: dict[str, list[int]] = json.loads(spec_json)  # table -> [rows, columns]
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    for name, (rows, n_cols) in spec.items():
        names = [f"c{i}" for i in range(n_cols)]
        schema = pa.schema([(n, pa.float64() if i % 2 else pa.int64()) for i, n in enumerate(names)])
        with pq.ParquetWriter(os.path.join(out_dir, f"{name}.parquet"), schema) as writer:
            for start in range(0, rows, REF_CHUNK_ROWS):
                m = min(REF_CHUNK_ROWS, rows - start)
                cols = [
                    pa.array(rng.random(m)) if i % 2 else pa.array(rng.integers(0, 2**40, m))
                    for i in range(n_cols)
                ]
                writer.write_table(pa.table(cols, schema=schema))
    print(json.dumps({name: rows for name, (rows, _) in spec.items()}))


def _versions() -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import numpy, pyarrow; print(numpy.__version__, pyarrow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return f"python {platform.python_version()}, numpy {out[0]}, pyarrow {out[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-readme", action="store_true", help="do not record the result in bench/README.md"
    )
    parser.add_argument("--tmp", default=None, help="where to write the data (default: system temp dir)")
    parser.add_argument("--child", choices=["reference"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "reference":
        reference_child(args.out, args.spec, args.seed)
        return

    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-synthetic-") as tmp:
        gen_dir = Path(tmp) / "generator"
        print(f"generator: write({args.customers:,} customers, seed {args.seed}) ...", flush=True)
        gen = _measure(
            [sys.executable, "-c", GENERATOR_CODE, str(gen_dir), str(args.customers), str(args.seed)], gen_dir
        )
        import pyarrow.parquet as pq

        spec = {
            name: [rows, len(pq.read_schema(gen_dir / f"{name}.parquet"))] for name, rows in gen.rows.items()
        }
        ref_dir = Path(tmp) / "reference"
        print(f"reference: {gen.total_rows:,} random rows ...", flush=True)
        ref = _measure(
            [
                sys.executable,
                __file__,
                "--child",
                "reference",
                "--out",
                str(ref_dir),
                "--spec",
                json.dumps(spec),
            ],
            ref_dir,
        )

    time_ratio, mem_ratio = gen.wall_s / ref.wall_s, gen.peak_rss_mib / ref.peak_rss_mib
    print()
    print("| run | rows | wall s | peak RSS MiB | rows/s | on disk MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, run in (("generator", gen), ("reference (random numbers)", ref)):
        print(
            f"| {label} | {run.total_rows:,} | {run.wall_s:.1f} | {run.peak_rss_mib:,.0f} "
            f"| {run.rows_per_s:,.0f} | {run.disk_mib:,.0f} |"
        )
    print(f"| ratio generator/reference | | {time_ratio:.2f} | {mem_ratio:.2f} | | |")
    print()
    print("rows per table: " + ", ".join(f"{k} {v:,}" for k, v in gen.rows.items()))

    if not args.no_readme:
        today = date.today().isoformat()
        row = (
            f"| {today} | {args.customers:,} | {args.seed} | {gen.total_rows:,} | {gen.wall_s:.1f} "
            f"| {gen.peak_rss_mib:,.0f} | {gen.rows_per_s:,.0f} | {gen.disk_mib:,.0f} | {ref.wall_s:.1f} "
            f"| {ref.peak_rss_mib:,.0f} | {time_ratio:.2f} | {mem_ratio:.2f} | {machine()} | {_versions()} |"
        )
        record_row(START_MARK, END_MARK, TABLE_HEADER, row, key_columns=3)
        print(f"recorded in {README.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
