"""Fault injection for the fault suite: the pipeline's long-running commands as processes of their own under a
workload, one fault (SIGKILL of a process, a server restart, SIGSTOP of a server for a while), the documented
recovery, then the two outcomes a user cares about: every silver table equals its source, bronze holds each
change once.

The processes run the product's own commands: `python -m dw_assets.cdc cdc run` (what `dw cdc run` runs,
without importing the CLI's other stages: `dw` imports Dagster, ~10 s per start on two busy cores), the same
for `landing run` through `python -m dw_assets_tests.fault_processes`, and a continuous apply loop over
`apply_client` (the bench's loop, with a model per client). Every process is ended by its PID.
"""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import pymysql

from dw_assets.bench.harness import Child
from dw_assets.checks.silver_equality import TableEquality, compare_silver_with_source
from dw_assets.model import StandardModel, load_model
from dw_assets.settings import STATE_FILE, Settings, load_settings
from dw_assets.stack import Stack
from dw_assets.stack.broker import TansuBroker
from dw_assets.stack.process import ServiceError, pid_alive, port_in_use, wait_until
from dw_assets.stack.s3 import LOCAL_KEY, ensure_bucket
from dw_assets.stack.stack import BROKER_BUCKET

log = logging.getLogger("dw_assets_tests.fault_harness")
REPO_ROOT = Path(__file__).resolve().parents[1]

# A model of the suite's own (the product must work for any model): a parent with SCD2 and a child with a
# composite key that the workload deletes from, DECIMAL with scale 4, DATETIME(6)/TIMESTAMP(6), a mixed-case name.
FAULT_MODEL = """
version: "faults-1"
tables:
  - name: ledgers
    options: {change_data_feed: true, scd2: true}
    workload: {insert_weight: 1, update_weight: 2}
    columns:
      - {name: ledger_id, type: BIGINT, primary_key: true, auto_increment: true}
      - {name: Title, type: VARCHAR(80), nullable: false, generate: company}
      - {name: balance, type: "DECIMAL(16,4)", nullable: false, generate: {kind: money, min: 0, max: 90000}, role: money}
      - {name: state, type: "ENUM('open','frozen','closed')", nullable: false, generate: status, role: status}
      - {name: opened_at, type: DATETIME(6), nullable: false, generate: created_at, role: created_at}
      - {name: touched_at, type: TIMESTAMP(6), nullable: false, generate: updated_at, role: updated_at}
  - name: postings
    options: {change_data_feed: true, scd2: false}
    workload: {rows_per_parent: [1, 4], update_weight: 1, delete_weight: 1}
    columns:
      - {name: ledger_id, type: BIGINT, primary_key: true, references: ledgers.ledger_id}
      - {name: line_no, type: SMALLINT UNSIGNED, primary_key: true, generate: line_number}
      - {name: amount, type: "DECIMAL(12,2)", nullable: false, generate: {kind: money, min: 1, max: 900}, role: money}
      - {name: memo, type: TEXT, nullable: true, generate: text, role: mutable}
"""


def write_fault_model(directory: Path) -> Path:
    path = directory / "fault_model.yaml"
    path.write_text(FAULT_MODEL)
    return path


# ---- the stack's servers ------------------------------------------------------------------------------------
@dataclass
class StackControl:
    """Faults of the stack's servers, by the PIDs in its state file (only servers this suite started), and a
    second broker with S3 storage on the stack's S3 endpoint (the other storage mode, without a second stack)."""

    stack: Stack
    s3_broker: TansuBroker | None = None
    s3_broker_pid: int | None = None

    def pid(self, service: str) -> int:
        pid = self.s3_broker_pid if service == "kafka-s3" else self.stack.read_state().get(service, {}).get("pid")
        if not pid_alive(pid):
            raise RuntimeError(f"the stack's {service} is not running (pid {pid})")
        return int(pid)

    def _set_pid(self, service: str, pid: int) -> None:
        if service == "kafka-s3":
            self.s3_broker_pid = pid
            return
        state = self.stack.read_state()
        state[service]["pid"] = pid
        self.stack.write_state(state)

    def start_s3_broker(self, port: int) -> TansuBroker:
        state = self.stack.read_state()
        _ensure_bucket(state, BROKER_BUCKET)
        broker = replace(self.stack._broker({**state, "kafka": {"port": port, "storage": "s3"}}),
                         base=self.stack.home / "kafka-s3")
        self.s3_broker, self.s3_broker_pid = broker, broker.start()
        return broker

    def stop_s3_broker(self) -> None:
        if self.s3_broker is not None:
            self.s3_broker.stop(self.s3_broker_pid)

    def pause(self, service: str, seconds: float) -> None:
        """The server unreachable for `seconds`: SIGSTOP, then SIGCONT (connections hang, nothing is lost)."""
        pid = self.pid(service)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def kill_broker(self, service: str = "kafka") -> float:
        """SIGKILL of a broker, restarted on the same port; returns the seconds it was away."""
        pid = self.pid(service)
        broker = self.s3_broker if service == "kafka-s3" else self.stack._broker(self.stack.read_state())
        assert broker is not None
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10)
        self._set_pid(service, _start_retrying(broker.start))
        return time.monotonic() - t0

    def restart_mariadb(self) -> float:
        """A clean MariaDB restart (SIGTERM, start on the same port); returns the seconds it was down."""
        db = self.stack._mariadb(self.stack.read_state())
        t0 = time.monotonic()
        db.stop(self.pid("mariadb"))
        self._set_pid("mariadb", _start_retrying(db.start))
        return time.monotonic() - t0


