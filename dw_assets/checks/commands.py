"""`dw drift`: schema drift per client (exit 1 when a difference is breaking); `dw reconcile [--repair]`: silver
against the source per client and table (exit 1 while a difference remains), repairing by key on request."""
from __future__ import annotations

import argparse
import json

from dw_assets.cli import CommandError
from dw_assets.settings import Settings

from .drift_report import drift_report, drift_summary, print_report


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("drift", help="schema drift of client databases vs the model (exit 1 if breaking)")
    p.add_argument("--client", action="append", help="only this client (repeatable); default: all registered")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=lambda args, settings: cmd_drift(settings, args.client, args.json))
    r = subparsers.add_parser("reconcile", help="compare silver with the source; --repair re-reads differing keys")
    r.add_argument("--client", action="append", help="only this client (repeatable); default: all registered")
    r.add_argument("--table", action="append", help="only this model table (repeatable); default: all")
    r.add_argument("--repair", action="store_true",
                   help="apply the differing keys from a consistent snapshot of the source as corrections")
    r.add_argument("--rounds", type=int, default=3, help="check rounds before a key counts as differing (3)")
    r.add_argument("--settle", type=float, default=5.0, help="seconds between rounds for changes in flight (5)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=lambda args, settings: cmd_reconcile(settings, args))


def cmd_drift(settings: Settings, clients: list[str] | None, as_json: bool) -> int:
    from dw_assets.onboarding.registry import RegistryError

    model = settings.standard_model()
    try:
        report = drift_report(settings, clients, model)
    except RegistryError as e:
        raise CommandError(str(e)) from None
    if as_json:
        print(json.dumps({"summary": drift_summary(report, model), "clients": [r.as_dict() for r in report]},
                         indent=2, default=str))
    else:
        print_report(report, model)
    return 1 if any(r.breaking for r in report) else 0


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:

    from .drift_report import checked_clients
    from .freshness import applied_ts_by_table
    from .reconciliation import reconcile
    from .repair import RepairError, repair_client

    model = settings.standard_model()
    unknown = sorted(set(args.table or []) - set(model.table_names))
    if unknown:
        raise CommandError(f"--table {', '.join(unknown)}: not in the model (tables: {', '.join(model.table_names)})")
    if args.rounds < 1 or args.settle < 0:
        raise CommandError("--rounds must be at least 1 and --settle not negative")
    clients = args.client or [c.client for c in checked_clients(settings)]
    out, still = [], 0
    for client in clients:
        check = dict(tables=args.table, rounds=args.rounds, settle_seconds=args.settle,
                     watermark=lambda c=client: applied_ts_by_table(settings, c, model))
        if args.repair:
            try:
                res = repair_client(settings, client, model, **check)
            except RepairError as e:
                raise CommandError(str(e)) from None
            final = res.after or res.found
            out.append({"client": client, "repaired": res.corrections, "landing_file": res.landing_file,
                        "binlog": f"{res.binlog_file}:{res.binlog_pos}" if res.binlog_file else None,
                        "passed": res.passed, "tables": [t.summary() for t in final.tables]})
            line = res.summary()
        else:
            final = reconcile(settings, client, model, **check)
            out.append({"client": client, "passed": final.passed, "tables": [t.summary() for t in final.tables]})
            line = f"{client}: " + ("silver equals the source" if final.passed else
                                    "; ".join(t.summary() for t in final.failed_tables))
        still += not final.passed
        if not args.json:
            print(line)
    if args.json:
        print(json.dumps(out, indent=2))
    return 1 if still else 0
