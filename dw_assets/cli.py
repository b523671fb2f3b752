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
from functools import lru_cache
from pathlib import Path
from typing import Any

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
    "profile": ("dw_assets.profile.commands",
                "compute profile: each job type on each engine, core count and scale, with its cost and a recommendation"),
}
COMMAND_MODULES = list(dict.fromkeys(module for module, _ in COMMANDS.values()))
_VALUE_OPTIONS = ("--home", "--model")  # global options that take a value

# Failures a user can fix from the message alone: one line, no traceback. Named, not imported, so that
# handling them costs no stage import.
EXPECTED_ERRORS = frozenset({
    "dw_assets.model.model.ModelError",
    "dw_assets.reports.catalog.ReportDefinitionError",
    "dw_assets.workload.generator.GeneratorError",
    "dw_assets.onboarding.registry.RegistryError",
    "dw_assets.onboarding.validation.OnboardingRefused",
})


@lru_cache(maxsize=1)
def _err_console() -> Any:
    from rich.console import Console  # rich costs ~0.2 s to import: only when something is printed

    return Console(stderr=True)


def __getattr__(name: str) -> Any:  # `from dw_assets.cli import err_console` keeps working, lazily
    if name == "err_console":
        return _err_console()
    raise AttributeError(name)


def _print_error(line: str) -> None:
    from rich.markup import escape

    _err_console().print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)


class CommandError(Exception):
    """An expected failure: printed as one clear line, exit code 2 (or `code`)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _requested_command(argv: list[str]) -> str | None:
    """The top-level command in `argv` (the first word that is not a global option or its value)."""
    it = iter(argv)
    for word in it:
        if word in _VALUE_OPTIONS:
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
    parser.add_argument("--model", help=MODEL_HELP)
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
    for command_parser in sub.choices.values():
        _add_model_option(command_parser)
    return parser


MODEL_HELP = "model file (default: $DW_MODEL_PATH, else the shipped standard model)"


def _add_model_option(parser: argparse.ArgumentParser) -> None:
    """`--model` after any (sub)command too, as `dw lake init --client a --model m.yaml`; SUPPRESS keeps a value
    given before the command."""
    children = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in children:
        for child in action.choices.values():
            _add_model_option(child)
    if not children and "--model" not in parser._option_string_actions:
        parser.add_argument("--model", default=argparse.SUPPRESS, help=MODEL_HELP)


def _is_expected(error: BaseException) -> bool:
    return any(f"{k.__module__}.{k.__qualname__}" in EXPECTED_ERRORS for k in type(error).__mro__)


# MariaDB client errors that mean "not reachable / not allowed", not a bug: can't connect (socket, TCP), denied.
_UNREACHABLE_MARIADB = {2002, 2003, 1045}


def _outage_line(error: BaseException) -> str | None:
    """One line for an outage a user fixes outside the code (the stack is down), else None."""
    names = {f"{k.__module__}.{k.__qualname__}" for k in type(error).__mro__}
    if "pymysql.err.OperationalError" in names and error.args and error.args[0] in _UNREACHABLE_MARIADB:
        return f"MariaDB not reachable: {error.args[-1]} (is the stack up? `dw stack up`, or check DW_MARIADB_URL)"
    return None


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
        if args.model:  # the one override of DW_MODEL_PATH; every stage reads the model from the settings
            # Processes the command starts get it through `Settings.child_env()`.
            settings = settings.with_overrides(model_path=str(Path(args.model).resolve()))
        rc = args.func(args, settings)
        return int(rc or 0)
    except (CommandError, InvalidIdentifier, SettingsError) as e:
        _print_error(str(e))
        return getattr(e, "code", 2)
    except Exception as e:
        line = str(e) if _is_expected(e) else _outage_line(e)
        if line is None or args.verbose:
            return _unexpected(args.verbose)
        _print_error(line)
        return 2
    except KeyboardInterrupt:
        _err_console().print("interrupted")
        return 130


def _unexpected(verbose: bool) -> int:
    """A bug or an outage: keep the traceback, it is what a report needs."""
    traceback.print_exc()
    hint = "" if verbose else "; `dw -v ...` logs more"
    _err_console().print(f"[bold red]unexpected error[/] (traceback above){hint}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
