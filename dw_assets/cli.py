"""The `dw` command line: one sub-command module per stage, each exposing `register(subparsers)`.

A stage adds its commands by adding its module to COMMAND_MODULES; each parser sets `func(args, settings)`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rich.console import Console
from rich.markup import escape

from .identifiers import InvalidIdentifier
from .settings import SettingsError, load_settings

COMMAND_MODULES = [
    "dw_assets.stack.commands",
    "dw_assets.onboarding.commands",
    "dw_assets.workload.commands",
    "dw_assets.cdc.commands",
    "dw_assets.landing.commands",
    "dw_assets.lakehouse.commands",
    "dw_assets.checks.commands",
    "dw_assets.reports.commands",
    "dw_assets.demo.commands",
    "dw_assets.bench.commands",
]

err_console = Console(stderr=True)


class CommandError(Exception):
    """An expected failure: printed as one clear line, exit code 2 (or `code`)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dw", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--home", help="state directory of the local stack (default: $DW_HOME or ./.dw)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):  # stage not built yet
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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


if __name__ == "__main__":
    sys.exit(main())
