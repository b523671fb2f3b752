"""Runs the profile: for each engine and core count (Sail started pinned to the same cores), each scale, every
job alone and then all together, each run a worker process pinned by CPU affinity; returns the raw runs."""
from __future__ import annotations

import json
import logging
import os
import select
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import measure
from .jobs import JOBS, prepare, runnable

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 600


class ProfileError(ValueError):
    """Options this machine cannot honour (e.g. more cores than the process may use)."""


@dataclass
class ProfileOptions:
    jobs: list[str]
    engines: list[str]
    cores: list[int]
    scales: list[int]
    modes: list[str]  # alone, concurrent
    runs: int = 3
    quick: bool = False  # a tenth of the data
    work_dir: Path = Path(".dw/profile/work")
    model_path: str | None = None
    latency_slack: float = 1.25  # a recommendation may be this much slower than the fastest, if cheaper

    @property
    def size_factor(self) -> float:
        return 0.1 if self.quick else 1.0


@dataclass
class Run:
    job: str
    engine: str
    cores: int
    scale: int
    mode: str
    index: int
    sizes: dict[str, int]
    wall_s: float | None = None
    cpu_s: float | None = None  # worker + its share of Sail's
    worker_cpu_s: float | None = None
    sail_cpu_s: float | None = None
    peak_rss_mb: float | None = None  # worker, over the run
    sail_peak_rss_mb: float | None = None
    bytes_read: int | None = None  # worker + Sail share (syscall level: files and page cache)
    bytes_written: int | None = None
    round_wall_s: float | None = None  # concurrent: from the common start to the last job's end
    round_jobs: int = 1
    error: str | None = None
    outcome: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.wall_s is not None


def cpu_set(cores: int) -> set[int]:
    available = sorted(os.sched_getaffinity(0))
    if cores > len(available):
        raise ProfileError(f"--cores {cores}: this process may use only {len(available)} CPU(s) ({available})")
    return set(available[:cores])


@contextmanager
def sail_pinned(cpus: set[int], base: Path) -> Iterator[tuple[str, int]]:
    """A Sail server whose every thread runs on `cpus` (started under that affinity, so its thread pools are
    sized for it); stopped on exit."""
    from dw_assets.stack.process import find_free_port
    from dw_assets.stack.sail import SailServer

    sail = SailServer(base, find_free_port())
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)  # the child inherits the calling thread's mask
    try:
        pid = sail.start()
    finally:
        os.sched_setaffinity(0, old)
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except ProcessLookupError:  # the thread ended meanwhile
                pass
        yield sail.remote, pid
    finally:
        sail.stop(pid)


