"""Bulk writes to PostgreSQL: `serving.bulk.insert_frame` by COPY (what Diamond uses there) against the same
rows through executemany (what it uses on SQLite, and used on PostgreSQL before), in one run, on a throwaway
cluster with PostgreSQL's default durability (tests/helpers/postgres.py). The frame is shaped like a batch
snapshot: a text id, 20 float columns (one NaN in seven in one of them), an integer, a boolean, a naive
timestamp and a short text. Each method writes the frame into an empty table in one transaction, `--rounds`
times, alternating; the table is emptied between writes. Prints the best and the median time of each.

    .venv/bin/python bench/bench_bulk.py --rows 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def frame_of(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:08d}" for i in range(rows)],
            **{f"f{j}": rng.normal(size=rows) for j in range(20)},
            "n": rng.integers(0, 1000, rows),
            "flag": rng.random(rows) > 0.5,
            "at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**9, rows), unit="s"),
            "tier": rng.choice(["diamond", "gold", "silver", "bronze"], rows),
        }
    )
    frame.loc[::7, "f3"] = np.nan
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import sqlalchemy as sa

    from serving import bulk
    from tests.helpers import free_port
    from tests.helpers import postgres as pg

    frame = frame_of(args.rows)
    seconds: dict[bulk.Method, list[float]] = {"executemany": [], "copy": []}
    with pg.cluster(free_port(), durable=True) as cluster:
        eng = sa.create_engine(cluster.new_database("bulk"))
        with eng.begin() as con:
            frame.iloc[:0].to_sql("t", con, index=False)
            table = bulk.table_of(con, "t")
        for _ in range(args.rounds):
            for method in seconds:
                with eng.begin() as con:
                    con.exec_driver_sql("TRUNCATE t")
                t0 = time.perf_counter()
                with eng.begin() as con:
                    bulk.insert_frame(con, table, frame, method=method)
                seconds[method].append(time.perf_counter() - t0)
        eng.dispose()
    for method, times in seconds.items():
        print(
            f"{method}: best {min(times):.2f} s, median {statistics.median(times):.2f} s "
            f"({args.rows / min(times):,.0f} rows/s)"
        )
    ratio = min(seconds["executemany"]) / min(seconds["copy"])
    print(f"COPY is {ratio:.1f}x executemany (best of {args.rounds}); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
