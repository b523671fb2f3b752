"""`dw seed` and `dw workload`: create and fill client databases, then keep changing them at a steady rate."""
from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dw_assets.cli import CommandError
from dw_assets.settings import Settings

from .generator import GeneratorError, client_names, seed_clients
from .workload import WorkloadError, WorkloadStats, run_workload


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("seed", help="create client databases (production + staging) and fill them")
    p.add_argument("--clients", nargs="+", required=True, metavar="N|NAMES",
                   help="a number (client_001..) or client names, comma- or space-separated")
    p.add_argument("--rows-per-client", type=int, default=10_000, help="about this many rows per client")
    p.add_argument("--seed", type=int, default=42, help="random seed: same seed, same data")
    p.add_argument("--replace", action="store_true", help="drop and recreate existing client databases")
    p.set_defaults(func=cmd_seed)

    w = subparsers.add_parser("workload", help="run a mixed insert/update/delete workload on client databases")
    w.add_argument("--rate", type=float, default=2000, help="row changes per second (default 2000)")
    w.add_argument("--duration", type=float, default=10, help="seconds (default 10)")
    w.add_argument("--clients", help="comma-separated client names (default: all registered, not offboarded)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--connections", type=int, default=3, help="parallel connections (default 3)")
    w.add_argument("--json", action="store_true", help="print the stats as JSON")
    w.set_defaults(func=cmd_workload)


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    try:
        names = client_names(args.clients)  # validated before anything connects to the database
        model = settings.standard_model()
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} rows"),
                      TimeElapsedColumn(), console=Console(stderr=True)) as bar:
            task = bar.add_task("seeding", total=len(names) * args.rows_per_client)

            def progress(client: str, table: str, rows: int) -> None:
                bar.update(task, advance=rows, description=f"{client}.{table}")

            seeded = seed_clients(settings, names, args.rows_per_client, args.seed, model=model,
                                  replace=args.replace, progress=progress)
    except GeneratorError as e:
        raise CommandError(str(e)) from None
    for c in seeded:
        Console().print(f"seeded [bold]{c.name}[/]: {c.total_rows} rows in {c.production_db} "
                        f"(staging schema {c.staging_db}), status seeded")
    return 0


def cmd_workload(args: argparse.Namespace, settings: Settings) -> int:
    clients = args.clients.split(",") if args.clients else None
    console = Console(stderr=True)
    try:
        with console.status("workload starting") as status:
            def progress(s: WorkloadStats) -> None:
                status.update(f"{s.row_changes} row changes, {s.achieved_rate:,.0f}/s, {s.duration_s:.1f}s")

            stats = run_workload(settings, clients, rate=args.rate, duration=args.duration, seed=args.seed,
                                 connections=args.connections, progress=progress)
    except WorkloadError as e:
        raise CommandError(str(e)) from None
    if args.json:
        print(json.dumps(stats.as_dict(), indent=2))
    else:
        Console().print(
            f"achieved rate: [bold]{stats.achieved_rate:,.0f}[/] row changes/s (requested {args.rate:,.0f}) - "
            f"{stats.row_changes} changes ({stats.inserts} inserts, {stats.updates} updates, {stats.deletes} "
            f"deletes) in {stats.commits} transactions over {stats.duration_s:.1f}s")
    return 0
