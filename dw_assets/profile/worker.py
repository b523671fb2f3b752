"""One measured run in its own process: `python -m dw_assets.profile.worker '<spec json>'`.

Set-up first (imports, copies, the Spark session: not measured), then every thread is pinned to the run's
cores and a `ready` line goes to stdout; the profiler
answers `go` on stdin (so that concurrent runs start together) and the worker measures the job itself: wall
time, its own CPU seconds and I/O counters from /proc, and its peak RSS over the run (VmHWM reset at the start).
"""
from __future__ import annotations

import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from . import measure
from .jobs import setup_run


def pin(cpus: set[int]) -> None:
    """Every thread of this process onto `cpus` (threads started later inherit it from their creator)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            pass


def main(spec: dict) -> dict:
    run = setup_run(spec["job"], spec["engine"], Path(spec["base"]), Path(spec["work"]), spec.get("model_path"))
    with ExitStack() as stack:
        spark = None
        if spec["engine"] == "spark":
            from dw_assets.engine.session import spark_session

            spark = stack.enter_context(spark_session(remote=spec["remote"]))
            spark.sql("SELECT 1").collect()  # the connection is set-up, not part of the job
        pin(set(spec["cpus"]))
        print(json.dumps({"ready": True}), flush=True)
        if sys.stdin.readline().strip() != "go":
            return {"error": "not started"}
        measure.reset_peak_rss()
        before = measure.sample()
        t0 = time.perf_counter()
        outcome = run(spark)
        wall = time.perf_counter() - t0
        after = measure.sample()
    return {"wall_s": round(wall, 4), **measure.delta(before, after), "peak_rss_mb": measure.peak_rss_mb(),
            "outcome": outcome or {}}


if __name__ == "__main__":
    try:
        result = main(json.loads(sys.argv[1]))
    except Exception as e:  # noqa: BLE001 - the profiler records the failed run with its reason
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)
