"""End-to-end freshness: MariaDB commit → visible in silver, and → in a rebuilt report, under a steady workload.

Continuous mode runs the pipeline as it would run without Dagster: the capture service, one landing writer per
client (unbounded, short idle/max-age flushes) and an apply loop, each in its own process, plus the workload in
a process of its own. A probe commits a marker (`customers.notes` of one row per client; the workload never
writes that column) and polls silver until the marker is there; then it rebuilds that client's reports.
Reference: the same probes on the same pipeline without the workload (the pipeline's own polling floor).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from dw_assets.db import connect
from dw_assets.identifiers import quote_ident
from dw_assets.settings import Settings

from .harness import Child, Figure, StageResult, peak_rss_mb, percentile
from .smoke import smoke

log = logging.getLogger(__name__)



def _probe_target() -> tuple[str, str, str]:
    """(table, key column, column) for the freshness marker, chosen from the model: the first table the workload
    never deletes from, with a one-column key and a nullable text column the workload leaves alone."""
    from dw_assets.model import load_model

    for t in load_model().tables:
        if t.workload.delete_weight or len(t.primary_key) != 1 or t.options.column_mapping == "name":
            continue
        for c in t.columns:
            if c.nullable and c.role is None and not c.primary_key and c.type.base in ("text", "varchar", "mediumtext", "longtext"):
                return t.name, t.primary_key[0], c.name
    raise ValueError("the model has no table with a nullable text column for freshness markers")


PROBE_TABLE, PROBE_KEY, PROBE_COLUMN = _probe_target()


@dataclass
class E2EParams:
    clients: int = 10
    rate: float = 2000  # row changes per second over all clients
    duration_s: float = 120  # loaded phase
    rows_per_client: int = 3000  # seeded before capture starts (snapshot)
    idle_probes: int = 10  # reference: probes with no workload
    probe_interval_s: float = 0.5
    windows: int = 3  # the loaded phase is cut into this many windows: one run per window
    landing_idle_s: float = 0.5
    landing_max_age_s: float = 1.0
    apply_parallel: int = 2
    connections: int = 3  # workload connections
    catch_up_timeout_s: float = 300
    drain_timeout_s: float = 120  # after the workload: probes not visible by then are reported as unseen
    client_prefix: str = "e2e"  # client names <prefix>_00..: a second run on the same stack uses other clients

    @classmethod
    def for_run(cls, quick: bool) -> "E2EParams":
        if quick and smoke():
            return cls(duration_s=5, rows_per_client=200, idle_probes=2, drain_timeout_s=15)
        if quick:
            return cls(duration_s=15, rows_per_client=1000, idle_probes=3, drain_timeout_s=25)
        return cls()

    @classmethod
    def wide(cls) -> "E2EParams":
        """The issue's second load: 5,000 changes/s over 50 clients (full runs only)."""
        return cls(clients=50, rate=5000, rows_per_client=1000, client_prefix="e2w", drain_timeout_s=300,
                   catch_up_timeout_s=600)


@dataclass
class Probe:
    client: str
    key: int
    marker: str
    t_commit: float  # wall clock just after COMMIT returned
    commit_s: float
    loaded: bool
    t_silver: float | None = None
    t_report: float | None = None
    report_build_s: float | None = None

    @property
    def silver_s(self) -> float | None:
        return None if self.t_silver is None else self.t_silver - self.t_commit

    @property
    def report_s(self) -> float | None:
        return None if self.t_report is None else self.t_report - self.t_commit


