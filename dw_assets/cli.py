"""The `dw` command line: one sub-command module per stage, each exposing `register(subparsers)`.

A stage adds its commands by adding them to COMMANDS; each parser sets `func(args, settings)`. Only the module
of the command being run is imported (stages pull in Dagster, deltalake, DuckDB, ...: seconds on two cores), so
`dw --help` lists COMMANDS from this table alone; a test keeps the table equal to what the modules register.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from rich.console import Console
from rich.markup import escape

from .identifiers import InvalidIdentifier
from .settings import SettingsError, load_settings

# top-level command -> (module that registers it, one-line help shown by `dw --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("dw_assets.stack.commands", "start, stop and inspect the local stack (MariaDB, Kafka, S3)"),
    "clients": ("dw_assets.onboarding.commands", "list and manage registered clients"),
    "seed": ("dw_assets.workload.commands", "create client databases (production + staging) and fill them"),
    "workload": ("dw_assets.workload.commands", "run a mixed insert/update/delete workload on client databases"),
    "cdc": ("dw_assets.cdc.commands", "change data capture: MariaDB binlog -> Debezium-format Kafka topics"),
    "landing": ("dw_assets.landing.commands", "land CDC topics as Parquet files; landing lag"),
    "ingest": ("dw_assets.ingest.commands", "the ingest service: land and apply every active client continuously"),
    "lake": ("dw_assets.lakehouse.commands", "Delta lake: create tables, apply landing files, maintain"),
    "drift": ("dw_assets.checks.commands", "schema drift of client databases vs the model (exit 1 if breaking)"),
    "reconcile": ("dw_assets.checks.commands", "compare silver with the source; --repair re-reads differing keys"),
    "reports": ("dw_assets.reports.commands", "gold tables and HTML reports from silver"),
    "demo": ("dw_assets.demo.commands",
             "run the whole pipeline locally: stack, clients, capture, workload, Dagster (and its UI)"),
    "bench": ("dw_assets.bench.commands", "benchmarks: each stage against its reference, median of several runs"),
}
COMMAND_MODULES = list(dict.fromkeys(module for module, _ in COMMANDS.values()))

err_console = Console(stderr=True)


class CommandError(Exception):
    """An expected failure: printed as one clear line, exit code 2 (or `code`)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _requested_command(argv: list[str]) -> str | None:
    """The top-level command in `argv` (the first word that is not a global option or its value)."""
    it = iter(argv)
    for word in it:
        if word == "--home":
            next(it, None)
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every command's full options when `argv` is None, else only the requested command's.

    Commands not requested get a placeholder parser (name and help only), so `dw --help` and a mistyped
    command import no stage at all.
    """
    parser = argparse.ArgumentParser(
        prog="dw", description="dw: a real-time streaming data warehouse (MariaDB binlog -> Kafka -> landing -> Delta "
                               "lake -> reports), orchestrated by Dagster")
    parser.add_argument("--home", help="state directory of the local stack (default: $DW_HOME or ./.dw)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = None if argv is None else _requested_command(argv)
    modules = COMMAND_MODULES if argv is None else ([COMMANDS[wanted][0]] if wanted else [])
    registered: set[str] = set()
    for name in modules:
        before = set(sub.choices)
        importlib.import_module(name).register(sub)
        registered |= set(sub.choices) - before
    for command, (_, help_text) in COMMANDS.items():
        if command not in registered:
            sub.add_parser(command, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "urllib3", "s3transfer", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = load_settings(home=args.home)
        rc = args.func(args, settings)
        return int(rc or 0)
    except (CommandError, InvalidIdentifier, SettingsError) as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}")
        return getattr(e, "code", 2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception:  # a bug or an outage: keep the traceback, it is what a report needs
        traceback.print_exc()
        err_console.print("[bold red]unexpected error[/] (traceback above); `dw -v ...` logs more")
        return 1


if __name__ == "__main__":
    sys.exit(main())
