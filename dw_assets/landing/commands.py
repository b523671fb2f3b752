"""`dw landing run` and `dw landing lag`: the landing writer and its lag from the command line."""
from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from ..cli import CommandError
from ..identifiers import validate_client_name
from ..settings import Settings
from .client_lock import LandingBusy
from .flush import FlushPolicy
from .incarnation import LandingReset
from .lag import measure_lag
from .sweep import land_clients
from .writer import LandingReport, land_client

console = Console()


def _active_clients(settings: Settings) -> dict[str, str]:
    try:
        from ..onboarding.registry import list_clients
    except ImportError:
        raise CommandError("the client registry is not available: name clients with --client") from None
    return {c.name: c.production_db for c in list_clients(settings, status="active")}


def _targets(args: argparse.Namespace, settings: Settings) -> dict[str, str]:
    if getattr(args, "all", False):
        clients = _active_clients(settings)
        if not clients:
            raise CommandError("no active clients in the registry")
        return clients
    if not args.client:
        raise CommandError("name a client with --client, or use --all")
    out = {}
    for c in args.client:
        validate_client_name(c)
        out[c] = args.database or c
    return out


def _policy(args: argparse.Namespace) -> FlushPolicy:
    d = FlushPolicy()
    return FlushPolicy(flush_records=args.flush_records or d.flush_records,
                       flush_bytes=args.flush_bytes or d.flush_bytes,
                       idle_seconds=args.idle_seconds if args.idle_seconds is not None else d.idle_seconds)


def _print_report(r: LandingReport) -> None:
    s = r.summary()
    console.print(f"[bold]{r.client}[/]: {s['files']} files, {s['records']} rows, {s['dead_letters']} dead letters, "
                  f"{s['tombstones']} tombstones, {s['adopted']} adopted, {s['seconds']}s "
                  f"({s['events_per_second']:.0f} events/s)")


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    targets = _targets(args, settings)
    policy = _policy(args)
    if args.once:
        results = land_clients(settings, targets, policy=policy)
        failed = 0
        for client, r in results.items():
            if isinstance(r, LandingReport):
                _print_report(r)
            else:
                failed += 1
                console.print(f"[bold red]{client}[/]: {r}")
        return 1 if failed else 0
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    if len(targets) == 1:
        # One client: a continuous writer with idle and max-age flushes.
        client, database = next(iter(targets.items()))
        try:
            _print_report(land_client(settings, client, database=database, bounded=False, policy=policy, stop=stop))
        except (LandingBusy, LandingReset) as e:
            raise CommandError(str(e)) from None
        return 0
    # Many clients: repeated bounded passes; a pass every `--interval` seconds bounds the landing delay.
    while not stop.is_set():
        started = time.monotonic()
        for client, r in land_clients(settings, targets, policy=policy).items():
            if isinstance(r, LandingReport) and (r.files or r.adopted or r.dead_letters):
                _print_report(r)
            elif not isinstance(r, LandingReport):
                console.print(f"[bold red]{client}[/]: {r}")
        stop.wait(max(args.interval - (time.monotonic() - started), 0.0))
        if args.all:
            targets = _active_clients(settings)
    return 0


def cmd_lag(args: argparse.Namespace, settings: Settings) -> int:
    targets = _targets(args, settings) if (args.client or args.all) else _active_clients(settings)
    lags = measure_lag(settings, targets)
    if args.json:
        print(json.dumps({c: lag.as_dict() for c, lag in sorted(lags.items())}, indent=2))
        return 0
    table = Table("client", "topic", "partition", "end", "committed", "lag", "oldest unlanded (s)")
    for c, lag in sorted(lags.items()):
        for p in lag.partitions:
            age: Any = f"{p.oldest_unlanded_age_s:.1f}" if p.oldest_unlanded_age_s is not None else ""
            table.add_row(c, p.topic, str(p.partition), str(p.end_offset),
                          "" if p.committed_offset is None else str(p.committed_offset), str(p.lag), age)
        if not lag.partitions:
            table.add_row(c, "(no topics)", "", "", "", "0", "")
    console.print(table)
    for c, lag in sorted(lags.items()):
        if lag.reset:
            console.print(f"[bold red]{c}[/]: a committed offset is above its log end: the broker lost events "
                          f"this client had landed from; run `dw landing recover --client {c}`")
    return 0


def cmd_recover(args: argparse.Namespace, settings: Settings) -> int:
    from .recovery import recover_client

    targets = _targets(args, settings)
    for client, database in targets.items():
        try:
            r = recover_client(settings, client, database=database)
        except LandingBusy as e:
            raise CommandError(f"{e}: stop that writer first, then recover") from None
        if args.json:
            print(json.dumps(r.as_dict(), indent=2))
            continue
        console.print(f"[bold]{client}[/]: archived {len(r.archived)} landing files under {r.archive_prefix}, "
                      f"reset {len(r.offsets)} partition offsets")
        if r.replay_from:
            console.print(f"  capture re-emits {database}'s changes from {r.replay_from} (the running `dw cdc run` "
                          "takes the request within seconds, or the next one does)")
        for note in r.notes:
            console.print(f"  {note}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("landing", help="land CDC topics as Parquet files; landing lag")
    sub = p.add_subparsers(dest="landing_command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="land one client continuously, or clients once (--once)")
    run.add_argument("--client", action="append", help="client name (repeatable)")
    run.add_argument("--database", help="the client's production database, if not its name (one client)")
    run.add_argument("--all", action="store_true", help="every active client in the registry")
    run.add_argument("--once", action="store_true", help="land up to the current end offsets, then exit")
    run.add_argument("--flush-records", type=int, help="records per file (default 50000)")
    run.add_argument("--flush-bytes", type=int, help="value bytes per file (default 64 MiB)")
    run.add_argument("--idle-seconds", type=float, help="flush a partition idle this long (default 10)")
    run.add_argument("--interval", type=float, default=10.0, help="seconds between passes over many clients")
    run.set_defaults(func=cmd_run)

    rec = sub.add_parser("recover", help="after a broker lost events: archive the lost incarnation's files, reset "
                                         "the landing offsets, re-capture the client from the binlog")
    rec.add_argument("--client", action="append", help="client name (repeatable)")
    rec.add_argument("--database", help="the client's production database, if not its name (one client)")
    rec.add_argument("--all", action="store_true", help="every active client in the registry")
    rec.add_argument("--json", action="store_true", help="machine-readable output")
    rec.set_defaults(func=cmd_recover)

    lag = sub.add_parser("lag", help="end offset, committed offset, lag and oldest unlanded event per partition")
    lag.add_argument("--client", action="append", help="client name (repeatable; default: all active)")
    lag.add_argument("--database", help="the client's production database, if not its name (one client)")
    lag.add_argument("--all", action="store_true", help="every active client (the default)")
    lag.add_argument("--json", action="store_true", help="machine-readable output")
    lag.set_defaults(func=cmd_lag)
