"""Bench-only gc tracing for bench/serving_timeline.py: a Python process started with bench/trace on its
PYTHONPATH and BENCH_TRACE_DIR set writes every garbage collection to BENCH_TRACE_DIR/gc-<pid>.tsv: start
(time.monotonic, s), wall ms, generation, objects collected, the thread's CPU ms, the objects left in the
oldest generation after a full collection (-1 otherwise) and the objects frozen by gc.freeze(). With
BENCH_TRACE_TYPES also set, the first full collection after a gc.freeze() that leaves more than 20,000
objects writes their 40 commonest types to types-<pid>.txt (how the BentoML timer leak was found:
serving/traffic.py). Without BENCH_TRACE_DIR it does nothing."""

import os

if os.environ.get("BENCH_TRACE_DIR"):
    import collections
    import gc
    import sys
    import time

    _folder = os.environ["BENCH_TRACE_DIR"]
    _out = open(os.path.join(_folder, f"gc-{os.getpid()}.tsv"), "a", buffering=1 << 16)  # noqa: SIM115
    _out.write(f"# {' '.join(sys.argv)[:200]}\n")
    _start = [0.0, 0.0]
    _types = [bool(os.environ.get("BENCH_TRACE_TYPES"))]

    def _dump_types() -> None:
        objects = gc.get_objects(generation=2)
        counts = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
        with open(os.path.join(_folder, f"types-{os.getpid()}.txt"), "w") as f:
            f.writelines(f"{n}\t{name}\n" for name, n in counts.most_common(40))

    def _trace(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _start[0], _start[1] = time.monotonic(), time.thread_time()
            return
        wall, cpu = time.monotonic() - _start[0], time.thread_time() - _start[1]
        generation = info["generation"]
        left = len(gc.get_objects(generation=2)) if generation == 2 else -1
        _out.write(
            f"{_start[0]:.6f}\t{wall * 1000:.3f}\t{generation}\t{info['collected']}\t{cpu * 1000:.3f}"
            f"\t{left}\t{gc.get_freeze_count()}\n"
        )
        if _types[0] and left > 20_000 and gc.get_freeze_count() > 0:
            _types[0] = False
            _dump_types()
        if generation == 2 or wall > 0.005:
            _out.flush()

    gc.callbacks.append(_trace)
