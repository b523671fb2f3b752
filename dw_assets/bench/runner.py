"""Runs stage benchmarks one after another, each in a worker process on a fresh stack of its own (free ports,
temporary state directory), and writes the JSON result and the markdown table.

Memory: the worker's peak RSS comes from wait4 when it exits; MariaDB's and the broker's from their VmHWM just
before the stack is stopped.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from dw_assets.stack import Stack, StackConfig, find_free_port

from .harness import Child, StageResult, machine_info, peak_rss_mb, write_results
from .smoke import SMOKE_ENV, smoke
from .stages import size
from .worker import STAGES

STAGE_TIMEOUT_S = {True: 300, False: 3600}  # quick, full (e2e: two loads)


def _env(home: Path) -> dict[str, str]:
    # The developer's DW_* variables would point the worker at another stack.
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("DW_") or k == SMOKE_ENV) and k != "DAGSTER_HOME"}
    env["DW_HOME"] = str(home)
    return env


def _keep_logs(home: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for log in home.rglob("*.log"):
        if "mariadb" in log.parts or log.stat().st_size > 20_000_000:
            continue
        rel = log.relative_to(home)
        target = dest / str(rel).replace(os.sep, "__")
        shutil.copyfile(log, target)


def run_stage(stage: str, quick: bool, logs_dir: Path, keep: bool = False,
              progress: Callable[[str], None] = lambda m: None) -> StageResult:
    if stage == "onboard" and importlib.util.find_spec("dw_assets.onboarding.bench") is None:
        from .stages import bench_onboard

        return bench_onboard(None, quick)  # type: ignore[arg-type] - reports "not available" without a stack
    started = time.perf_counter()
    # Short path under /tmp: MariaDB's socket path must stay under 107 bytes.
    home = Path(tempfile.mkdtemp(prefix=f"dwb-{stage}-", dir="/tmp"))
    stack = Stack(StackConfig(home=home, mariadb_port=find_free_port(), kafka_port=find_free_port()))
    result = StageResult(stage, status="failed", error="interrupted")
    try:
        stack.up()
        state = stack.read_state()
        progress(f"{stage}: stack up on {state['mariadb']['port']}/{state['kafka']['port']} ({home})")
        out = home / "result.json"
        cmd = [sys.executable, "-m", "dw_assets.bench.worker", stage, "--home", str(home), "--out", str(out)]
        if quick:
            cmd.append("--quick")
        child = Child(cmd, env=_env(home), log=home / "worker.log")
        r = child.wait(STAGE_TIMEOUT_S[quick])
        if out.exists():
            result = StageResult.from_dict(json.loads(out.read_text()))
        else:
            tail = (home / "worker.log").read_text(errors="replace")[-2000:] if (home / "worker.log").exists() else ""
            result = StageResult(stage, status="failed",
                                 error=("timed out after %d s" % STAGE_TIMEOUT_S[quick]) if r.timed_out
                                 else f"worker exited with code {r.returncode}: {tail.strip().splitlines()[-1:]}")
        result.processes = {"bench worker": r.peak_rss_mb, **result.processes,
                            "mariadbd": peak_rss_mb(state["mariadb"].get("pid")),
                            "tansu": peak_rss_mb(state["kafka"].get("pid"))}
        for f in result.figures:
            f.extra.setdefault("peak_rss_mb", r.peak_rss_mb)
        result.params.setdefault("worker_cpu_s", round(r.cpu_s, 1))
    except Exception as e:  # noqa: BLE001 - a stage that cannot start is reported, the others still run
        result = StageResult(stage, status="failed", error=f"{e.__class__.__name__}: {e}")
    finally:
        try:
            stack.down()
        finally:
            if result.status != "ok" or keep:
                _keep_logs(home, logs_dir / stage)
            if keep:
                progress(f"{stage}: kept {home}")
            else:
                shutil.rmtree(home, ignore_errors=True)
    result.seconds = time.perf_counter() - started  # stack set-up and tear-down included
    return result


def run_benchmarks(stages: Sequence[str], quick: bool, json_path: Path, md_path: Path | None = None,
                   keep: bool = False, progress: Callable[[str], None] = lambda m: None,
                   command: str = "dw bench", update: bool = False) -> dict:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: choose from {', '.join(STAGES)}")
    machine = machine_info()
    started = time.perf_counter()
    results: list[StageResult] = []
    logs_dir = Path(json_path).parent / "logs"
    previous = json.loads(Path(json_path).read_text()) if update and Path(json_path).exists() else None

    def write(done: bool) -> dict:
        machine["load_average_end"] = list(os.getloadavg())
        result = {"command": command, "quick": quick, "smoke": quick and smoke(), "machine": machine, "complete": done,
                  "seconds": round(time.perf_counter() - started, 1),
                  "sizes": {s: _sizes(s, quick) for s in stages}, "stages": [r.as_dict() for r in results]}
        if previous is not None:
            result = merge_into(previous, result)
        write_results(result, Path(json_path), md_path)
        return result

    for stage in stages:
        progress(f"{stage}: starting ({'quick' if quick else 'full'})")
        r = run_stage(stage, quick, logs_dir, keep, progress)
        if stage == "e2e" and not quick:
            progress("e2e: Dagster mode on a stack of its own")
            merge_dagster(r, run_stage("e2e-dagster", quick, logs_dir, keep, progress))
        progress(f"{stage}: {r.status} in {r.seconds:.0f} s" + (f" — {r.error}" if r.error else ""))
        results.append(r)
        # After every stage: a long run that is interrupted keeps what it measured ("complete": false).
        write(done=stage == stages[-1])
    return write(done=True)


def merge_into(previous: dict, new: dict) -> dict:
    """`previous` with the stages of `new` replacing (or joining) its own, in stage order; the re-run is recorded
    under "updates" with its own machine line (date, commit, load)."""
    if previous.get("quick") != new.get("quick"):
        raise ValueError("cannot merge a quick run into a full run's results (or the reverse)")
    fresh = {s["stage"]: s for s in new["stages"]}
    kept = [s for s in previous["stages"] if s["stage"] not in fresh]
    order = {name: i for i, name in enumerate(STAGES)}
    merged = dict(previous)
    merged["stages"] = sorted(kept + list(fresh.values()), key=lambda s: order.get(s["stage"], len(order)))
    merged["sizes"] = {**previous.get("sizes", {}), **new.get("sizes", {})}
    merged["seconds"] = round(sum(s.get("seconds", 0.0) for s in merged["stages"]), 1)
    merged["updates"] = [*previous.get("updates", []),
                         {"stages": sorted(fresh), "command": new.get("command"), "machine": new["machine"]}]
    return merged


def merge_dagster(continuous: StageResult, dagster: StageResult) -> None:
    """Fold the Dagster-mode result into the e2e stage; its figures take the service mode's same percentile
    from this run as their reference."""
    by_key = {f.extra.get("key"): f for f in continuous.figures if f.extra.get("key")}
    for f in dagster.figures:
        ref = by_key.get(f.extra.get("reference_key"))
        if ref is not None and f.runs:
            f.reference_name = "ingest service mode, same run (" + ref.name.split(" (")[0].replace("freshness ", "") + ")"
            f.reference_runs = list(ref.runs)
    continuous.figures += dagster.figures
    continuous.notes += dagster.notes + ([f"dagster mode {dagster.status}: {dagster.error}"] if dagster.error else [])
    continuous.processes.update({(k if k.startswith("dagster mode") else f"dagster mode: {k}"): v
                                 for k, v in dagster.processes.items()})
    continuous.seconds += dagster.seconds
    if dagster.status == "failed" and not dagster.figures:
        from .harness import Figure

        continuous.figures.append(Figure.not_measured("e2e", "freshness commit → silver, Dagster sensors + daemon",
                                                      "s", f"failed: {dagster.error}", kind="latency"))


def _sizes(stage: str, quick: bool) -> dict:
    try:
        return size(stage, quick)
    except KeyError:
        return {}