class SilverWatch:
    """Polls each client's silver probe table, reading rows only when the table got a new version."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.tables: dict[str, Any] = {}
        self.versions: dict[str, int] = {}

    def visible(self, probe: Probe) -> bool:
        from dw_assets.lakehouse.paths import open_table, read_table, table_url

        dt = self.tables.get(probe.client)
        if dt is None:
            dt = open_table(self.settings, table_url(self.settings, "silver", probe.client, PROBE_TABLE))
            if dt is None:
                return False
            self.tables[probe.client] = dt
        else:
            dt.update_incremental()
        v = dt.version()
        if self.versions.get(probe.client) == v:
            return False
        rows = read_table(dt, columns=[PROBE_COLUMN], filter=pc.field(PROBE_KEY) == probe.key)
        if rows.num_rows and rows[PROBE_COLUMN][0].as_py() == probe.marker:
            return True
        self.versions[probe.client] = v  # seen this version without the marker
        return False


class ProbeRunner:
    """Commits markers, watches silver for them and rebuilds reports for the newest visible one."""

    def __init__(self, settings: Settings, clients: list[str], poll_s: float = 0.1):
        self.settings, self.clients, self.poll_s = settings, clients, poll_s
        self.keys: dict[str, int] = {}
        with connect(settings) as conn, conn.cursor() as cur:
            for c in clients:
                cur.execute(f"SELECT MIN({quote_ident(PROBE_KEY)}) FROM {quote_ident(c)}.{quote_ident(PROBE_TABLE)}")
                self.keys[c] = int(cur.fetchone()[0])
        self.conn = connect(settings, autocommit=False)
        self.watch = SilverWatch(settings)
        self.outstanding: dict[str, Probe] = {}
        self.done: list[Probe] = []
        self.lock = threading.Lock()
        self.reports: "queue.Queue[Probe]" = queue.Queue()
        self.stop = threading.Event()
        self.seq = 0
        self.build_reports = True
        self._threads = [threading.Thread(target=self._watch_loop, name="probe-watch", daemon=True),
                         threading.Thread(target=self._report_loop, name="probe-report", daemon=True)]
        for t in self._threads:
            t.start()

    def commit(self, client: str, loaded: bool) -> Probe:
        self.seq += 1
        marker = f"probe {self.seq} {uuid.uuid4().hex[:8]}"
        with self.conn.cursor() as cur:
            cur.execute(f"UPDATE {quote_ident(client)}.{quote_ident(PROBE_TABLE)} SET {quote_ident(PROBE_COLUMN)} = %s "
                        f"WHERE {quote_ident(PROBE_KEY)} = %s", (marker, self.keys[client]))
        t0 = time.time()
        self.conn.commit()
        t1 = time.time()
        p = Probe(client, self.keys[client], marker, t1, t1 - t0, loaded)
        with self.lock:
            self.outstanding[client] = p
        return p

    def free_clients(self) -> list[str]:
        with self.lock:
            return [c for c in self.clients if c not in self.outstanding]

    def wait_all(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.outstanding:
                    return True
            time.sleep(0.05)
        return False

    def wait_reports(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.reports.unfinished_tasks > 0):
            time.sleep(0.05)

    def _watch_loop(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                pending = list(self.outstanding.values())
            for p in pending:
                try:
                    seen = self.watch.visible(p)
                except Exception as e:  # noqa: BLE001 - a table mid-creation; try again next poll
                    log.debug("probe read %s: %s", p.client, e)
                    continue
                if seen:
                    p.t_silver = time.time()
                    with self.lock:
                        self.outstanding.pop(p.client, None)
                        self.done.append(p)
                    if self.build_reports:
                        self.reports.put(p)
            self.stop.wait(self.poll_s)

    def _report_loop(self) -> None:
        from dw_assets.reports.build import build_client_reports

        while not self.stop.is_set():
            try:
                p = self.reports.get(timeout=0.2)
            except queue.Empty:
                continue
            # Under load only the newest visible probe is worth a build: older ones would measure the queue.
            skipped = []
            while True:
                try:
                    newer = self.reports.get_nowait()
                except queue.Empty:
                    break
                skipped.append(p)
                p = newer
            try:
                t0 = time.time()
                build_client_reports(self.settings, p.client)
                p.t_report = time.time()
                p.report_build_s = p.t_report - t0
            except Exception as e:  # noqa: BLE001 - recorded as a missing report time
                log.warning("report build for %s failed: %s", p.client, e)
            for _ in range(len(skipped) + 1):
                self.reports.task_done()

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)
        self.conn.close()


def _role(name: str, home: Path, clients: list[str], work: Path, *extra: str) -> Child:
    out = work / f"{name}.json"
    return Child([sys.executable, "-m", "dw_assets.bench.roles", name, "--home", str(home), "--clients",
                  ",".join(clients), "--out", str(out), *extra], log=work / f"{name}.log")


def _workload(home: Path, clients: list[str], work: Path, p: E2EParams) -> Child:
    return Child([sys.executable, "-m", "dw_assets.bench.e2e", "--home", str(home), "--clients", ",".join(clients),
                  "--rate", str(p.rate), "--duration", str(p.duration_s), "--connections", str(p.connections),
                  "--out", str(work / "workload.json")], log=work / "workload.log")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _rate_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    """Rate of a cumulative counter sampled as (time, value) between t0 and t1 (linear interpolation)."""
    if len(samples) < 2 or t1 <= t0:
        return None

    def at(t: float) -> float:
        if t <= samples[0][0]:
            return samples[0][1]
        for (ta, va), (tb, vb) in zip(samples, samples[1:]):
            if ta <= t <= tb:
                return va + (vb - va) * ((t - ta) / (tb - ta) if tb > ta else 1)
        return samples[-1][1]

    return (at(t1) - at(t0)) / (t1 - t0)


def run_e2e_bench(settings: Settings, mode: str = "continuous", *, quick: bool = False,
                  params: E2EParams | None = None, work_dir: Path | None = None) -> StageResult:
    """Freshness figures of the whole flow; `mode` "service" (capture + `dw ingest run`, the product's default),
    "continuous" (capture, landing writers and an apply loop as plain processes) or "dagster" (the demo's sensors)."""
    if mode == "dagster":
        return run_e2e_dagster(settings, quick=quick, params=params, work_dir=work_dir)
    if mode not in ("continuous", "service"):
        raise ValueError(f"mode must be 'service', 'continuous' or 'dagster', not {mode!r}")
    p = params or E2EParams.for_run(quick)
    work = Path(work_dir or settings.home / f"bench-e2e-{mode}")
    work.mkdir(parents=True, exist_ok=True)
    return _continuous(settings, p, work, service=mode == "service")


def _ingest_service(home: Path, clients: list[str], work: Path, p: E2EParams) -> Child:
    """`dw ingest run` for the benchmark's clients, logging every micro-batch (as the apply role does) and every
    report build; it reports to the Dagster instance of the bench home, as in production."""
    cmd = [sys.executable, "-m", "dw_assets.cli", "--home", str(home), "ingest", "run",
           *(a for c in clients for a in ("--client", c)), "--apply-workers", str(p.apply_parallel),
           "--max-age", str(p.landing_max_age_s), "--batch-log", str(work / "apply.json.jsonl"),
           "--report-log", str(work / "reports.jsonl")]
    return Child(cmd, log=work / "ingest.log")


def _reports_from_service(probes: list[Probe], path: Path) -> None:
    """Commit → report in service mode: a probe is in its client's reports once a build of that client *started*
    after the probe was visible in silver (its gold queries read silver after that) and finished."""
    try:
        builds = [json.loads(line) for line in path.read_text().splitlines()]
    except OSError:
        return
    by_client: dict[str, list[dict[str, Any]]] = {}
    for b in builds:
        by_client.setdefault(b["client"], []).append(b)
    for pr in probes:
        if pr.t_silver is None:
            continue
        after = [b for b in by_client.get(pr.client, []) if b["start"] >= pr.t_silver]
        if after:
            first = min(after, key=lambda b: b["start"])
            pr.t_report = first["end"]
            pr.report_build_s = first["end"] - first["start"]


def _proc_stats(pid: int) -> dict[int, list[str]]:
    """/proc/PID/stat fields after the command (field 4, ppid, at index 1) of a live process and its live children
    (the service's apply and side workers)."""
    found: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or f[1] == str(pid):
            found[int(stat.parent.name)] = f
    return found


def _proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds so far of a live process and its live children (fields 14 and 15)."""
    stats = _proc_stats(pid)
    return sum(int(f[11]) + int(f[12]) for f in stats.values()) / os.sysconf("SC_CLK_TCK") if stats else None


def _continuous(settings: Settings, p: E2EParams, work: Path, service: bool = False) -> StageResult:
    from dw_assets.workload import seed_clients

    mode = "service" if service else "continuous"
    result = StageResult("e2e", params={"mode": mode, **p.__dict__})
    names = [f"{p.client_prefix}_{i:02d}" for i in range(p.clients)]
    t0 = time.perf_counter()
    seed_clients(settings, names, rows_per_client=p.rows_per_client, seed=11)
    seed_s = time.perf_counter() - t0
    log.info("seeded %d clients in %.1f s", p.clients, seed_s)
    home = Path(settings.home)
    # A landing writer lists its client's topics at start and then only every 30 s; capture creates a topic at
    # the table's first event. Creating them first (as capture would) keeps that refresh out of the warm-up.
    _create_topics(settings, names)
    roles = {"capture service": _role("capture", home, names, work)}
    if service:
        roles["ingest service"] = _ingest_service(home, names, work, p)
    else:
        roles["landing"] = _role("landing", home, names, work, "--idle", str(p.landing_idle_s), "--max-age",
                                 str(p.landing_max_age_s))
        roles["apply"] = _role("apply", home, names, work, "--parallel", str(p.apply_parallel))
    probes = None
    cpu_at_load: float | None = None
    workload: Child | None = None
    try:
        probes = ProbeRunner(settings, names)
        probes.build_reports = not service  # the service rebuilds reports itself (debounced)
        # Warm-up: one probe per client behind the initial snapshot; everything visible = pipeline caught up.
        t_start = time.perf_counter()
        for c in names:
            probes.commit(c, loaded=False)
        if not probes.wait_all(p.catch_up_timeout_s):
            _check_roles(roles)
            raise RuntimeError(f"the pipeline did not catch up with the snapshot within {p.catch_up_timeout_s:.0f}s "
                               f"(probes outstanding: {sorted(probes.outstanding)}); see {work}/*.log")
        catch_up_s = time.perf_counter() - t_start
        log.info("snapshot visible in silver for every client after %.1f s", catch_up_s)
        probes.wait_reports(120)
        warm = list(probes.done)
        probes.done.clear()

        # Reference: probes on the idle pipeline, one at a time.
        for i in range(p.idle_probes):
            probes.commit(names[i % len(names)], loaded=False)
            if not probes.wait_all(120):
                raise RuntimeError("an idle probe was not visible in silver within 120 s")
            probes.wait_reports(120)
        _check_roles(roles)
        log.info("%d idle probes done", p.idle_probes)

        # Loaded phase: the workload in its own process, probes every probe_interval_s, round robin.
        workload = _workload(home, names, work, p)
        if service:
            cpu_at_load = _proc_cpu_s(roles["ingest service"].pid)
        load_start = time.time()
        turn = 0
        while workload.poll() is None:
            free = probes.free_clients()
            if free:
                c = names[turn % len(names)]
                while c not in free:
                    turn += 1
                    c = names[turn % len(names)]
                probes.commit(c, loaded=True)
                turn += 1
            time.sleep(p.probe_interval_s)
            if time.time() - load_start > p.duration_s + 120:
                raise RuntimeError("the workload process did not finish")
        load_end = time.time()
        log.info("workload done after %.1f s", load_end - load_start)
        wl_child = workload.poll()
        result.processes["workload"] = wl_child.peak_rss_mb if wl_child else None
        drained = probes.wait_all(p.drain_timeout_s)
        # Until the loaded changes are applied (not the workload's end): the service's cost of those changes.
        cpu_at_load_end = _proc_cpu_s(roles["ingest service"].pid) if service else None
        workers_rss = _children_peak_rss_mb(roles["ingest service"].pid) if service else None
        probes.wait_reports(60)
        log.info("loaded probes drained after %.1f s", time.time() - load_end)
        _check_roles(roles)
    finally:
        if probes is not None:
            probes.close()
        if workload is not None and workload.poll() is None:
            workload.kill()
            workload.wait(10)
        stats = {}
        for name, child in roles.items():
            r = child.terminate(60)
            result.processes[name] = r.peak_rss_mb
            stats[name] = r
    wl = _read_json(work / "workload.json")
    if not drained:
        result.notes.append(f"some loaded probes were still not visible {p.drain_timeout_s:.0f} s after the "
                            "workload stopped; they are left out of the percentiles (see extra.unseen), so the "
                            "tail is understated")
    if service:
        _reports_from_service(probes.done, work / "reports.jsonl")
    result.figures = _figures(p, probes, warm, wl, work, load_start, load_end, service=service)
    if service:
        result.figures += _service_figures(p, stats["ingest service"], cpu_at_load, cpu_at_load_end, wl,
                                           workers_rss)
    cap, land, app = (_read_json(work / f"{n}.json") for n in ("capture", "landing", "apply"))
    if service:
        batches = [json.loads(line) for line in (work / "apply.json.jsonl").read_text().splitlines()] \
            if (work / "apply.json.jsonl").exists() else []
        land = {"files": "(service)"}
        app = {"passes": len(batches), "errors": sum(1 for b in batches if b.get("failed"))}
    result.notes.append(
        f"{p.clients} clients seeded with ~{p.rows_per_client:,} rows each in {seed_s:.1f} s; snapshot → silver "
        f"for all clients in {catch_up_s:.1f} s (warm-up, not in the figures); workload achieved "
        f"{wl.get('achieved_rate', 0):,.0f} of {p.rate:,.0f} row changes/s requested for {p.duration_s:.0f} s; capture "
        f"{cap.get('events', '?')} events, landing {land.get('files', '?')} files, apply {app.get('passes', '?')} "
        f"passes ({app.get('errors', '?')} failed).")
    result.notes.append(
        "freshness = wall time from COMMIT returning to the probe seeing the marker in silver (polled every 0.1 s "
        "on a new table version); to report = " + (
            "until the end of the service's first rebuild of that client's reports that started after the marker "
            "was in silver (debounced: DW_REPORTS_DEBOUNCE_SECONDS, default 10)." if service else
            "that plus one rebuild of the client's reports (the newest visible probe is built, older ones "
            "waiting behind it are skipped)."))
    failures = _failed_passes(work / "apply.json.jsonl")
    if failures:
        result.notes.append(f"{len(failures)} apply pass(es) failed and were retried by the next round; first: "
                            f"{failures[0][:300]}")
    warm_seen = [w.silver_s for w in warm if w.silver_s is not None]
    if warm_seen:
        result.notes.append(f"warm-up probes (behind the snapshot): max {max(warm_seen):.1f} s to silver.")
    return result


def _create_topics(settings: Settings, clients: list[str]) -> None:
    from dw_assets.cdc.topics import TopicRegistry
    from dw_assets.contracts import data_topic
    from dw_assets.model import load_model

    registry = TopicRegistry(settings)
    for c in clients:
        for t in load_model().tables:
            registry.ensure(data_topic(settings.kafka.topic_prefix, c, t.name))


def _failed_passes(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        d = json.loads(line)
        if d.get("failed"):
            out.append(f"{d['client']}: " + "; ".join(f"{t}: {e}" for t, e in d["failed"].items()))
    return out


def _check_roles(roles: dict[str, Child]) -> None:
    for name, child in roles.items():
        r = child.poll()
        if r is not None:
            raise RuntimeError(f"the {name} process exited early (code {r.returncode}); see its log {child.log}")


def _children_peak_rss_mb(pid: int) -> float | None:
    """Sum of the peak RSS (VmHWM) of a process's live children (the service's apply and side workers): an upper
    bound of what they held at once."""
    peaks = [peak_rss_mb(child) for child in _proc_stats(pid) if child != pid]
    known = [r for r in peaks if r is not None]
    return round(sum(known), 1) if known else None


def _service_figures(p: E2EParams, stats: Any, cpu0: float | None, cpu1: float | None,
                     wl: dict[str, Any], workers_rss: float | None = None) -> list[Figure]:
    """Cost of the ingest service: peak RSS (wait4 of the service process, plus the summed peaks of its worker
    processes) and CPU seconds (with its workers) per 1,000 row changes, from the loaded phase's start until its
    changes were applied."""
    flow = f"{p.clients} clients, {p.rate:,.0f} changes/s"
    own = stats.peak_rss_mb
    figs = [Figure("e2e", f"ingest service peak RSS, with its worker processes ({flow})", "MB",
                   [round(own + (workers_rss or 0.0), 1)] if own else [], higher_is_better=False,
                   kind="memory", bound="Per client a landing writer (librdkafka buffers); per apply worker Delta/"
                                        "DuckDB state; Dagster's instance for the runless events.",
                   extra={"key": "service_peak_rss_mb", "cpu_s_total": round(stats.cpu_s, 1),
                          "service_process_mb": round(own, 1) if own else None, "workers_mb": workers_rss})]
    changes = wl.get("row_changes")
    if cpu0 is not None and cpu1 is not None and changes:
        figs.append(Figure("e2e", f"ingest service CPU seconds per 1,000 row changes ({flow})", "s",
                           [round((cpu1 - cpu0) / changes * 1000, 3)], higher_is_better=False, kind="time",
                           bound="Landing (Parquet, fsync) and the apply workers' decoding and Delta commits.",
                           extra={"key": "service_cpu_per_1000", "cpu_s_loaded": round(cpu1 - cpu0, 1),
                                  "row_changes": changes}))
    return figs


def _figures(p: E2EParams, probes: ProbeRunner, warm: list[Probe], wl: dict[str, Any], work: Path,
             load_start: float, load_end: float, service: bool = False) -> list[Figure]:
    idle = [x for x in probes.done if not x.loaded]
    loaded = [x for x in probes.done if x.loaded]
    unseen = [x for x in probes.outstanding.values() if x.loaded]
    span = (load_end - load_start) / p.windows
    windows = [(load_start + i * span, load_start + (i + 1) * span) for i in range(p.windows)]

    def per_window(attr: str, q: float) -> list[float]:
        out = []
        for a, b in windows:
            vals = [getattr(x, attr) for x in loaded if a <= x.t_commit < b and getattr(x, attr) is not None]
            v = percentile(vals, q)
            if v is not None:
                out.append(round(v, 3))
        return out

    def overall(attr: str, probes_: list[Probe]) -> dict[str, Any]:
        vals = [getattr(x, attr) for x in probes_ if getattr(x, attr) is not None]
        return {"n": len(vals), **{f"p{q}": (round(percentile(vals, q), 3) if vals else None) for q in (50, 95, 99)},
                "max": round(max(vals), 3) if vals else None}

    flow = f"{p.clients} clients, {p.rate:,.0f} changes/s" + (", ingest service" if service else "")
    bound_silver = (f"The ingest service cuts a partition's file at most {p.landing_max_age_s:g} s after its first "
                    f"message and applies each client's new files as one micro-batch ({p.apply_parallel} workers "
                    f"over {p.clients} clients); under load a change waits for the batch in progress, then its own."
                    ) if service else (f"Landing flushes a partition {p.landing_idle_s:g} s after its last message (at most "
                    f"{p.landing_max_age_s:g} s after its first), then the apply loop ({p.apply_parallel} threads "
                    f"over {p.clients} clients, a bronze append and one MERGE per changed table each) picks the file "
                    "up; the apply round dominates under load.")
    bound_report = ("Silver freshness, then the service's debounced rebuild (at most one per client per "
                    "DW_REPORTS_DEBOUNCE_SECONDS, one build at a time over all clients)." if service else
                    "Silver freshness plus one rebuild of the client's five reports (DuckDB over silver, gold Delta "
                    "writes, HTML).")
    figures = []
    for attr, label, bound in (("silver_s", "commit → silver", bound_silver),
                               ("report_s", "commit → report", bound_report)):
        ref_all = [getattr(x, attr) for x in idle if getattr(x, attr) is not None]
        for q in (50, 95, 99):
            figures.append(Figure(
                "e2e", f"freshness {label} p{q} ({flow}, windows of {span:.0f} s)", "s", per_window(attr, q),
                f"same probe, idle pipeline (p{q})",
                [round(v, 3) for v in ref_all] if q == 50 else ([round(percentile(ref_all, q), 3)] if ref_all else []),
                higher_is_better=False, kind="latency", bound=bound if q == 50 else "Same bounds; the tail follows "
                "the apply round hitting a busy client and MERGE commits of larger batches.",
                extra={"key": f"{attr}_p{q}", "loaded": overall(attr, loaded), "idle": overall(attr, idle),
                       "idle_runs": [round(v, 3) for v in ref_all]}))
    # Throughput: row changes reaching silver per window next to the row changes committed in that window.
    samples = []
    try:
        for line in (work / "workload.json.jsonl").read_text().splitlines():
            d = json.loads(line)
            samples.append((d["t"], d["rows"]))
    except OSError:
        pass
    applied = []
    try:
        applied = [json.loads(line) for line in (work / "apply.json.jsonl").read_text().splitlines()]
    except OSError:
        pass
    commit_rates, silver_rates = [], []
    for a, b in windows:
        r = _rate_between(samples, a, b)
        if r is not None:
            commit_rates.append(round(r))
        # A pass's events are spread over its duration: the share inside the window counts for the window.
        ev = sum(x["events"] * _overlap(x["start"], x["end"], a, b) for x in applied)
        silver_rates.append(round(ev / (b - a)))
    busy = [x for x in applied if x["events"] and load_start <= x["start"] < load_end]
    pass_s = percentile([x["end"] - x["start"] for x in busy], 50)
    silver_s = percentile([x.get("phases", {}).get("silver", 0) for x in busy], 50)
    figures.append(Figure(
        "e2e", f"row changes applied to silver per second ({flow})", "changes/s", silver_rates,
        "row changes committed by the workload (same windows)", commit_rates,
        bound="Keeping up is the requirement: the ratio stays near 1 while the apply round is shorter than the "
              "window; the workload itself is paced to the requested rate.",
        extra={"keep_up": round(sum(silver_rates) / sum(commit_rates), 3) if sum(commit_rates) else None,
               "workload": {k: wl.get(k) for k in ("achieved_rate", "row_changes", "commits", "retries")},
               "probe_commit_s_p50": percentile([x.commit_s for x in loaded], 50),
               "unseen": len(unseen), "warm_up_probes": len(warm),
               "apply_pass_s_p50_under_load": pass_s, "apply_silver_phase_s_p50_under_load": silver_s}))
    if pass_s:
        figures[0].bound += (f" Measured: an apply pass with changes took {pass_s:.1f} s (median, {silver_s:.1f} s "
                             f"of it the silver MERGEs), so one round over {p.clients} clients on "
                             f"{p.apply_parallel} threads takes ~{pass_s * p.clients / p.apply_parallel:.0f} s.")
    return figures


def _overlap(start: float, end: float, a: float, b: float) -> float:
    """Share of [start, end] inside [a, b)."""
    if end <= start:
        return 1.0 if a <= end < b else 0.0
    return max(0.0, min(end, b) - max(start, a)) / (end - start)


QUICK_DAGSTER_REASON = ("skipped in --quick: the Dagster daemon's start and the onboarding of the clients alone "
                        "take minutes; `dw bench e2e` measures it")


def run_e2e_dagster(settings: Settings, quick: bool = False, params: E2EParams | None = None,
                    work_dir: Path | None = None) -> StageResult:
    """Freshness with Dagster driving landing and apply (sensors, daemon, run workers), through the lead's
    `dw demo` runner on this stack: same clients, rate, duration and probe table as the continuous mode."""
    name = "freshness commit → silver p50, Dagster sensors + daemon"
    try:
        from dw_assets.demo.runner import DemoOptions, DemoRunner  # noqa: F401 - availability check
    except ImportError as e:
        reason = f"no usable demo runner (dw_assets.demo.runner: {e})"
        return StageResult("e2e", [Figure.not_measured("e2e", name, "s", reason, kind="latency")],
                           notes=[f"dagster mode: not measured: {reason}."], params={"mode": "dagster"})
    if quick:
        return StageResult("e2e", [Figure.not_measured("e2e", name, "s", QUICK_DAGSTER_REASON, kind="latency")],
                           params={"mode": "dagster"})
    p = params or E2EParams.for_run(False)
    work = Path(work_dir or settings.home / "bench-e2e-dagster")
    work.mkdir(parents=True, exist_ok=True)
    return _dagster(settings, p, work)


def _dagster(settings: Settings, p: E2EParams, work: Path) -> StageResult:
    import dataclasses

    from rich.console import Console

    from dw_assets.demo.runner import DemoOptions, DemoRunner

    marker_interval = 2.0
    # service=False: the sensor-only mode (`dw demo --sensors`), measured beside the ingest service.
    wanted = dict(clients=p.clients, duration=p.duration_s, ui=False, rate=p.rate, rows_per_client=p.rows_per_client,
                  service=False,
                  # Markers still unseen after this are counted as unseen (extra), keeping the run inside the budget.
                  marker_interval=marker_interval, catch_up_timeout=min(p.catch_up_timeout_s, 180),
                  mariadb_port=settings.mariadb.port, kafka_port=int(settings.kafka.bootstrap.rsplit(":", 1)[1]))
    known = {f.name for f in dataclasses.fields(DemoOptions)}
    options = DemoOptions(**{k: v for k, v in wanted.items() if k in known})
    log_file = open(work / "demo.log", "w")
    rss: dict[str, float | None] = {}
    sampler = SessionSampler()

    class MeasuredDemo(DemoRunner):
        def _start_everything(self) -> None:
            sampler.start(lambda: dict(self.dagster.pids) if self.dagster else {})
            super()._start_everything()

        def stop_everything(self) -> None:
            # VmHWM of the long-running processes before they are stopped; run workers come from the sampler.
            rss["capture service"] = peak_rss_mb(self.capture_pid) if self.capture_pid else None
            for n, pid in (self.dagster.pids.items() if self.dagster else ()):
                rss[n] = peak_rss_mb(pid)
            sampler.stop()
            super().stop_everything()

    runner = MeasuredDemo(settings, options, console=Console(file=log_file, width=160))
    started = time.perf_counter()
    # The product refreshes reports at most every 10 minutes (a debounce); a 120 s run measures the machinery
    # behind that cadence with a refresh allowed every minute.
    refresh_cron = "* * * * *"
    old_cron = os.environ.get(REPORTS_CRON_VARIABLE)
    os.environ[REPORTS_CRON_VARIABLE] = refresh_cron
    try:
        summary = runner.run()
    finally:
        log_file.close()
        if old_cron is None:
            os.environ.pop(REPORTS_CRON_VARIABLE, None)
        else:
            os.environ[REPORTS_CRON_VARIABLE] = old_cron
    rss.update(sampler.peaks())
    result = StageResult("e2e", params={"mode": "dagster", **{k: v for k, v in wanted.items() if k in known}})
    result.processes = {f"dagster mode: {k}": v for k, v in rss.items()}
    markers = list(runner.probe.markers) if runner.probe else []
    if not markers:
        raise RuntimeError(f"the demo produced no freshness markers; see {work / 'demo.log'}")
    load_start = min(m.committed_at for m in markers)
    span = p.duration_s / p.windows
    windows = [(load_start + i * span, load_start + (i + 1) * span) for i in range(p.windows)]
    loaded = [m for m in markers if m.committed_at < load_start + p.duration_s]
    lat = [m.latency_s for m in loaded if m.latency_s is not None]
    for q in (50, 95, 99):
        runs = []
        for a, b in windows:
            v = percentile([m.latency_s for m in loaded if a <= m.committed_at < b and m.latency_s is not None], q)
            if v is not None:
                runs.append(round(v, 3))
        result.figures.append(Figure(
            "e2e", f"freshness commit → silver p{q}, Dagster sensors + daemon ({p.clients} clients, "
                   f"{p.rate:,.0f} changes/s, windows of {span:.0f} s)", "s", runs,
            None, [], higher_is_better=False, kind="latency",
            bound="A run drains while its clients have lag, so under load a change waits for the pass in progress "
                  "and then its own pass (land 10 clients, then ~3 s of Delta commits per client, 2 at a time); "
                  "the first batch also pays the sensor's age threshold, a tick and a run start." if q == 50
                  else "Same bounds as p50.",
            extra={"reference_key": f"silver_s_p{q}", "n": len(lat), "unseen": sum(1 for m in loaded
                                                                                    if m.latency_s is None),
                   "marker_interval_s": marker_interval, "peak_rss_mb": dict(rss)}))
    try:
        report_lat, censored = report_latencies(runner.settings.dagster_home, loaded)
    except Exception as e:  # noqa: BLE001 - the silver figures above stand on their own
        result.figures.append(Figure.not_measured("e2e", "freshness commit → report, Dagster automation", "s",
                                                  f"reading the instance failed: {type(e).__name__}: {e}",
                                                  kind="latency"))
        report_lat, censored = [], 0
    else:
        if not report_lat:
            result.figures.append(Figure.not_measured(
                "e2e", "freshness commit → report, Dagster automation", "s",
                f"no client report refresh started after a marker was in silver ({censored} markers)",
                kind="latency"))
    for q in (50, 95, 99) if report_lat else ():
        runs = []
        for a, b in windows:
            v = percentile([lat for at, lat in report_lat if a <= at < b], q)
            if v is not None:
                runs.append(round(v, 3))
        result.figures.append(Figure(
            "e2e", f"freshness commit → report p{q}, Dagster automation (refresh allowed every minute, windows of "
                   f"{span:.0f} s)", "s", runs, None, [], higher_is_better=False, kind="latency",
            bound="Silver freshness, then the next minute tick of the automation condition (30 s sensor), then one "
                  "automation-lane run at a time over all clients (each a process start plus 5 gold queries and "
                  "the HTML pages)" if q == 50 else "Same bounds as p50.",
            extra={"reference_key": f"report_s_p{q}", "n": len(report_lat), "censored": censored,
                   "refresh_cron": refresh_cron}))
    ok = getattr(summary, "ok", None)
    result.notes.append(
        f"dagster mode: `dw demo` runner (daemon, sensors, run workers; no webserver) for {p.duration_s:.0f} s at "
        f"{p.rate:,.0f} changes/s over {p.clients} clients, markers every {marker_interval:g} s per client "
        f"(the demo's probe: updated_at of one row, silver polled every 1 s); whole run "
        f"{time.perf_counter() - started:.0f} s; silver equals source at the end: {ok}. Reference = the "
        f"continuous mode's same percentile in this run.")
    return result


REPORTS_CRON_VARIABLE = "DW_REPORTS_REFRESH_CRON"
CLIENT_REPORTS_KEY = ("reports", "client_reports")


def report_latencies(dagster_home: str, markers: list) -> tuple[list[tuple[float, float]], int]:
    """Commit → report updated, from the Dagster instance after the run: a marker is in a client's reports once a
    client_reports materialization comes from a run that started after the marker was visible in silver (its
    gold queries read silver after that). Returns (commit time, latency) per covered marker and the number of
    markers no refresh covered before the daemon stopped (censored, not counted as latencies)."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        records: list = []
        cursor = None
        while True:  # Dagster serves at most 10,000 records per call
            page = instance.fetch_materializations(dg.AssetKey(list(CLIENT_REPORTS_KEY)), limit=10_000,
                                                   cursor=cursor)
            records += page.records
            if not page.has_more:
                break
            cursor = page.cursor
        starts: dict[str, float | None] = {}
        by_client: dict[str, list[tuple[float, float]]] = {}
        for r in records:
            if r.run_id not in starts:
                run = instance.get_run_record_by_id(r.run_id)
                starts[r.run_id] = run.start_time if run else None
            start = starts[r.run_id]
            if r.partition_key and start is not None:
                by_client.setdefault(r.partition_key, []).append((start, r.timestamp))
    finally:
        instance.dispose()
    latencies: list[tuple[float, float]] = []
    censored = 0
    for m in markers:
        if m.seen_at is None:
            continue
        done = [at for start, at in by_client.get(m.client, []) if start >= m.seen_at]
        if done:
            latencies.append((m.committed_at, min(done) - m.committed_at))
        else:
            censored += 1
    return latencies, censored


class SessionSampler:
    """Samples VmHWM of the processes in the sessions of the given PIDs (the daemon's code server and run
    workers live in its session) every 0.5 s; short-lived run workers are caught while they run."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self._peak: dict[str, float] = {}
        self._runs: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, roots) -> None:
        self._roots = roots
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from dw_assets.demo.dagster_processes import session_members

        while not self._stop.wait(self.interval):
            for root in list(self._roots().values()):
                for pid in session_members(root):
                    if pid == root:
                        continue
                    try:
                        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    except OSError:
                        continue
                    kind = self._kind([a.decode(errors="replace") for a in argv if a])
                    v = peak_rss_mb(pid)
                    if v is not None:
                        self._peak[kind] = max(self._peak.get(kind, 0.0), v)
                        if kind == "Dagster run worker":
                            self._runs.add(pid)

    @staticmethod
    def _kind(argv: list[str]) -> str:
        cmd = " ".join(argv)
        # The code server starts each run in a process of multiprocessing's spawn context.
        if "execute_run" in cmd or "execute_step" in cmd or "spawn_main" in cmd:
            return "Dagster run worker"
        if "resource_tracker" in cmd:
            return "Dagster helper"
        # Name the rest by the dagster sub-command (`code-server start`, `api grpc`, ...).
        words = [a for a in argv[1:] if not a.startswith("-")][:3]
        if "dagster" in words:
            words = words[words.index("dagster") + 1:]
        words = [w for w in words[:2] if "/" not in w and not w.lstrip("+").isdigit()]
        return "Dagster " + " ".join(words) if words else "Dagster helper"

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def peaks(self) -> dict[str, float | None]:
        out: dict[str, float | None] = dict(self._peak)
        if self._runs:
            out["Dagster run worker"] = self._peak.get("Dagster run worker")
            out["run workers seen"] = float(len(self._runs))
        return out


# ---- the workload process -----------------------------------------------------------------------------------------

def _workload_main(argv: list[str] | None = None) -> int:
    import argparse

    from dw_assets.settings import load_settings
    from dw_assets.workload import run_workload

    ap = argparse.ArgumentParser(prog="python -m dw_assets.bench.e2e")
    ap.add_argument("--home", required=True)
    ap.add_argument("--clients", required=True)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--duration", type=float, default=120)
    ap.add_argument("--connections", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    settings = load_settings(env={}, home=args.home)
    samples = open(args.out + ".jsonl", "w", buffering=1)
    samples.write(json.dumps({"t": time.time(), "rows": 0}) + "\n")

    def progress(s: Any) -> None:
        samples.write(json.dumps({"t": time.time(), "rows": s.row_changes}) + "\n")

    stats = run_workload(settings, args.clients.split(","), rate=args.rate, duration=args.duration,
                         connections=args.connections, progress=progress)
    samples.write(json.dumps({"t": time.time(), "rows": stats.row_changes}) + "\n")
    samples.close()
    Path(args.out).write_text(json.dumps(stats.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(_workload_main())
