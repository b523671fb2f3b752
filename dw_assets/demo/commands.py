"""`dw demo`: the local stack, a few clients, the capture service, a workload and Dagster's daemon (and UI),
with a summary and an exit code when given a duration."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rich.console import Console

from dw_assets.settings import Settings

from .runner import (
    DEFAULT_CATCH_UP_TIMEOUT,
    DEFAULT_CLIENTS,
    DEFAULT_LAG_SECONDS,
    DEFAULT_RATE,
    DEFAULT_ROWS_PER_CLIENT,
    DemoError,
    DemoOptions,
    DemoRunner,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run the whole pipeline locally: stack, clients, capture, workload, Dagster (and its UI)",
        description="Starts the stack (idempotent), seeds and onboards N clients (existing ones are reused), starts "
                    "the capture service, a workload and the Dagster daemon (and webserver), which drives landing, "
                    "lakehouse, checks and reports through its sensors. Without --duration it runs until Ctrl-C; "
                    "with it, it waits for the pipeline to catch up, prints a summary and exits 0 only if every "
                    "silver table equals its source. The stack keeps running afterwards (`dw stack down`).")
    p.add_argument("--clients", type=int, default=DEFAULT_CLIENTS,
                   help=f"number of clients (default {DEFAULT_CLIENTS})")
    p.add_argument("--duration", type=float, help="seconds of workload, then catch up, summary and exit "
                                                  "(default: run until Ctrl-C)")
    p.add_argument("--no-ui", action="store_true", help="do not start dagster-webserver")
    p.add_argument("--ui-port", type=int, default=3000, help="webserver port on 127.0.0.1 (default 3000)")
    p.add_argument("--rate", type=float, default=DEFAULT_RATE,
                   help=f"row changes per second over all clients (default {DEFAULT_RATE:g})")
    p.add_argument("--rows-per-client", type=int, default=DEFAULT_ROWS_PER_CLIENT,
                   help=f"rows seeded per new client (default {DEFAULT_ROWS_PER_CLIENT})")
    p.add_argument("--lag-seconds", type=float, default=DEFAULT_LAG_SECONDS,
                   help="landing sensor threshold on the age of the oldest unlanded event, passed to the daemon as "
                        f"DW_LANDING_LAG_SECONDS unless that is set (default {DEFAULT_LAG_SECONDS:g}; "
                        "production default 30)")
    p.add_argument("--landing-shards", type=int, default=1,
                   help="landing shards of the lag sensor (one landing run per shard at a time), passed to the "
                        "daemon as DW_LANDING_SHARDS unless that is set (default 1: one run lands every demo "
                        "client, one process start instead of N; production default 16)")
    p.add_argument("--catch-up-timeout", type=float, default=DEFAULT_CATCH_UP_TIMEOUT,
                   help=f"seconds to wait for the pipeline after the workload (default {DEFAULT_CATCH_UP_TIMEOUT:g})")
    p.add_argument("--marker-interval", type=float, default=5.0,
                   help="seconds between freshness markers per client (default 5)")
    p.add_argument("--sensors", action="store_true",
                   help="no ingest service: the Kafka-lag sensor's runs land and apply (the mode before "
                        "`dw ingest run`; freshness of tens of seconds)")
    p.add_argument("--summary-json", type=Path, help="also write the summary as JSON to this file")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from dw_assets.cli import CommandError

    options = DemoOptions(clients=args.clients, duration=args.duration, ui=not args.no_ui, ui_port=args.ui_port,
                          rate=args.rate, rows_per_client=args.rows_per_client, lag_seconds=args.lag_seconds,
                          landing_shards=args.landing_shards,
                          catch_up_timeout=args.catch_up_timeout, marker_interval=args.marker_interval,
                          service=not args.sensors)
    if options.clients < 1 or options.rate <= 0 or (options.duration is not None and options.duration <= 0):
        raise CommandError("--clients, --rate and --duration must be positive")
    # The instance's SQLite migrations and the report engine log every call at INFO: noise next to the progress.
    for noisy in ("alembic", "dw_assets.reports"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))  # logs and CI: keep the summary table readable
    runner = DemoRunner(settings, options, console=console)
    try:
        summary = runner.run()
    except DemoError as e:
        raise CommandError(str(e), code=1) from None
    if summary is None:
        return 0  # stopped by Ctrl-C / SIGTERM after a clean start: everything it started is stopped
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.as_dict(), indent=2, default=str))
    return 0 if summary.ok else 1
