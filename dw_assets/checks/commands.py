"""`dw drift [--client X] [--json]`: schema drift per client; exit code 1 when any difference is breaking."""
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


def cmd_drift(settings: Settings, clients: list[str] | None, as_json: bool) -> int:
    from dw_assets.onboarding.registry import RegistryError

    try:
        report = drift_report(settings, clients)
    except RegistryError as e:
        raise CommandError(str(e)) from None
    if as_json:
        print(json.dumps({"summary": drift_summary(report), "clients": [r.as_dict() for r in report]},
                         indent=2, default=str))
    else:
        print_report(report)
    return 1 if any(r.breaking for r in report) else 0
