"""`python -m dw_assets.cdc [--home DIR] cdc run|resnapshot|status ...`: the capture commands without the other stages.

The same commands as `dw cdc ...`; a service started this way does not import the rest of the CLI.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..settings import SettingsError, load_settings
from . import commands


def main(argv: list[str] | None = None) -> int:
    from ..cli import CommandError, err_console

    parser = argparse.ArgumentParser(prog="python -m dw_assets.cdc")
    parser.add_argument("--home", help="state directory (default: $DW_HOME or ./.dw)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.register(sub)
    sub.required = True
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args, load_settings(home=args.home)) or 0)
    except (CommandError, SettingsError) as e:
        err_console.print(f"[bold red]error:[/] {e}")
        return getattr(e, "code", 2)


if __name__ == "__main__":
    sys.exit(main())
