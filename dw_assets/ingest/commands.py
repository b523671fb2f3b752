"""`dw ingest run [--shard i/n] [--client C ...]` and `dw ingest status`: the ingest service's command line."""
from __future__ import annotations

import argparse
import json
import signal
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from ..settings import Settings

console = Console(stderr=True)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("ingest", help="the ingest service: land and apply every active client continuously")
    sub = p.add_subparsers(dest="ingest_command", metavar="SUBCOMMAND")
    sub.required = True
    run = sub.add_parser(
        "run", help="land and apply every active client until stopped (SIGTERM/Ctrl-C stop cleanly)",
        description="Serves every active client of the registry (or --client): continuous landing (a partition "
                    "flushes within ~1 s), micro-batch apply through the conformance gate, reports within "
                    "DW_REPORTS_DEBOUNCE_SECONDS, runless Dagster materializations. --shard i/n serves only the "
                    "clients whose hash is i modulo n: run n services (on one host or many) to scale out.")
    run.add_argument("--shard", default="0/1", help="i/n: serve this shard of the clients (default 0/1: all)")
    run.add_argument("--client", action="append", metavar="NAME",
                     help="serve these clients instead of the registry's active ones (repeatable)")
    run.add_argument("--apply-workers", type=int, default=2, help="clients applied at once (default 2)")
    run.add_argument("--max-age", type=float, default=1.0,
                     help="seconds a partition's oldest unlanded event may wait before its file is cut (default 1)")
    run.add_argument("--no-dagster", action="store_true", help="do not report materializations to Dagster")
    run.add_argument("--no-reports", action="store_true", help="do not rebuild reports after batches")
    run.add_argument("--batch-log", help="append one JSON line per micro-batch to this file")
    run.add_argument("--report-log", help="append one JSON line per report build to this file")
    run.set_defaults(func=cmd_run)
    st = sub.add_parser("status", help="the ingest services' heartbeats: pid, shard, clients, last batch")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ..cli import CommandError
    from ..identifiers import validate_client_name
    from ..landing.flush import FlushPolicy
    from .service import IngestService, ServiceBusy, ServiceOptions
    from .shards import parse_shard

    try:
        shard = parse_shard(args.shard)
    except ValueError as e:
        raise CommandError(str(e)) from None
    clients = None
    if args.client:
        from ..checks.conformance import client_databases

        clients = {validate_client_name(c): client_databases(settings, c).production_db for c in args.client}
    if args.apply_workers < 1 or args.max_age <= 0:
        raise CommandError("--apply-workers and --max-age must be positive")
    options = ServiceOptions(
        shard=shard, clients=clients, apply_workers=args.apply_workers,
        policy=FlushPolicy(idle_seconds=min(0.5, args.max_age), max_age_seconds=args.max_age),
        dagster=not args.no_dagster, reports=not args.no_reports,
        batch_log=Path(args.batch_log) if args.batch_log else None,
        report_log=Path(args.report_log) if args.report_log else None)
    # The Dagster instance's SQLite migrations and the report engine log every call at INFO.
    import logging

    for noisy in ("alembic", "dw_assets.reports"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    service = IngestService(settings, options)
    previous = {sig: signal.signal(sig, lambda *_: service.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    console.print(f"ingest: serving shard {args.shard} (Ctrl-C stops)")
    try:
        hb = service.run()
    except ServiceBusy as e:
        raise CommandError(str(e)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(f"ingest: stopped after {hb.batches} batch(es), {hb.events} event(s), {hb.files} file(s)")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from .heartbeat import read_heartbeats

    now = time.time()
    stale = settings.ingest_heartbeat_stale_seconds
    beats = read_heartbeats(settings)
    if args.json:
        print(json.dumps([{**hb.as_dict(), "age_s": round(hb.age_s(now), 1), "live": hb.live(stale, now)}
                          for hb in beats], indent=2))
        return 0
    if not beats:
        Console().print("no ingest service has run here (no heartbeat under "
                        f"{settings.home / 'ingest'}); the Kafka-lag sensor serves every client")
        return 0
    table = Table("shard", "pid", "state", "heartbeat age (s)", "clients", "last batch (s ago)", "batches",
                  "events", "files", "failures", "not applied")
    for hb in beats:
        live = hb.live(stale, now)
        state = hb.state if live or hb.state == "stopped" else f"STALE (> {stale:g} s): sensor takes over"
        table.add_row(hb.shard, str(hb.pid), state, f"{hb.age_s(now):.1f}", str(len(hb.clients)),
                      "" if hb.last_batch_at is None else f"{now - hb.last_batch_at:.1f}", str(hb.batches),
                      str(hb.events), str(hb.files), str(hb.failures),
                      "; ".join(f"{c}: {why[:80]}" for c, why in hb.stopped.items()))
    Console().print(table)
    return 0
