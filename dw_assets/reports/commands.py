"""`dw reports build [--client X ...]`: gold tables and HTML reports for clients and the portfolio."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from dw_assets.settings import Settings

from .gold import select_reports
from .render import format_lag

console = Console()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("reports", help="gold tables and HTML reports from silver")
    sub = p.add_subparsers(dest="reports_command", metavar="COMMAND")
    sub.required = True
    b = sub.add_parser("build", help="compute gold tables and write HTML reports (default: all active clients "
                                     "and the portfolio)")
    b.add_argument("--client", action="append", dest="clients", metavar="NAME",
                   help="only this client (repeatable); without it: every client of the registry in --status")
    b.add_argument("--status", default="active", help="registry status of the clients to build (default: active)")
    b.add_argument("--report", action="append", dest="reports", metavar="NAME", help="only this report (repeatable)")
    b.add_argument("--no-portfolio", action="store_true", help="skip the cross-client portfolio reports")
    b.set_defaults(func=lambda args, settings: cmd_build(args, settings))
    from .live.commands import register as register_live  # `serve` and `tokens`: the live report server

    register_live(sub)


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    from dw_assets.cli import CommandError
    from dw_assets.identifiers import validate_client_name

    from .build import build_reports

    from .build import no_reports_reason

    model = settings.standard_model()
    why = no_reports_reason(model)
    if why:
        console.print(f"no reports to build: {why}")
        return 0
    try:
        select_reports(args.reports, model)
    except KeyError as e:
        raise CommandError(str(e.args[0])) from None
    if args.clients:
        clients = [validate_client_name(c) for c in args.clients]
    else:
        from dw_assets.onboarding.registry import list_clients

        clients = [c.name for c in list_clients(settings, status=args.status)]
        if not clients:
            raise CommandError(f"no clients with status {args.status!r} in the registry (use --client NAME)")
    summary = build_reports(settings, clients, portfolio=not args.no_portfolio, reports=args.reports, model=model)
    out = Table("scope", "report", "rows", "newest source change lag", "seconds")
    for scope, results in summary.results.items():
        for r in results:
            out.add_row(scope, r.name, str(r.table.num_rows), format_lag(r.lag_seconds), f"{r.seconds:.2f}")
    console.print(out)
    for scope, why in summary.skipped.items():
        console.print(f"[yellow]skipped {scope}[/]: {why}")
    console.print(f"index: {summary.index}")
    return 1 if summary.skipped and not summary.results else 0
