"""`dw demo`: the whole flow on the local stack, driven by Dagster's daemon the way production runs it.

stack up -> seed (new clients only) -> capture service -> ingest service (unless --sensors) -> onboard -> Dagster
daemon (+ webserver) -> workload and
freshness probe -> (with a duration) catch up, rebuild reports, summary, exit code = silver equals source.
Everything the demo starts (capture service, Dagster processes, workload and probe threads) it stops again, on
Ctrl-C and SIGTERM too; the stack stays up for the next command (`dw stack down` stops it).
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console

from dw_assets.model import StandardModel
from dw_assets.settings import Settings, load_settings
from dw_assets.stack import Stack, StackConfig
from dw_assets.stack.process import ServiceError, pid_alive, spawn, stop_pid, tail

from .dagster_processes import DagsterProcesses, prepare_instance
from .freshness import FreshnessProbe, FreshnessStats
from .live_reports import LiveReportsServer
from .summary import DemoSummary, collect_summary, render

DEFAULT_CLIENTS = 3
DEFAULT_RATE = 500.0  # row changes/s over all clients: leaves the 2 cores room for capture, landing and Dagster
DEFAULT_ROWS_PER_CLIENT = 2_000
DEFAULT_LAG_SECONDS = 10.0  # landing sensor's age threshold for the demo (production default: 30 s)
DEFAULT_CATCH_UP_TIMEOUT = 300.0
WORKLOAD_CHUNK_S = 5.0  # the workload runs in chunks so that a stop takes effect within this time


class DemoError(RuntimeError):
    """A step of the demo that could not be done; the message says which and where its log is."""


@dataclass
class DemoOptions:
    clients: int = DEFAULT_CLIENTS
    duration: float | None = None  # None: until Ctrl-C / SIGTERM
    ui: bool = True
    ui_port: int = 3000
    rate: float = DEFAULT_RATE
    rows_per_client: int = DEFAULT_ROWS_PER_CLIENT
    lag_seconds: float | None = DEFAULT_LAG_SECONDS  # None: leave the sensor's threshold alone
    landing_shards: int | None = 1  # few clients: one landing run for all of them (production default: 16)
    catch_up_timeout: float = DEFAULT_CATCH_UP_TIMEOUT
    marker_interval: float = 5.0
    mariadb_port: int | None = None
    kafka_port: int | None = None
    # True: `dw ingest run` lands and applies every client continuously (the lag sensor leaves them alone while
    # its heartbeat is fresh); False (`--sensors`): the Kafka-lag sensor's runs do it, as before the service.
    service: bool = True


class WorkloadThread:
    """`run_workload` in chunks until the duration is reached or `stop()` is called; counts changes per client."""

    def __init__(self, settings: Settings, clients: list[str], rate: float, duration: float | None,
                 model: StandardModel):
        self.settings, self.clients, self.rate, self.duration, self.model = settings, clients, rate, duration, model
        self.per_client: dict[str, int] = {c: 0 for c in clients}
        self.error: BaseException | None = None
        self.started_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-workload", daemon=True)

    @property
    def changes(self) -> int:
        return sum(self.per_client.values())

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WORKLOAD_CHUNK_S + 10)

    def done(self) -> bool:
        return not self._thread.is_alive()

    def _run(self) -> None:
        from dw_assets.workload import run_workload

        chunk_no = 0
        try:
            while not self._stop.is_set():
                left = None if self.duration is None else self.duration - (time.monotonic() - self.started_at)
                if left is not None and left <= 0.05:
                    return
                chunk = WORKLOAD_CHUNK_S if left is None else min(WORKLOAD_CHUNK_S, left)
                stats = run_workload(self.settings, self.clients, rate=self.rate, duration=chunk, seed=chunk_no,
                                     model=self.model)
                chunk_no += 1
                for c, n in stats.per_client.items():
                    self.per_client[c] = self.per_client.get(c, 0) + n
        except BaseException as e:  # noqa: BLE001 - reported by the runner
            self.error = e


@dataclass
class DemoRunner:
    settings: Settings
    options: DemoOptions
    console: Console = field(default_factory=Console)
    model: StandardModel | None = None
    # filled while running
    clients: dict[str, str] = field(default_factory=dict)
    capture_pid: int | None = None
    ingest_pid: int | None = None
    dagster: DagsterProcesses | None = None
    workload: WorkloadThread | None = None
    probe: FreshnessProbe | None = None
    live_reports: LiveReportsServer | None = None
    stack_started: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    # ---- paths --------------------------------------------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        return self.settings.home / "demo" / "logs"

    def say(self, msg: str) -> None:
        self.console.print(f"[cyan]•[/] {msg}", highlight=False)

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> DemoSummary | None:
        """Run the demo; returns the summary (duration mode) or None (stopped by a signal)."""
        started = time.monotonic()
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading.current_thread() is threading.main_thread() else {}
        try:
            try:
                self._start_everything()
            except ServiceError as e:  # a busy port, a server that did not come up: one clear line
                raise DemoError(str(e)) from None
            if self._stop.is_set():
                return None
            self._print_open_hints()
            if self.options.duration is None:
                self._run_until_stopped()
                return None
            return self._run_for_duration(started)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            self.stop_everything()

    def _start_everything(self) -> None:
        o = self.options
        self.say(f"stack in {self.settings.home}")
        cfg = StackConfig.from_env(self.settings.home, mariadb_port=o.mariadb_port, kafka_port=o.kafka_port)
        Stack(cfg, progress=self.say).up()
        # Passwords and ports come from the state file `up` (re)wrote.
        self.settings = load_settings(home=self.settings.home).with_overrides(
            model_path=self.settings.model_path, reports_sql_dir=self.settings.reports_sql_dir)
        self.model = self.model or self.settings.standard_model()

        # Read by the landing sensor through the settings at each tick; a value set in the environment wins.
        env_extra = {}
        if o.lag_seconds is not None:
            env_extra["DW_LANDING_LAG_SECONDS"] = f"{o.lag_seconds:g}"
        if o.landing_shards is not None:
            env_extra["DW_LANDING_SHARDS"] = str(o.landing_shards)
        self.dagster = DagsterProcesses(self.settings, self.log_dir, env_extra={
            k: v for k, v in env_extra.items() if k not in _environ()})
        # The daemon loads the code location in ~20-30 s: start it first, it comes up while we seed and onboard.
        prepare_instance(self.settings)
        self.say(f"starting dagster-daemon (DAGSTER_HOME={self.settings.dagster_home}, "
                 f"log {self.dagster.log('dagster-daemon')})")
        self.dagster.start_daemon()
        if o.ui:
            self.say(f"starting dagster-webserver on http://127.0.0.1:{o.ui_port}")
            self.dagster.start_webserver(o.ui_port)

        self._seed()
        self._check_stop()
        self._start_capture()
        self._check_stop()
        if o.service:
            self._start_ingest()  # serves each client from the moment onboarding activates it
        self._onboard()
        self._check_stop()
        self.say("waiting for the Dagster daemon (sensors) to come up")
        self._wait(lambda: self.dagster.wait_daemon(timeout=240))
        if o.ui:
            self._wait(lambda: self.dagster.wait_webserver(timeout=240))
            self.live_reports = LiveReportsServer.start(self.settings, self.log_dir, self.say)  # beside the UI
        self._check_stop()

        self.workload = WorkloadThread(self.settings, list(self.clients), o.rate, o.duration, self.model)
        self.probe = FreshnessProbe(self.settings, self.clients, self.model, interval=o.marker_interval)
        self.say(f"workload: {o.rate:,.0f} row changes/s over {len(self.clients)} clients"
                 + (f" for {o.duration:g}s" if o.duration else " until stopped")
                 + f"; freshness markers every {o.marker_interval:g}s per client in {self.probe.target}")
        self.workload.start()
        self.probe.start()

    def _wait(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except ServiceError as e:
            raise DemoError(str(e)) from None

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt

    def _seed(self) -> None:
        from dw_assets.onboarding.registry import RegistryError, get_client
        from dw_assets.workload import client_names, seed_clients

        names = client_names(self.options.clients)
        new = []
        for name in names:
            try:
                row = get_client(self.settings, name)
                self.clients[name] = row.production_db
            except RegistryError:
                new.append(name)
        if len(new) < len(names):
            self.say(f"reusing existing clients: {', '.join(n for n in names if n not in new)}")
        if new:
            self.say(f"seeding {', '.join(new)} ({self.options.rows_per_client:,} rows each)")
            for c in seed_clients(self.settings, new, self.options.rows_per_client, model=self.model):
                self.clients[c.name] = c.production_db
        self.clients = {n: self.clients[n] for n in names}

    def _start_capture(self) -> None:
        log = self.log_dir / "cdc.log"
        cmd = [sys.executable, "-m", "dw_assets.cdc", "--home", str(self.settings.home), "cdc", "run",
               "--no-progress"]
        self.capture_pid = spawn(cmd, log, cwd=Path(__file__).resolve().parents[2]).pid
        self.say(f"capture service started (pid {self.capture_pid}, log {log})")
        time.sleep(1.0)
        if not pid_alive(self.capture_pid):
            raise DemoError(f"the capture service exited at start; log {log}:\n{tail(log)}")

    def _start_ingest(self) -> None:
        log = self.log_dir / "ingest.log"
        cmd = [sys.executable, "-m", "dw_assets.cli", "--home", str(self.settings.home), "ingest", "run"]
        self.ingest_pid = spawn(cmd, log, cwd=Path(__file__).resolve().parents[2]).pid
        self.say(f"ingest service started (pid {self.ingest_pid}, log {log}); `dw ingest status` shows it")

    def _onboard(self) -> None:
        from dw_assets.onboarding.batch import ClientSpec, onboard_many
        from dw_assets.onboarding.progress import ConsoleObserver

        self.say(f"onboarding {', '.join(self.clients)} (snapshot, land, apply, reports, active)")
        result = onboard_many(self.settings, [ClientSpec(c, d) for c, d in self.clients.items()],
                              parallel=min(3, len(self.clients)), run_by="dw demo",
                              observer=ConsoleObserver(self.console, prefix_client=True))
        if result.failed:
            raise DemoError("onboarding failed: " + "; ".join(f"{e.spec.client}: {e.error}" for e in result.failed))

    def _print_open_hints(self) -> None:
        c = self.console
        c.rule("dw demo is running")
        if self.dagster and self.dagster.ui_url:
            url = self.dagster.ui_url
            c.print(f"Dagster UI:      [bold]{url}[/] (asset graph: {url}/asset-groups)")
        c.print(f"reports:         {self.settings.reports_dir}/index.html" if self.model and self.model.reports_dir
                else "reports:         none (the model has no reports)")
        if self.live_reports:
            c.print(self.live_reports.hint())
        c.print(f"lake / landing:  {self.settings.lake_url} / {self.settings.landing_url}")
        c.print(f"logs:            {self.log_dir}/ (cdc.log, {'ingest.log, ' if self.ingest_pid else ''}"
                f"dagster-daemon.log, dagster-webserver.log)")
        c.print("ingest:          " + ("the ingest service (`dw ingest run`) lands and applies continuously"
                                       if self.ingest_pid else "the Kafka-lag sensor starts ingest runs (--sensors)"))
        how = f"after {self.options.duration:g}s of workload, or " if self.options.duration else ""
        c.print(f"stop:            {how}Ctrl-C (stops the capture service, workload and Dagster; "
                f"the stack keeps running: `dw stack down`)")
        c.rule()

    # ---- running ------------------------------------------------------------------------------------------
    def _progress_line(self, prefix: str) -> tuple[int, float]:
        from dw_assets.landing.lag import measure_lag

        lags = measure_lag(self.settings, self.clients)
        parts = []
        for client, lag in lags.items():
            age = lag.oldest_unlanded_age_s
            parts.append(f"{client} {lag.lag:,}" + (f" ({age:.0f}s)" if age else ""))
        total = sum(lag.lag for lag in lags.values())
        oldest = max((lag.oldest_unlanded_age_s or 0.0 for lag in lags.values()), default=0.0)
        fresh = self.probe.stats() if self.probe else FreshnessStats()
        changes = self.workload.changes if self.workload else 0
        self.console.print(f"{prefix} changes {changes:,} | landing lag {' | '.join(parts)} | "
                           f"freshness {fresh.describe()}", highlight=False)
        return total, oldest

    def _health(self) -> None:
        if self.capture_pid and not pid_alive(self.capture_pid):
            raise DemoError(f"the capture service stopped; log {self.log_dir / 'cdc.log'}:\n"
                            f"{tail(self.log_dir / 'cdc.log')}")
        if self.ingest_pid and not pid_alive(self.ingest_pid):
            raise DemoError(f"the ingest service stopped; log {self.log_dir / 'ingest.log'}:\n"
                            f"{tail(self.log_dir / 'ingest.log')}")
        if self.dagster:
            dead = [n for n, alive in self.dagster.alive().items() if not alive]
            if dead:
                raise DemoError(f"{', '.join(dead)} stopped; see {self.log_dir}")
        if self.workload and self.workload.error:
            raise DemoError(f"workload failed: {self.workload.error}")

    def _run_until_stopped(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(10.0):
            self._health()
            self._progress_line(f"[{time.monotonic() - t0:5.0f}s]")
        self.console.print("stopping (signal received)")
        if self.probe:
            self.console.print(f"freshness so far: {self.probe.stats().describe()}")

    def _run_for_duration(self, started: float) -> DemoSummary:
        assert self.workload and self.probe and self.model
        t0 = time.monotonic()
        while not self.workload.done():
            if self._stop.wait(10.0):
                raise KeyboardInterrupt
            self._health()
            self._progress_line(f"[{time.monotonic() - t0:5.0f}s workload]")
        self._health()
        self.say(f"workload done: {self.workload.changes:,} row changes; waiting for the pipeline to catch up "
                 f"(at most {self.options.catch_up_timeout:g}s)")
        caught_up = self._catch_up()
        notes = [] if caught_up else [f"not caught up within {self.options.catch_up_timeout:g}s"]
        self.probe.stop()
        report_pages, portfolio_pages, index = self._build_reports(notes)
        summary = collect_summary(
            self.settings, self.clients, self.model,
            freshness_by_client={c: self.probe.stats(c) for c in self.clients}, freshness=self.probe.stats(),
            workload_changes=dict(self.workload.per_client), seconds=time.monotonic() - started,
            report_pages=report_pages, portfolio_pages=portfolio_pages, reports_index=index, notes=notes)
        if self.probe.errors:
            summary.notes.append(f"freshness probe errors: {'; '.join(self.probe.errors[:3])}")
        render(summary, self.console)
        return summary

    def _catch_up(self) -> bool:
        """Final markers seen in silver and no landing lag left, or the timeout; progress every 10 s."""
        from dw_assets.checks.silver_equality import compare_silver_with_source

        assert self.probe and self.model
        deadline = time.monotonic() + self.options.catch_up_timeout
        self.probe.stop_markers()  # the markers committed after the workload stopped are the last ones
        self.probe.commit_final_markers()
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            if self._stop.wait(10.0):
                raise KeyboardInterrupt
            self._health()
            lag, _ = self._progress_line(f"[{time.monotonic() - t0:5.0f}s catch-up]")
            if lag == 0 and self.probe.pending() == 0:
                # Lag 0 covers every table's topics; equality confirms the apply of the last landing run.
                if all(t.equal for c, d in self.clients.items()
                       for t in compare_silver_with_source(self.settings, c, self.model, d)):
                    self.say(f"caught up in {time.monotonic() - t0:.0f}s")
                    return True
        return False

    def _build_reports(self, notes: list[str]) -> tuple[dict[str, list[str]], list[str], str | None]:
        """Rebuild every client's and the portfolio reports from the final silver. The gold/report assets refresh
        through their automation conditions at most every 10 minutes, so a short demo builds them itself."""
        from dw_assets.reports.build import build_reports, no_reports_reason

        why = no_reports_reason(self.model)
        if why:
            notes.append(f"reports skipped: {why}")
            return {}, [], None
        try:
            built = build_reports(self.settings, list(self.clients), model=self.model)
        except Exception as e:  # noqa: BLE001 - reports are part of the summary, not of the exit code
            notes.append(f"reports not built: {type(e).__name__}: {e}")
            return {}, [], None
        by_scope: dict[str, list[str]] = {}
        for p in built.pages:
            by_scope.setdefault(Path(p).parent.name, []).append(str(p))
        portfolio = [p for scope, ps in by_scope.items() if scope not in self.clients for p in ps]
        return by_scope, portfolio, str(built.index) if built.index else None

    # ---- stopping -----------------------------------------------------------------------------------------
    def stop_everything(self) -> None:
        """Stop what this demo started, in dependency order; the stack stays up."""
        stopped = []
        if self.workload:
            self.workload.stop()
            stopped.append("workload")
        if self.probe:
            self.probe.stop()
        if self.ingest_pid and stop_pid(self.ingest_pid, timeout=60.0):
            stopped.append(f"ingest service (pid {self.ingest_pid})")
        if self.capture_pid and stop_pid(self.capture_pid, timeout=30.0):
            stopped.append(f"capture service (pid {self.capture_pid})")
        if self.dagster:
            stopped += [f"{n} (pid {self.dagster.pids[n]})" for n in self.dagster.stop()]
        stopped += self.live_reports.stop() if self.live_reports else []
        if stopped:
            self.say(f"stopped: {', '.join(stopped)}")
        self.say(f"the stack is still running: `dw --home {self.settings.home} stack down` stops it")


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
