"""`dw clients list|activate`: read and change the client registry from the command line."""
from __future__ import annotations

import argparse
import getpass
import json

from rich.console import Console
from rich.table import Table as RichTable

from dw_assets.cli import CommandError
from dw_assets.settings import Settings

from . import registry


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("clients", help="list and manage registered clients")
    sub = p.add_subparsers(dest="clients_command", metavar="ACTION")
    sub.required = True

    ls = sub.add_parser("list", help="list registered clients")
    ls.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    ls.add_argument("--status", choices=registry.STATUSES, action="append", help="only clients in this status")
    ls.set_defaults(func=lambda args, settings: cmd_list(settings, args.json, args.status))

    act = sub.add_parser("activate", help="mark a client active (its changes flow into the lake)")
    act.add_argument("client")
    act.add_argument("--force", action="store_true", help="skip the lifecycle transition check")
    act.set_defaults(func=lambda args, settings: cmd_set_status(settings, args.client, "active", args.force))


def _changed_by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name in some containers
        return "cli"


def cmd_list(settings: Settings, as_json: bool, status: list[str] | None) -> int:
    clients = registry.list_clients(settings, status=status)
    if as_json:
        print(json.dumps([c.as_dict() for c in clients], indent=2))
        return 0
    table = RichTable(title=f"clients ({len(clients)})")
    table.add_column("name", no_wrap=True)  # names are identifiers: never break them
    for col in ("production_db", "staging_db", "status", "model_version", "updated_at"):
        table.add_column(col)
    for c in clients:
        table.add_row(c.name, c.production_db, c.staging_db, c.status, c.model_version or "",
                      c.updated_at.isoformat(sep=" ", timespec="seconds"))
    Console().print(table)
    return 0


def cmd_set_status(settings: Settings, client: str, status: str, force: bool = False) -> int:
    try:
        c = registry.set_status(settings, client, status, changed_by=_changed_by(), force=force)
    except registry.RegistryError as e:
        raise CommandError(str(e)) from None
    Console().print(f"client [bold]{c.name}[/] is {c.status}")
    return 0
