"""`dw cdc run [--once]`, `dw cdc resnapshot <client>...`, `dw cdc status`: the capture service's command line."""
from __future__ import annotations

import argparse
import json
import signal
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..settings import Settings

console = Console(stderr=True)


def register(subparsers: Any) -> None:
    cdc = subparsers.add_parser("cdc", help="change data capture: MariaDB binlog -> Debezium-format Kafka topics")
    sub = cdc.add_subparsers(dest="cdc_command", metavar="SUBCOMMAND")
    sub.required = True

    run = sub.add_parser("run", help="stream changes until stopped (SIGTERM stops after the current transaction)")
    run.add_argument("--once", action="store_true", help="capture up to the binlog position current at start, then exit")
    run.add_argument("--database", action="append", default=None, metavar="DB",
                     help="capture these databases instead of the registry's active clients (repeatable)")
    run.add_argument("--heartbeat-interval-ms", type=int, default=5000)
    run.add_argument("--stats-interval-s", type=float, default=10.0)
    run.add_argument("--checkpoint-interval-ms", type=int, default=1000,
                     help="at most this long between checkpoints (0: after every transaction)")
    run.add_argument("--snapshot-chunk-rows", type=int, default=10_000)
    run.add_argument("--no-progress", action="store_true", help="no snapshot progress bars")
    run.set_defaults(func=lambda args, settings: cmd_run(args, settings))

    resnap = sub.add_parser("resnapshot", help="snapshot clients again (also the recovery after a purged binlog)")
    resnap.add_argument("clients", nargs="*", metavar="CLIENT")
    resnap.add_argument("--all", action="store_true", help="every captured database")
    resnap.set_defaults(func=lambda args, settings: cmd_resnapshot(args, settings))

    status = sub.add_parser("status", help="checkpoint, lag and state of the capture service")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=lambda args, settings: cmd_status(args, settings))


class RichSnapshotProgress:
    """Snapshot progress bars, one per table (estimates come from information_schema, so totals are approximate)."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("snapshot {task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.tasks: dict[tuple[str, str], Any] = {}
        self.progress.start()

    def rows(self, db: str, table: str, n: int, estimate: int) -> None:
        key = (db, table)
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"{db}.{table}", total=max(estimate, 1))
        task = self.tasks[key]
        t = self.progress.tasks[self.progress.task_ids.index(task)]
        if t.completed + n > (t.total or 0):
            self.progress.update(task, total=t.completed + n)
        self.progress.advance(task, n)

    def done(self, db: str) -> None:
        for (d, _), task in self.tasks.items():
            if d == db:
                t = self.progress.tasks[self.progress.task_ids.index(task)]
                self.progress.update(task, total=t.completed)

    def close(self) -> None:
        self.progress.stop()


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from ..cli import CommandError
    from .capture import CaptureError, CaptureOptions, CaptureService
    from .preflight import PreflightError
    from .sources import fixed_source

    progress = None if args.no_progress else RichSnapshotProgress()
    opts = CaptureOptions(
        once=args.once,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        stats_interval_s=args.stats_interval_s,
        checkpoint_interval_ms=args.checkpoint_interval_ms,
        snapshot_chunk_rows=args.snapshot_chunk_rows,
        databases=fixed_source(settings, set(args.database)) if args.database else None,
        progress=progress,
    )
    service = CaptureService(settings, opts)
    previous = {sig: signal.signal(sig, lambda *_: service.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stats = service.run()
    except (CaptureError, PreflightError) as e:
        raise CommandError(str(e)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if progress:
            progress.close()
    console.print(f"cdc: {stats.events} events ({stats.snapshot_rows} snapshot rows), position {stats.position}")
    return 0


def _production_db(settings: Settings, client: str) -> str:
    """The client's production database from the registry (the client name itself if the registry lacks it)."""
    from ..identifiers import validate_client_name

    validate_client_name(client)
    try:
        from ..onboarding.registry import list_clients
    except ImportError:
        return client
    return next((c.production_db for c in list_clients(settings, status="active") if c.name == client), client)