def _start_retrying(start: Callable[[], int], timeout: float = 30.0) -> int:
    """`start()` again while it finds the port in use (what `dw stack up` says then), for up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return start()
        except ServiceError as e:
            if "already in use" not in str(e) or time.monotonic() >= deadline:
                raise
            log.warning("%s; retrying", e)
            time.sleep(1.0)


def stack_port(low: int = 20_000, high: int = 32_000) -> int:
    """A free port below Linux's ephemeral range (32768-60999): no client's source port can take it while its
    server is down (a port from `find_free_port` can, and then a restart on the same port is refused)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high)
        if not port_in_use(port):
            return port
    raise RuntimeError(f"no free port between {low} and {high}")


# ---- the workload -------------------------------------------------------------------------------------------
class Workload:
    """The mixed workload on each client (its own model) in threads, for `duration` seconds in all; a MariaDB
    outage ends a run of it, and it starts again until the time is up (the source stays the truth)."""

    def __init__(self, settings: Settings, clients: dict[str, StandardModel], rate: float, duration: float):
        self.settings, self.clients, self.rate, self.duration = settings, clients, rate, duration
        self.per_client = {c: 0 for c in clients}  # committed row changes, updated every 0.5 s
        self.interruptions: list[str] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> "Workload":
        deadline = time.monotonic() + self.duration
        for client, model in self.clients.items():
            t = threading.Thread(target=self._run, args=(client, model, deadline), name=f"workload-{client}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self, client: str, model: StandardModel, deadline: float) -> None:
        from dw_assets.workload import run_workload

        seed = 0
        while (left := deadline - time.monotonic()) > 0.5:
            seed += 1
            done = self.per_client[client]

            def progress(stats) -> None:  # how far the workload is, for the fault's timing
                self.per_client[client] = done + stats.row_changes

            try:
                stats = run_workload(self.settings, [client], rate=self.rate / len(self.clients), duration=left,
                                     seed=seed, connections=1, model=model, progress=progress)
                self.per_client[client] = done + stats.row_changes
            except pymysql.err.MySQLError as e:
                self.interruptions.append(f"{client}: {e}")
                time.sleep(0.5)

    @property
    def changes(self) -> int:
        return sum(self.per_client.values())

    def wait(self) -> None:
        for t in self._threads:
            t.join(self.duration + 120)


# ---- the pipeline's processes -------------------------------------------------------------------------------
@dataclass
class Exit:
    role: str
    pid: int
    returncode: int | None
    by: str  # "fault" (our SIGKILL), "recovery" or "stop" (our SIGTERM, SIGKILL after a grace) or "itself"
    last_lines: str = ""
    cpu_s: float = 0.0


@dataclass
class Pipeline:
    """One scenario's pipeline: capture, a landing writer per client and the continuous apply loop, as processes
    on a state directory of their own (own capture checkpoint, landing locks, landing store and lake)."""

    settings: Settings
    models: dict[str, StandardModel]
    model_files: dict[str, Path | None]
    logs: Path
    procs: dict[str, Child] = field(default_factory=dict)
    exits: list[Exit] = field(default_factory=list)
    starts: dict[str, int] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def clients(self) -> list[str]:
        return list(self.models)

    def command(self, role: str) -> list[str]:
        home = ["--home", str(self.home)]
        if role == "capture":
            dbs = [a for c in self.clients for a in ("--database", c)]
            return [sys.executable, "-m", "dw_assets.cdc", *home, "cdc", "run", "--no-progress",
                    "--stats-interval-s", "5", *dbs]
        if role.startswith("landing:"):
            client = role.split(":", 1)[1]
            # Small files and a short idle flush: files are cut (and committed) while the workload runs.
            return [sys.executable, "-m", "dw_assets_tests.fault_processes", *home, "landing", "run", "--client",
                    client, "--idle-seconds", "1", "--flush-records", "400"]
        if role == "apply":
            specs = [f"{c}={self.model_files[c] or ''}" for c in self.clients]
            return [sys.executable, "-m", "dw_assets_tests.fault_processes", *home, "apply-loop", *specs]
        raise ValueError(f"unknown role {role!r}")

    @property
    def roles(self) -> list[str]:
        return ["capture", *(f"landing:{c}" for c in self.clients), "apply"]

    def start(self, role: str) -> Child:
        n = self.starts[role] = self.starts.get(role, 0) + 1
        log_file = self.logs / f"{role.replace(':', '-')}.{n}.log"
        child = Child(self.command(role), env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=REPO_ROOT, log=log_file)
        self.procs[role] = child
        return child

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """A one-off command of the product on this scenario's state directory, for a recovery step, e.g.
        `run("landing", "lag", "--client", c)` (fault_processes: landing and lake commands) or
        `run("cdc", "resnapshot", c)` (python -m dw_assets.cdc); its output goes to the scenario's logs."""
        module = "dw_assets.cdc" if args and args[0] == "cdc" else "dw_assets_tests.fault_processes"
        cmd = [sys.executable, "-m", module, "--home", str(self.home), *args]
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
        with open(self.logs / "recovery.log", "a") as f:
            f.write(f"$ {' '.join(args)}  -> exit {done.returncode}\n{done.stdout}{done.stderr}\n")
        return done

    def kill(self, role: str) -> Exit:
        """SIGKILL of the role's process (by PID); returns how it ended."""
        child = self.procs[role]
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        return self._ended(role, "fault")

    def restart(self, role: str) -> Child:
        if self.procs[role].poll() is None:
            raise RuntimeError(f"{role} is still running")
        return self.start(role)

    def died(self) -> list[Exit]:
        """Processes that ended on their own since they were started (recorded once)."""
        out = []
        for role, child in list(self.procs.items()):
            if child.result is None and child.poll() is not None:
                out.append(self._ended(role, "itself"))
        return out

    def _ended(self, role: str, by: str) -> Exit:
        child = self.procs[role]
        r = child.wait(30)
        e = Exit(role, child.pid, r.returncode, by, _tail(child.log), round(r.cpu_s, 1))
        self.exits.append(e)
        return e

    def stop_all(self, grace: float = 15.0, by: str = "stop") -> list[Exit]:
        """SIGTERM every live process (each stops cleanly on it), SIGKILL by PID after `grace` seconds."""
        live = {role: c for role, c in self.procs.items() if c.result is None and c.poll() is None}
        for c in live.values():
            os.kill(c.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        ended = []
        for role, c in live.items():
            while c.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if c.poll() is None:
                os.kill(c.pid, signal.SIGKILL)
            ended.append(self._ended(role, by))
        for role, c in self.procs.items():  # ended on their own after the last check
            if c.result is not None and not any(e.pid == c.pid for e in self.exits):
                self._ended(role, "itself")
        return ended

    def restart_all(self, grace: float = 5.0) -> list[Exit]:
        """Every process stopped (SIGKILL after `grace` s: a hung one ignores SIGTERM) and started again."""
        self.died()
        ended = self.stop_all(grace, by="recovery")
        for role in self.roles:
            self.start(role)
        return ended

    def compare(self) -> dict[str, list[TableEquality]]:
        return {c: compare_silver_with_source(self.settings, c, m) for c, m in self.models.items()}


class ServicePipeline(Pipeline):
    """Capture plus one `dw ingest run` process serving every client (instead of a writer per client and an
    apply loop)."""

    def command(self, role: str) -> list[str]:
        if role == "ingest":
            clients = [a for c in self.clients for a in ("--client", c)]
            return [sys.executable, "-m", "dw_assets.cli", "--home", str(self.home), "ingest", "run", *clients,
                    "--no-dagster", "--no-reports"]
        return super().command(role)

    @property
    def roles(self) -> list[str]:
        return ["capture", "ingest"]


def _tail(path: Path | None, lines: int = 6) -> str:
    """The log's last lines that say something (errors first), for the record."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    errors = [ln for ln in text if any(w in ln for w in ("Error", "error", "Traceback", "WARNING", "failed"))]
    return "\n".join((errors or text)[-lines:])


def _ensure_bucket(state: dict, bucket: str) -> None:
    s3 = state["s3"]
    ensure_bucket(bucket, endpoint_url=s3["endpoint_url"], region_name=s3["region"],
                  aws_access_key_id=s3["access_key_id"], aws_secret_access_key=s3["secret_access_key"])


def scenario_settings(stack: Stack, directory: Path, *, s3_bucket: str | None = None,
                      broker: TansuBroker | None = None, s3_endpoint: str | None = None) -> Settings:
    """A state directory of the scenario's own over the shared stack: a copy of the stack's state file with the
    scenario's landing store and lake (local, or in `s3_bucket` on the stack's S3 endpoint, or on `s3_endpoint`
    when the stack runs none: the session's moto server) and broker."""
    directory.mkdir(parents=True, exist_ok=True)
    state = stack.read_state()
    if s3_endpoint:
        state["s3"] = {"endpoint_url": s3_endpoint, "region": "us-east-1", "access_key_id": LOCAL_KEY,
                       "secret_access_key": LOCAL_KEY, "allow_http": True}
    if s3_bucket:
        _ensure_bucket(state, s3_bucket)
        landing, lake = f"s3://{s3_bucket}/landing", f"s3://{s3_bucket}/lake"
    else:
        landing, lake = str(directory / "landing"), str(directory / "lake")
    state["landing"] = {"url": landing}
    state["lake"] = {"url": lake}
    state["reports"] = {"dir": str(directory / "reports")}
    if broker is not None:
        state["kafka"] = {"port": broker.port, "bootstrap": broker.bootstrap}
    fd = os.open(directory / STATE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds passwords
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    return load_settings(env={}, home=directory)


def create_topics(settings: Settings, models: dict[str, StandardModel]) -> None:
    """Every client table's topic before the writers start (as capture would at a table's first event): a
    continuous writer lists its topics at start and then only every 30 s."""
    from dw_assets.cdc.topics import TopicRegistry
    from dw_assets.contracts import data_topic

    registry = TopicRegistry(settings)
    for client, model in models.items():
        for t in model.tables:
            registry.ensure(data_topic(settings.kafka.topic_prefix, client, t.name))


# ---- outcomes -----------------------------------------------------------------------------------------------
def bronze_duplicates(settings: Settings, client: str, model: StandardModel) -> dict[str, int]:
    """Per table, bronze rows beyond one per change: a change is identified by its source coordinates (binlog
    file, position, row index), operation and key (snapshot rows of one chunk share file and position)."""
    from dw_assets.lakehouse.paths import read_delta

    cols = ["source_file", "source_pos", "source_row", "op", "key"]
    out = {}
    for t in model.tables:
        try:
            rows = read_delta(settings, "bronze", client, t.name, columns=cols).to_pylist()
        except FileNotFoundError:
            continue
        extra = len(rows) - len({tuple(r[c] for c in cols) for r in rows})
        if extra:
            out[t.name] = extra
    return out


def wait_converged(pipeline: Pipeline, timeout: float, poll: float = 2.5) -> tuple[bool, dict[str, list[TableEquality]]]:
    """Poll until every silver table equals its source; stop early when a pipeline process died on its own
    (nothing would bring silver further)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = pipeline.compare()
        except Exception as e:  # noqa: BLE001 - a table mid-creation or an S3 hiccup: poll again
            log.info("compare failed: %s", e)
            result = {}
        if result and all(r.equal for rs in result.values() for r in rs):
            return True, result
        if pipeline.died() or time.monotonic() >= deadline:
            return False, result
        time.sleep(poll)


@dataclass
class Outcome:
    """What one scenario did, for its assertions and for the README's table of faults."""

    scenario: str
    fault: str
    recovery: str
    seconds: float = 0.0
    warmup_seconds: float | None = None
    workload_changes: int = 0
    workload_interruptions: list[str] = field(default_factory=list)
    converged: bool = False
    converge_seconds: float | None = None
    differences: list[str] = field(default_factory=list)
    bronze_extra: dict[str, dict[str, int]] = field(default_factory=dict)
    exits: list[Exit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.converged and not self.differences and not any(self.bronze_extra.values())

    def record(self, path: Path) -> None:
        d = {k: v for k, v in self.__dict__.items() if k != "exits"}
        d["exits"] = [e.__dict__ for e in self.exits]
        d["exact"] = self.exact
        with open(path, "a") as f:
            f.write(json.dumps(d, default=str) + "\n")

    def describe(self) -> str:
        died = [f"{e.role} exited by {e.by} with {e.returncode}: {e.last_lines[-400:]}" for e in self.exits
                if e.by == "itself"]
        return "; ".join([*self.differences[:6], *(f"bronze extra rows {c}: {d}" for c, d in self.bronze_extra.items()
                                                    if d), *died, *self.notes]) or "exact"


# ---- the scenario runner ------------------------------------------------------------------------------------
@dataclass
class ScenarioParams:
    rows_per_client: int = 150
    rate: float = 250  # row changes per second over both clients
    duration_s: float = 14  # the workload; an outage of 10 s at fault_at_s ends before it
    fault_at_s: float = 1  # after the workload's first `rate` changes
    warmup_timeout_s: float = 90  # the snapshot through the whole pipeline, processes starting on busy cores
    converge_timeout_s: float = 60


class WarmupFailed(RuntimeError):
    """The pipeline did not bring the snapshot to silver before any fault: the scenario proves nothing."""


def run_scenario(name: str, settings: Settings, work: Path, fault: Callable[[Pipeline], str],
                 recover: Callable[[Pipeline], str], params: ScenarioParams | None = None,
                 record_to: Path | None = None) -> Outcome:
    """Seed two clients (the shipped model and the suite's own), start the pipeline and wait until the snapshot
    is in silver; then start the workload, run `fault` and `recover` while it runs (each returns a line for the
    record), wait until silver equals the source, stop everything and return the outcome."""
    from dw_assets.workload import seed_clients

    p = params or ScenarioParams()
    started = time.monotonic()
    tag = name.replace("-", "_")[:20]
    model_file = write_fault_model(work)
    shipped, own = f"{tag}_std", f"{tag}_own"
    models = {shipped: load_model(), own: load_model(model_file)}
    files: dict[str, Path | None] = {shipped: None, own: model_file}
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(settings, models, files, logs)
    outcome = Outcome(name, "", "")
    try:
        pipeline.start("apply")  # the slowest to import (deltalake, DuckDB, Polars): while the clients are seeded
        for c, m in models.items():
            seed_clients(settings, [c], rows_per_client=p.rows_per_client, seed=5, model=m, replace=True)
        create_topics(settings, models)
        _run_phases(pipeline, p, fault, recover, outcome)
    except BaseException as e:
        outcome.notes.append(f"scenario failed: {e!r}"[:2000])
        raise
    finally:
        pipeline.stop_all()
        outcome.exits = pipeline.exits
        try:
            outcome.bronze_extra = {c: bronze_duplicates(settings, c, m) for c, m in models.items()}
        except Exception as e:  # noqa: BLE001 - recorded; the scenario's own failure matters more
            outcome.notes.append(f"bronze could not be read: {e!r}")
        outcome.seconds = round(time.monotonic() - started, 1)
        if record_to is not None:
            outcome.record(record_to)
    return outcome


def _run_phases(pipeline: Pipeline, p: ScenarioParams, fault: Callable[[Pipeline], str],
                recover: Callable[[Pipeline], str], outcome: Outcome) -> None:
    settings, models, name = pipeline.settings, pipeline.models, outcome.scenario
    for role in pipeline.roles:
        if role not in pipeline.procs:
            pipeline.start(role)
    t0 = time.monotonic()
    warm, result = wait_converged(pipeline, p.warmup_timeout_s)
    if not warm:
        raise WarmupFailed(f"{name}: the snapshot did not reach silver within {p.warmup_timeout_s:.0f} s: "
                           + "; ".join([*_differences(result), *(f"{e.role} exited {e.returncode}: "
                                                                 f"{e.last_lines}" for e in pipeline.exits)]))
    outcome.warmup_seconds = round(time.monotonic() - t0, 1)
    workload = Workload(settings, models, p.rate, p.duration_s).start()
    # The fault once the workload is flowing (its threads connect and load their key pools first).
    wait_until(lambda: workload.changes >= p.rate, p.duration_s / 2)
    time.sleep(p.fault_at_s)
    outcome.fault = fault(pipeline)
    outcome.recovery = recover(pipeline)
    workload.wait()
    outcome.workload_changes, outcome.workload_interruptions = workload.changes, workload.interruptions
    t0 = time.monotonic()
    outcome.converged, result = wait_converged(pipeline, p.converge_timeout_s)
    if outcome.converged:
        outcome.converge_seconds = round(time.monotonic() - t0, 1)
    outcome.differences = _differences(result)


def _differences(result: dict[str, list[TableEquality]]) -> list[str]:
    if not result:
        return ["silver could not be read"]
    return [r.describe(c) for c, rs in result.items() for r in rs if not r.equal]
