"""`dw ingest run`: one long-running process that lands and applies every active client of the deployment.

Per client, a continuous landing writer on its own thread (the landing contract unchanged: exactly-once names,
offsets committed after upload, adoption after a crash; on this path a partition flushes at most
`max_age_seconds` = 1 s after its first message). Each uploaded file marks the client dirty; a pool of
`apply_workers` worker processes (two cores: two; `apply_workers.py` says why processes) applies each dirty
client's new files as one micro-batch through the conformance gate, so files landing during an apply form the next batch: batches grow when apply falls behind
(back-pressure lands in the landing store, never in memory). The registry is re-read every `registry_poll_s`:
activated clients start, paused or offboarded ones stop. A client that fails backs off (doubling up to
`max_backoff_s`) and alerts; the others go on. The per-client landing lock and apply lock keep this service and
any Dagster run off one client at the same time; the heartbeat tells the lag sensor which clients are served.

Crash safety comes from the stages: a file uploaded but not committed is adopted on restart (never landed
twice), and the apply manifest skips files already applied, so kill -9 and a restart lose and double nothing.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dw_assets.cdc.checkpoint import ServiceLock
from dw_assets.contracts import client_topic_prefix
from dw_assets.lakehouse.landing_files import LandingFile
from dw_assets.landing.client_lock import LandingBusy
from dw_assets.landing.flush import FlushPolicy
from dw_assets.landing.landing_file import LandedFile
from dw_assets.landing.writer import LandingHooks, land_client
from dw_assets.model import StandardModel, load_model
from dw_assets.settings import Settings

from .dagster_events import LANDING_KEY, RunlessEvents, apply_counts
from .heartbeat import Heartbeat, heartbeat_dir, write_heartbeat
from .apply_workers import apply_and_compact, apply_in_worker, apply_pool, rows_to_ipc
from .report_refresh import ReportRefresher, model_has_reports
from .shards import in_shard

log = logging.getLogger(__name__)

APPLY_CHECK = "ingest_apply"  # alert check names: the apply failing, and the conformance gate stopping a client
GATE_CHECK = "ingest_conformance_gate"


HANDOFF_BYTES = 64 * 1024 * 1024  # per client: rows kept in memory for the next batch (beyond: read back)
LISTING_S = 60.0
COMPACT_S = 60.0  # a client's tables are compacted after a batch at most this often


class ServiceBusy(RuntimeError):
    """Another ingest service on this host already serves this shard."""


@dataclass
class ServiceOptions:
    shard: tuple[int, int] = (0, 1)
    clients: Mapping[str, str] | None = None  # a fixed client -> production db map instead of the registry
    policy: FlushPolicy = field(default_factory=lambda: FlushPolicy(idle_seconds=0.5, max_age_seconds=1.0))
    apply_workers: int = 2
    apply_processes: bool = True  # False: apply on the service's own threads (one interpreter, slower)
    registry_poll_s: float = 2.0
    heartbeat_s: float = 1.0
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    gate_recheck_s: float = 10.0  # a client stopped by the conformance gate is checked again this often
    # A conforming client's schema is read again at most this often, not per micro-batch: the read cost 0.75 s
    # per batch (median) on busy cores. In between, the apply's own guards refuse a dropped or retyped column
    # for that table, so nothing diverges silently; the gate then stops the whole client at its next read.
    gate_ttl_s: float = 30.0
    dagster: bool = True  # report micro-batches to the Dagster instance (runless materializations)
    dagster_interval_s: float = 5.0  # SQLite instance: ~10 ms CPU per event; a flush after the last ends
    reports: bool = True
    reports_debounce_s: float | None = None  # default: settings.reports_debounce_seconds
    batch_log: Path | None = None  # JSON lines, one per micro-batch (the benchmark reads it)
    report_log: Path | None = None  # JSON lines, one per report build


@dataclass
class _Client:
    name: str
    database: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    dirty: bool = True  # start with an apply: files landed before a crash or by a run are picked up
    applying: bool = False
    retry_at: float = 0.0  # monotonic; no apply before (backoff, or the gate's recheck)
    failures: int = 0
    error: str | None = None
    gated: str | None = None
    alerting: set[str] = field(default_factory=set)  # check names with a firing alert
    batches: int = 0
    events: int = 0
    last_batch_at: float | None = None
    conformance: Any = None  # the last conforming gate result and when it was read (monotonic)
    conformance_at: float = 0.0
    # Files this service landed and not yet applied, with their rows while they fit in HANDOFF_BYTES: a batch
    # applies them without listing the store or reading them back. A full listing (also files landed by
    # others, e.g. a Dagster run during a takeover) at start, after a failure and every LISTING_S.
    landed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (LandingFile, pa.Table | None)
    landed_bytes: int = 0
    listed_at: float | None = None  # monotonic time of the last apply that listed the store
    compacted_at: float = 0.0  # monotonic time of the last compaction pass (apply_workers.apply_and_compact)


class IngestService:
    def __init__(self, settings: Settings, options: ServiceOptions | None = None,
                 model: StandardModel | None = None):
        self.settings = settings
        self.options = options or ServiceOptions()
        self.model = model or load_model(settings.model_path)
        i, n = self.options.shard
        self.heartbeat = Heartbeat(shard=f"{i}/{n}")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._leaving: list[_Client] = []
        # The threads schedule and book-keep; the apply itself runs in `_procs` (see apply_workers).
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.options.apply_workers),
                                        thread_name_prefix="ingest-apply")
        self._procs = None
        self._procs_lock = threading.Lock()
        self.events = RunlessEvents(settings, self.options.dagster_interval_s) if self.options.dagster else None
        self.reports: ReportRefresher | None = None
        self._logs: dict[str, Any] = {}

    # ---- public ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the service to stop (signal-safe): landing writers flush and commit, in-flight applies finish,
        then one last apply of what was landed, and the heartbeat says `stopped`."""
        self._stop.set()
        self._wake.set()

    def run(self) -> Heartbeat:
        lock = ServiceLock(heartbeat_dir(self.settings) / f"service.{self.heartbeat.shard.replace('/', '-of-')}")
        if not lock.acquire():
            raise ServiceBusy(f"an ingest service already serves shard {self.heartbeat.shard} here "
                              f"(pid {lock.holder_pid() or 'unknown'})")
        try:
            if self.options.reports and model_has_reports(self.model):
                debounce = self.options.reports_debounce_s
                self.reports = ReportRefresher(
                    self.settings, self.model,
                    self.settings.reports_debounce_seconds if debounce is None else debounce, self._report_built)
            events_thread = threading.Thread(target=self._events_loop, name="ingest-events", daemon=True)
            events_thread.start()
            threading.Thread(target=self._gate_loop, name="ingest-gate", daemon=True).start()
            self._main_loop()
            self._shutdown()
            events_thread.join(10)
        finally:
            self.heartbeat.state = "stopped"
            self._write_heartbeat()
            lock.release()
            for f in self._logs.values():
                f.close()
        return self.heartbeat

    # ---- main loop -------------------------------------------------------------------------------------
    def _main_loop(self) -> None:
        next_poll = next_beat = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                self._refresh_clients()
                next_poll = now + self.options.registry_poll_s
            self._schedule_applies()
            if now >= next_beat:
                self._write_heartbeat()
                next_beat = now + self.options.heartbeat_s
            self._wake.wait(0.1)
            self._wake.clear()

    def _wanted(self) -> dict[str, str] | None:
        if self.options.clients is not None:
            found = dict(self.options.clients)
        else:
            try:
                from dw_assets.onboarding.registry import list_clients

                found = {c.name: c.production_db for c in list_clients(self.settings, status="active")}
            except Exception as e:  # noqa: BLE001 - keep serving the current set while the registry is away
                log.warning("client registry not read (serving the current clients): %s", e)
                return None
        return {c: d for c, d in found.items() if in_shard(c, self.options.shard)}

    def _refresh_clients(self) -> None:
        wanted = self._wanted()
        if wanted is None:
            return
        with self._lock:
            for name in [c for c in self._clients if c not in wanted]:
                c = self._clients.pop(name)
                c.stop.set()  # paused or offboarded: its writer flushes, commits and lets go of the lock
                self._leaving.append(c)
                log.info("ingest: %s is no longer active: stopped", name)
            for name, database in wanted.items():
                if name not in self._clients:
                    c = _Client(name, database)
                    c.thread = threading.Thread(target=self._land_loop, args=(c,), name=f"ingest-land-{name}",
                                                daemon=True)
                    self._clients[name] = c
                    c.thread.start()
                    log.info("ingest: serving %s", name)
            self._leaving = [c for c in self._leaving if c.thread is not None and c.thread.is_alive()]

    # ---- landing ---------------------------------------------------------------------------------------
    def _land_loop(self, c: _Client) -> None:
        delay = self.options.backoff_s
        hooks = LandingHooks(after_upload=lambda f: self._landed(c, f),
                             uploaded_rows=lambda f, rows: self._handoff(c, f, rows))
        while not (c.stop.is_set() or self._stop.is_set()):
            try:
                land_client(self.settings, c.name, database=c.database, bounded=False, policy=self.options.policy,
                            stop=c.stop, hooks=hooks)
                delay = self.options.backoff_s
            except LandingBusy as e:
                # A Dagster run (taken over while our heartbeat was stale) or a CLI writer has it: wait it out.
                log.info("ingest: %s", e)
                c.stop.wait(1.0)
            except Exception as e:  # noqa: BLE001 - this client backs off and alerts; the others go on
                log.exception("ingest: landing %s failed; retrying in %.0f s", c.name, delay)
                self._fail(c, "landing", f"{type(e).__name__}: {e}")
                c.stop.wait(delay)
                delay = min(delay * 2, self.options.max_backoff_s)

    def _handoff(self, c: _Client, f: LandedFile, rows: Any) -> None:
        prefix = client_topic_prefix(self.settings.kafka.topic_prefix, c.database)
        table = f.topic[len(prefix):] if f.topic.startswith(prefix) else f.topic
        keep = c.landed_bytes + rows.nbytes <= HANDOFF_BYTES
        with self._lock:
            c.landed[f.key] = (LandingFile(f.key, f.topic, table, f.partition, f.start_offset), rows if keep else None)
            c.landed_bytes += rows.nbytes if keep else 0

    def _landed(self, c: _Client, f: LandedFile) -> None:
        c.dirty = True
        if self.events is not None:
            self.events.add(LANDING_KEY, c.name, {"files_written": 1, "records": f.records, "bytes": f.bytes},
                            {"last_file": f.key})
        self.heartbeat.files += 1
        self._wake.set()

    # ---- apply -----------------------------------------------------------------------------------------
    def _schedule_applies(self) -> None:
        now = time.monotonic()
        with self._lock:
            for c in self._clients.values():
                if c.dirty and not c.applying and now >= c.retry_at:
                    c.applying = True
                    c.dirty = False  # files landing from here on make the next batch
                    self._pool.submit(self._apply, c)

    def _apply(self, c: _Client) -> None:
        from dw_assets.lakehouse.apply_lock import ApplyBusy

        t0 = time.time()
        cached = c.conformance if time.monotonic() - c.conformance_at < self.options.gate_ttl_s else None
        try:
            out = self._apply_call(c, cached)
            if cached is None and out.conformance is not None and out.conformance.conforming:
                c.conformance, c.conformance_at = out.conformance, time.monotonic()
            gate_s = 0.0 if cached is not None else time.time() - t0 - (out.apply.seconds if out.apply else 0.0)
        except ApplyBusy as e:
            log.info("ingest: %s", e)
            c.dirty, c.retry_at = True, time.monotonic() + 1.0
            return
        except Exception as e:  # noqa: BLE001 - see _fail
            log.exception("ingest: apply %s failed", c.name)
            self._fail(c, APPLY_CHECK, f"{type(e).__name__}: {e}")
            c.dirty, c.conformance = True, None
            return
        finally:
            c.applying = False
            self._wake.set()
        t1 = time.time()
        self._record_gate(c, out)
        if out.gated:
            c.dirty, c.retry_at = True, time.monotonic() + self.options.gate_recheck_s
            return
        r = out.apply
        self._log("batch", {"client": c.name, "start": t0, "end": t1, "events": r.events, "files": r.files,
                            "batch": r.new_batch, "failed": r.failed, "gate_s": round(gate_s, 3),
                            "cpu_s": round(r.cpu_s, 3),
                            "phases": {k: round(v, 3) for k, v in r.timings.items()}})
        if r.files or r.events:
            c.batches += 1
            c.events += r.events
            c.last_batch_at = t1
            self.heartbeat.batches += 1
            self.heartbeat.events += r.events
            self.heartbeat.last_batch_at = t1
            if self.events is not None:
                for key, counts in apply_counts(r).items():
                    self.events.add(key, c.name, counts, {"batch": r.new_batch or r.batch})
            if self.reports is not None and any(t.events or t.truncated_rows for t in r.tables.values()):
                self.reports.touch(c.name)
        if out.error:
            self._fail(c, APPLY_CHECK, out.error)
            c.dirty = True  # the failed tables catch up from bronze on the next batch
            c.conformance = None  # a table refused (e.g. a dropped column): read the schema again next time
        else:
            self._recover(c, APPLY_CHECK)

    def _apply_call(self, c: _Client, cached: Any) -> Any:
        with self._lock:
            taken = dict(c.landed)
        full = c.listed_at is None or time.monotonic() - c.listed_at >= LISTING_S
        files = None if full else [f for f, _ in taken.values()]
        rows = {k: t for k, (_, t) in taken.items() if t is not None}
        if full:
            c.listed_at = time.monotonic()
        compact = time.monotonic() - c.compacted_at >= COMPACT_S
        if compact:
            c.compacted_at = time.monotonic()
        try:
            out = self._apply_batch(c, cached, files, rows, compact)
        except BaseException:
            c.listed_at = None
            raise
        if out.error or out.gated:
            c.listed_at = None  # list the store next time: nothing this batch missed stays behind
        else:
            with self._lock:
                for k in taken:
                    _, t = c.landed.pop(k, (None, None))
                    c.landed_bytes -= t.nbytes if t is not None else 0
        return out

    def _apply_batch(self, c: _Client, cached: Any, files: Any, rows: Any, compact: bool) -> Any:
        if not self.options.apply_processes:
            return apply_and_compact(self.settings, c.name, c.database, self.model, cached, files, rows, compact)
        with self._procs_lock:
            if self._procs is None:
                self._procs = apply_pool(self.options.apply_workers, self.model)
            procs = self._procs
        try:
            return procs.submit(apply_in_worker, self.settings, c.name, c.database, cached, files,
                                rows_to_ipc(rows), compact).result()
        except BrokenProcessPool:
            # A worker died (killed, out of memory): a new pool for the next batch; this one failed.
            with self._procs_lock:
                if self._procs is procs:
                    self._procs = None
            procs.shutdown(wait=False, cancel_futures=True)
            raise

    def _gate_loop(self) -> None:
        """Read each conforming client's production schema again before its gate result expires, here rather
        than inside a micro-batch: the read took 0.4-0.9 s of every other batch under load. A client found
        breaking loses its result and gets a batch at once, which reads the schema itself and stops (and alerts)
        there: a breaking DDL shows within the TTL even on a client without new changes."""
        from dw_assets.checks.conformance import production_conformance

        ahead = 0.8 * self.options.gate_ttl_s
        while not self._stop.wait(1.0):
            with self._lock:
                due = [c for c in self._clients.values()
                       if c.conformance is not None and time.monotonic() - c.conformance_at >= ahead]
            for c in due:
                if self._stop.is_set():
                    return
                try:
                    conf = production_conformance(self.settings, c.name, self.model)
                except Exception as e:  # noqa: BLE001 - the batch reads it itself once the result expires
                    log.warning("ingest: conformance of %s not read ahead: %s", c.name, e)
                    continue
                if conf.conforming:
                    c.conformance, c.conformance_at = conf, time.monotonic()
                else:  # a batch now, even without new changes: it reads the schema, stops the client, alerts
                    c.conformance, c.dirty = None, True
                    self._wake.set()

    def _record_gate(self, c: _Client, out: Any) -> None:
        conf = out.conformance
        if conf is None:
            return
        if self.events is not None:
            from dw_assets.checks.schema_diff import differences_markdown

            self.events.check(c.name, conf.conforming, len(conf.breaking), differences_markdown(conf.breaking))
        if out.gated:
            if c.gated is None:
                log.error("ingest: %s stopped by the conformance gate: %s", c.name, out.error)
                self._alert(c, GATE_CHECK, out.error or "", conf.breaking)
            c.gated = out.error
        elif c.gated is not None:
            log.info("ingest: %s conforms again: applying", c.name)
            c.gated = None
            self._alert(c, GATE_CHECK, None)

    def _fail(self, c: _Client, check: str, error: str) -> None:
        c.failures += 1
        c.error = error
        self.heartbeat.failures += 1
        wait = min(self.options.backoff_s * 2 ** (c.failures - 1), self.options.max_backoff_s)
        c.retry_at = time.monotonic() + wait
        log.error("ingest: %s failed (%d in a row), next try in %.0f s: %s", c.name, c.failures, wait, error)
        if check not in c.alerting:
            self._alert(c, check, error)

    def _recover(self, c: _Client, check: str) -> None:
        c.failures, c.error = 0, None
        if check in c.alerting:
            self._alert(c, check, None)

    def _alert(self, c: _Client, check: str, error: str | None, diffs: list | None = None) -> None:
        """Fire (error) or resolve (None) the client's alert for `check`, through the checks' alert store."""
        from dw_assets.checks.alerts import Finding, findings_from_differences, process_findings

        if error is None:
            c.alerting.discard(check)
            findings = []
        else:
            c.alerting.add(check)
            findings = findings_from_differences(diffs, "ERROR") if diffs else \
                [Finding(f"{check}:{c.name}", "ERROR", f"ingest service: {error[:300]}")]
        process_findings(self.settings, c.name, check, findings)

    # ---- reporting -------------------------------------------------------------------------------------
    def _report_built(self, scope: str, results: list, pages: list, started: float, ended: float) -> None:
        self.heartbeat.reports_built += 1
        self._log("report", {"client": scope, "start": started, "end": ended, "pages": len(pages)})
        if self.events is not None:
            if scope == "portfolio":
                return  # the portfolio's assets are not partitioned by client
            for r in results:
                self.events.add(("gold", r.name), scope, {"builds": 1}, {"dagster/row_count": r.rows})
            self.events.add(("reports", "client_reports"), scope, {"builds": 1}, {"pages": len(pages)})

    def _events_loop(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(0.5)
            if self.events is not None and self.events.due():
                self.events.flush()

    def _log(self, kind: str, record: dict[str, Any]) -> None:
        path = self.options.batch_log if kind == "batch" else self.options.report_log
        if path is None:
            return
        with self._lock:
            f = self._logs.get(kind)
            if f is None:
                f = self._logs[kind] = open(path, "a", buffering=1)
            f.write(json.dumps(record) + "\n")

    def _write_heartbeat(self) -> None:
        hb = self.heartbeat
        with self._lock:
            clients = list(self._clients.values())
            # A client let go is still ours until its writer has flushed and released the landing lock.
            leaving = [c.name for c in self._leaving if c.thread is not None and c.thread.is_alive()]
        hb.clients = sorted({c.name for c in clients} | set(leaving))
        hb.stopped = {c.name: (c.gated or c.error or "") for c in clients if c.gated or c.error}
        try:
            write_heartbeat(self.settings, hb)
        except OSError as e:
            log.warning("heartbeat not written: %s", e)

    # ---- stop ------------------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        self.heartbeat.state = "stopping"
        self._write_heartbeat()
        with self._lock:
            clients = list(self._clients.values()) + self._leaving
        for c in clients:
            c.stop.set()
        for c in clients:
            if c.thread is not None:
                c.thread.join(60)  # the writer flushes what it buffered and commits it
        self._pool.shutdown(wait=True)
        # One last batch of what was landed since the last apply, so a clean stop leaves silver current.
        for c in clients:
            if c.dirty and not c.gated and c.name in self._clients:
                self._apply(c)
        if self._procs is not None:
            self._procs.shutdown(wait=True)
        if self.reports is not None:
            self.reports.close()
        if self.events is not None:
            self.events.flush()
            self.events.close()