def cmd_resnapshot(args: argparse.Namespace, settings: Settings) -> int:
    from ..cli import CommandError
    from ..db import connect
    from .checkpoint import SNAPSHOTTING, Checkpoint, CheckpointStore, ServiceLock, state_dir

    store = CheckpointStore(state_dir(settings))
    cp = store.load()
    captured = set(cp.databases) if cp else set()
    if args.all:
        dbs = captured
    elif args.clients:
        dbs = {_production_db(settings, c) for c in args.clients}
    else:
        raise CommandError("name at least one client, or --all")
    with connect(settings, "cdc") as conn, conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        files = {r[0] for r in cur.fetchall()}
        cur.execute("SHOW MASTER STATUS")
        end_file, end_pos = cur.fetchone()[:2]
    purged = cp is not None and cp.file not in files
    running = ServiceLock(state_dir(settings)).holder_pid()
    if purged:
        missing = captured - dbs
        if missing:
            raise CommandError(
                f"the checkpoint's binlog {cp.file} is purged, so every captured database must be snapshotted again; "
                f"also name {', '.join(sorted(missing))} (or use --all)")
        if running:
            raise CommandError(f"stop the capture service (pid {running}) first")
        # Restart the stream at the current end; the named databases are snapshotted on the next run.
        store.save(Checkpoint(end_file, int(end_pos), None, None, {db: SNAPSHOTTING for db in dbs}))
        console.print(f"checkpoint reset to {end_file}:{end_pos}; {len(dbs)} database(s) will be snapshotted")
        return 0
    for db in sorted(dbs):
        store.request_resnapshot(db)
    who = f"the running service (pid {running})" if running else "the next `dw cdc run`"
    console.print(f"re-snapshot of {', '.join(sorted(dbs)) or 'nothing'} requested; {who} will take it")
    return 0


def capture_status(settings: Settings) -> dict[str, Any]:
    from ..db import connect
    from .checkpoint import CheckpointStore, ServiceLock, state_dir

    store = CheckpointStore(state_dir(settings))
    cp = store.load()
    out: dict[str, Any] = {"state_dir": str(store.directory), "service_pid": ServiceLock(state_dir(settings)).holder_pid()}
    with connect(settings, "cdc") as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        end_file, end_pos = cur.fetchone()[:2]
        cur.execute("SHOW BINARY LOGS")
        logs = [(r[0], int(r[1])) for r in cur.fetchall()]
    out["binlog_end"] = f"{end_file}:{end_pos}"
    if cp is None:
        out["checkpoint"] = None
        return out
    out["checkpoint"] = {"file": cp.file, "pos": cp.pos, "gtid": cp.gtid, "saved_at_ms": cp.saved_at_ms,
                         "last_event_ts_ms": cp.last_event_ts_ms}
    out["databases"] = cp.databases
    names = [n for n, _ in logs]
    out["binlog_available"] = cp.file in names
    if cp.file in names:
        i = names.index(cp.file)
        behind = (logs[i][1] - cp.pos) + sum(size for _, size in logs[i + 1 :])
        out["lag_bytes"] = max(behind, 0)
    out["lag_ms"] = None if cp.last_event_ts_ms is None else max(0, int(time.time() * 1000) - cp.last_event_ts_ms)
    out["pending_resnapshots"] = sorted(store.pending_resnapshots())
    return out


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    st = capture_status(settings)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    cp = st.get("checkpoint")
    console.print(f"service: {'running, pid ' + str(st['service_pid']) if st['service_pid'] else 'not running'}")
    console.print(f"binlog end: {st['binlog_end']}")
    if not cp:
        console.print("checkpoint: none (the first run starts at the binlog end and snapshots every client)")
        return 0
    console.print(f"checkpoint: {cp['file']}:{cp['pos']} gtid {cp['gtid']}  ({st.get('lag_bytes', '?')} bytes behind)")
    if not st.get("binlog_available"):
        console.print(f"[bold red]the checkpoint's binlog {cp['file']} is purged: run `dw cdc resnapshot --all`[/]")
    for db, state in sorted(st.get("databases", {}).items()):
        console.print(f"  {db}: {state}")
    return 0