def _read_json_line(proc: subprocess.Popen, timeout: float) -> dict:
    """The next JSON object the worker prints (libraries may print other lines)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            return {"error": f"worker exited with code {proc.wait()}"}
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    proc.kill()
    return {"error": f"worker gave no answer within {timeout:.0f} s"}


MAX_WAITING_WORKERS = 6  # workers set up ahead of their turn (each holds a few hundred MB while it waits)


@dataclass
class _Worker:
    run: Run
    proc: subprocess.Popen
    work: Path


def _spawn(opts: ProfileOptions, run: Run, bases: dict[str, Path], remote: str | None, logs: Path) -> _Worker:
    """Start a worker for `run`; it sets up unpinned (imports are not the job), then pins every thread of
    itself to the run's cores before it says ready. Thread pools that size themselves from the environment
    (Polars, Rayon, OpenMP/Arrow) are told the run's core count, as on a machine of that size."""
    cpus = sorted(cpu_set(run.cores))
    work = opts.work_dir / "runs" / f"{run.job}-{uuid.uuid4().hex[:8]}"
    spec = {"job": run.job, "engine": run.engine, "base": str(bases[run.job]), "work": str(work),
            "model_path": opts.model_path, "remote": remote, "cpus": cpus}
    threads = str(run.cores)
    env = dict(os.environ, POLARS_MAX_THREADS=threads, RAYON_NUM_THREADS=threads, OMP_NUM_THREADS=threads,
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{run.job}-{run.engine}-{run.cores}c-x{run.scale}-{run.mode}-{run.index}.log"
    with open(log_file, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dw_assets.profile.worker", json.dumps(spec)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=REPO)
    return _Worker(run, proc, work)


def _measure_round(workers: list[_Worker], sail_pid: int | None) -> None:
    """Start the round's (ready) workers together and record each run; Sail is sampled around the round."""
    live = [w for w in workers if w.run.error is None]
    if not live:
        return
    if sail_pid:
        measure.reset_peak_rss(sail_pid)
        sail_before = measure.sample(sail_pid)
    t0 = time.perf_counter()
    for w in live:
        w.proc.stdin.write("go\n")
        w.proc.stdin.flush()
    results = [(w, _read_json_line(w.proc, READY_TIMEOUT_S)) for w in live]
    round_wall = time.perf_counter() - t0
    sail = measure.delta(sail_before, measure.sample(sail_pid)) if sail_pid else None
    sail_rss = measure.peak_rss_mb(sail_pid) if sail_pid else None
    ok = [w for w, r in results if "wall_s" in r]
    for w, r in results:
        run = w.run
        if "wall_s" not in r:
            run.error = r.get("error", "no result")
            continue
        share = 1 / len(ok)  # Sail serves every Spark job of the round: its CPU and I/O are split evenly
        run.wall_s, run.worker_cpu_s, run.peak_rss_mb, run.outcome = r["wall_s"], r["cpu_s"], r["peak_rss_mb"], \
            r.get("outcome", {})
        run.sail_cpu_s = round(sail["cpu_s"] * share, 3) if sail else None
        run.cpu_s = round(r["cpu_s"] + (run.sail_cpu_s or 0), 3)
        run.bytes_read = int(r["bytes_read"] + (sail["bytes_read"] * share if sail else 0))
        run.bytes_written = int(r["bytes_written"] + (sail["bytes_written"] * share if sail else 0))
        run.sail_peak_rss_mb = sail_rss
        run.round_wall_s = round(round_wall, 4)


def _close(w: _Worker) -> None:
    try:
        w.proc.stdin.close()
    except OSError:
        pass
    try:
        w.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        w.proc.kill()
        w.proc.wait()
    shutil.rmtree(w.work, ignore_errors=True)


def run_rounds(opts: ProfileOptions, rounds: list[list[Run]], bases: dict[str, Path], remote: str | None,
               sail_pid: int | None, logs: Path, on_round: Callable[[list[Run]], None] = lambda runs: None) -> None:
    """Each round's runs start together, one round after another; the workers of the next few rounds set up
    while they wait (idle, blocked on stdin), so a run never waits for imports and set-up."""
    batch: list[list[Run]] = []
    for rnd in rounds + [[]]:
        if rnd and sum(len(r) for r in batch) + len(rnd) <= max(MAX_WAITING_WORKERS, len(rnd)):
            batch.append(rnd)
            continue
        workers = [[_spawn(opts, run, bases, remote, logs) for run in b] for b in batch]
        try:
            for group in workers:
                for w in group:
                    r = _read_json_line(w.proc, READY_TIMEOUT_S)
                    if not r.get("ready"):
                        w.run.error = r.get("error", "worker not ready")
            for group in workers:
                _measure_round(group, sail_pid)
                on_round([w.run for w in group])
        finally:
            for group in workers:
                for w in group:
                    _close(w)
        batch = [rnd] if rnd else []


def run_profile(opts: ProfileOptions, progress: Callable[[str], None] = log.info) -> tuple[list[Run], dict]:
    """All runs of the profile, and why each (job, engine) that did not run was not measured."""
    for cores in opts.cores:
        cpu_set(cores)  # fail before any work if a core count is not available
    not_measured: dict[str, str] = {}
    runs: list[Run] = []
    data = opts.work_dir / "data"
    journal = opts.work_dir / "runs.jsonl"  # every run as it ends: a profile cut short can still be read
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text("")
    engines: dict[str, list[str]] = {}
    for engine in opts.engines:
        for job in opts.jobs:
            why = runnable(job, engine)
            if why:
                not_measured[f"{job}/{engine}"] = why
            else:
                engines.setdefault(engine, []).append(job)

    def record(got: list[Run]) -> None:
        with journal.open("a") as f:
            f.writelines(json.dumps(asdict(r)) + "\n" for r in got)
        progress(f"{got[0].engine} {got[0].cores}c x{got[0].scale} " + ", ".join(
            f"{r.job}{' (concurrent)' if r.mode == 'concurrent' else ''}: "
            + (f"{r.wall_s:.2f} s" if r.ok else f"FAILED {r.error}") for r in got))

    # Smallest scale first, every configuration, then the next: a profile stopped early has whole scales.
    for scale in opts.scales:
        for engine, jobs in engines.items():
            # Most cores first: the Spark input is prepared on the faster Sail.
            for cores in sorted(opts.cores, reverse=True):
                with (sail_pinned(cpu_set(cores), opts.work_dir / f"sail-{cores}c") if engine == "spark"
                      else _no_sail()) as (remote, sail_pid):
                    bases, ready = {}, []
                    for job in jobs:
                        sizes = JOBS[job].sizes(scale * opts.size_factor)
                        bases[job] = data / (job + "-" + "-".join(f"{k}{v}" for k, v in sizes.items()))
                        t0 = time.perf_counter()
                        why = _prepare(job, bases[job], sizes, engine, remote, opts.model_path)
                        if why:
                            not_measured[f"{job}/{engine}"] = why
                            continue
                        ready.append(job)
                        progress(f"prepared {job} x{scale} ({sizes}) for {engine} in {time.perf_counter() - t0:.1f} s")
                    rounds = [[j] for j in ready for _ in range(opts.runs)] if "alone" in opts.modes else []
                    if "concurrent" in opts.modes and len(ready) > 1:
                        rounds += [list(ready)] * opts.runs
                    counter: dict[tuple[str, int], int] = {}
                    planned = []
                    for jobs_in_round in rounds:
                        key = (jobs_in_round[0], len(jobs_in_round))
                        counter[key] = counter.get(key, 0) + 1
                        mode = "alone" if len(jobs_in_round) == 1 else "concurrent"
                        planned.append([Run(j, engine, cores, scale, mode, counter[key],
                                            JOBS[j].sizes(scale * opts.size_factor), round_jobs=len(jobs_in_round))
                                        for j in jobs_in_round])
                    run_rounds(opts, planned, bases, remote, sail_pid, opts.work_dir / "logs", record)
                    runs += [r for got in planned for r in got]
    return runs, not_measured


@contextmanager
def _no_sail() -> Iterator[tuple[None, None]]:
    yield None, None


def _prepare(job: str, base: Path, sizes: dict, engine: str, remote: str | None, model_path: str | None) -> str | None:
    if engine == "spark" and job == "apply_microbatch":
        from dw_assets.engine.session import spark_session

        with spark_session(remote=remote) as spark:
            return prepare(job, base, sizes, spark, model_path)
    return prepare(job, base, sizes, None, model_path)


def run_dicts(runs: list[Run]) -> list[dict]:
    return [asdict(r) for r in runs]
