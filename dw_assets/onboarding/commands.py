"""`dw clients list|show|activate|onboard|pause|resume|offboard`: the client lifecycle from the command line.

The work lives in `onboard`, `lifecycle`, `offboard` and `batch`; this module parses, prints and asks.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from dw_assets.cli import CommandError
from dw_assets.settings import Settings

from . import registry

# A drill/test hook: raise at a step (`land`, `land:after`, `7`) to check that a re-run resumes cleanly.
FAULT_ENV = "DW_ONBOARD_FAIL_AT"
SEVERITY_STYLE = {"breaking": "bold red", "additive": "yellow", "informational": "dim"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("clients", help="list and manage registered clients")
    sub = p.add_subparsers(dest="clients_command", metavar="ACTION")
    sub.required = True

    ls = sub.add_parser("list", help="list registered clients")
    ls.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    ls.add_argument("--status", choices=registry.STATUSES, action="append", help="only clients in this status")
    ls.set_defaults(func=lambda args, settings: cmd_list(settings, args.json, args.status))

    show = sub.add_parser("show", help="one client: registry row, options, onboarding steps, status history")
    show.add_argument("client")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=lambda args, settings: cmd_show(settings, args.client, args.json))

    act = sub.add_parser("activate", help="mark a client active (its changes flow into the lake)")
    act.add_argument("client")
    act.add_argument("--force", action="store_true", help="skip the lifecycle transition check")
    act.set_defaults(func=lambda args, settings: cmd_set_status(settings, args.client, "active", args.force))

    onb = sub.add_parser("onboard", help="validate, register and bring a client into the pipeline (resumable)")
    onb.add_argument("client", nargs="?")
    onb.add_argument("--production-db", metavar="DB", help="default: the registered one, else the client name")
    onb.add_argument("--staging-db", metavar="DB", help="default: the registered one, else <client>__staging")
    onb.add_argument("--from-file", metavar="CSV", help="onboard every client listed in this CSV file")
    onb.add_argument("--parallel", type=int, default=4, help="clients onboarded at once with --from-file (4)")
    onb.add_argument("--topic-partitions", type=int, help="partitions of the client's Kafka topics")
    onb.add_argument("--flush-records", type=int, help="landing: records per file")
    onb.add_argument("--flush-bytes", type=int, help="landing: value bytes per file")
    onb.add_argument("--idle-seconds", type=float, help="landing: flush a quiet partition after this long")
    onb.add_argument("--max-age-seconds", type=float, help="landing: flush a trickle after this long")
    onb.add_argument("--json", action="store_true", help="print the result as JSON")
    onb.set_defaults(func=cmd_onboard)

    pause = sub.add_parser("pause", help="stop capture and landing of one client (others unaffected)")
    pause.add_argument("client")
    pause.set_defaults(func=lambda args, settings: cmd_pause(settings, args.client))

    resume = sub.add_parser("resume", help="capture and land a paused client again (it is snapshotted again)")
    resume.add_argument("client")
    resume.set_defaults(func=lambda args, settings: cmd_resume(settings, args.client))

    off = sub.add_parser("offboard", help="remove a client's partition and topics (and with --drop-data its data)")
    off.add_argument("client")
    off.add_argument("--drop-data", action="store_true",
                     help="also delete its Delta tables, landing files and report pages")
    off.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    off.set_defaults(func=lambda args, settings: cmd_offboard(settings, args.client, args.drop_data, args.yes))


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


# ---- show ------------------------------------------------------------------------------------------------------


def client_overview(settings: Settings, client: str) -> dict[str, Any]:
    from .client_options import get_options
    from .steps import RECORDED_STEPS
    from .step_log import step_records

    c = registry.get_client(settings, client)
    records = step_records(settings, client)
    steps = [{"step": n, "state": records[n].state if n in records else "pending",
              "attempts": records[n].attempt if n in records else 0,
              "seconds": records[n].seconds if n in records else None,
              "finished_at": records[n].finished_at.isoformat(sep=" ", timespec="seconds")
              if n in records and records[n].finished_at else None,
              "summary": records[n].detail.get("summary") or records[n].detail.get("error", "") if n in records else ""}
             for n in RECORDED_STEPS]
    history = [{**h, "changed_at": h["changed_at"].isoformat(sep=" ", timespec="seconds")}
               for h in registry.status_history(settings, client)]
    return {**c.as_dict(), "options": get_options(settings, client).as_dict(),
            "onboarding_complete": all(s["state"] == "done" for s in steps), "steps": steps, "history": history}


def cmd_show(settings: Settings, client: str, as_json: bool) -> int:
    try:
        info = client_overview(settings, client)
    except registry.RegistryError as e:
        raise CommandError(str(e)) from None
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    console = Console()
    console.print(f"[bold]{escape(info['name'])}[/]: {info['status']}, production {info['production_db']}, "
                  f"staging {info['staging_db']}, model {info['model_version'] or '?'}, "
                  f"options {info['options'] or 'default'}")
    console.print(f"created {info['created_at']}, updated {info['updated_at']}; onboarding "
                  + ("complete" if info["onboarding_complete"] else "[yellow]incomplete[/]"))
    steps = RichTable(title="onboarding steps", title_justify="left")
    for col in ("step", "state", "attempts", "seconds", "finished", "detail"):
        steps.add_column(col, overflow="fold")
    for s in info["steps"]:
        secs = f"{s['seconds']:.2f}" if s["seconds"] is not None else ""
        steps.add_row(s["step"], s["state"], str(s["attempts"]), secs, s["finished_at"] or "", escape(s["summary"]))
    console.print(steps)
    hist = RichTable(title="status history", title_justify="left")
    for col in ("when", "from", "to", "by"):
        hist.add_column(col)
    for h in info["history"]:
        hist.add_row(h["changed_at"], h["old_status"] or "", h["new_status"], escape(h["changed_by"]))
    console.print(hist)
    return 0


# ---- onboard ---------------------------------------------------------------------------------------------------


def _options_from_args(args: argparse.Namespace):
    from .client_options import ClientOptions

    try:
        return ClientOptions(topic_partitions=args.topic_partitions, flush_records=args.flush_records,
                             flush_bytes=args.flush_bytes, idle_seconds=args.idle_seconds,
                             max_age_seconds=args.max_age_seconds)
    except registry.RegistryError as e:
        raise CommandError(str(e)) from None


def print_refusal(console: Console, report) -> None:
    """The refusal with its difference table (breaking first), as `dw drift` shows them."""
    console.print(f"[bold red]onboarding of {escape(report.client)} refused[/]: nothing was registered or created")
    for p in report.problems:
        console.print(f"  - {escape(p)}")
    rows = [("production", d) for d in report.production] + [("staging", d) for d in report.staging]
    if rows:
        t = RichTable(title=f"schema differences from the model ({report.production_db} / {report.staging_db})",
                      title_justify="left")
        for col in ("database", "severity", "kind", "table", "column", "model", "actual", "ddl to conform"):
            t.add_column(col, overflow="fold")
        for where, d in rows:
            t.add_row(where, f"[{SEVERITY_STYLE[d.severity]}]{d.severity}[/]", d.kind, d.table, d.column or "",
                      escape(d.old or ""), escape(d.new or ""), escape(d.ddl or ""))
        console.print(t)


def _fault_from_env():
    from .onboard import FaultPoint

    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    try:
        return FaultPoint.parse(spec)
    except ValueError as e:
        raise CommandError(f"{FAULT_ENV}: {e}") from None


def cmd_onboard(args: argparse.Namespace, settings: Settings) -> int:
    from .onboard import InjectedFault, OnboardingFailed, onboard_client
    from .progress import ConsoleObserver
    from .run_lock import ClientBusy
    from .validation import OnboardingRefused

    if args.from_file:
        if args.client or args.production_db or args.staging_db:
            raise CommandError("--from-file onboards the clients the file lists: give no client or databases")
        return cmd_onboard_file(settings, args.from_file, args.parallel, args.json)
    if not args.client:
        raise CommandError("name a client, or use --from-file")
    console = Console(stderr=args.json)
    try:
        result = onboard_client(settings, args.client, args.production_db, args.staging_db,
                                options=_options_from_args(args), run_by=_changed_by(),
                                observer=ConsoleObserver(console), fail_at=_fault_from_env())
    except OnboardingRefused as e:
        print_refusal(Console(stderr=True), e.report)
        raise CommandError(str(e)) from None
    except (OnboardingFailed, ClientBusy, InjectedFault, registry.RegistryError) as e:
        raise CommandError(str(e), code=1) from None
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    return 0


def cmd_onboard_file(settings: Settings, path: str, parallel: int, as_json: bool) -> int:
    from .batch import ClientsFileError, onboard_many, read_clients_file
    from .progress import ConsoleObserver
    from .validation import OnboardingRefused

    try:
        specs = read_clients_file(path)
    except ClientsFileError as e:
        raise CommandError(str(e)) from None
    console = Console(stderr=as_json)
    console.print(f"onboarding {len(specs)} client(s) from {escape(path)}, {parallel} at a time")
    result = onboard_many(settings, specs, parallel=parallel, run_by=_changed_by(),
                          observer=ConsoleObserver(console, prefix_client=True))
    if as_json:
        print(json.dumps({"seconds": round(result.seconds, 3), "clients_per_minute": round(result.clients_per_minute, 2),
                          "clients": [{"client": e.spec.client, "ok": e.ok, "seconds": round(e.seconds, 3),
                                       "error": str(e.error) if e.error else None} for e in result.entries]},
                         indent=2))
    else:
        t = RichTable(title=f"onboarding summary: {len(result.succeeded)} ok, {len(result.failed)} failed, "
                            f"{result.seconds:.1f} s ({result.clients_per_minute:.1f} clients/min)",
                      title_justify="left")
        for col in ("client", "result", "status", "seconds", "detail"):
            t.add_column(col, overflow="fold")
        for e in result.entries:
            if e.ok and e.result is not None:
                what = "already onboarded" if e.result.already_complete else f"{len(e.result.ran)} step(s) run"
                t.add_row(e.spec.client, "[green]ok[/]", e.result.status or "", f"{e.seconds:.1f}", what)
            else:
                kind = "refused" if isinstance(e.error, OnboardingRefused) else "failed"
                t.add_row(e.spec.client, f"[red]{kind}[/]", "", f"{e.seconds:.1f}", escape(str(e.error)))
        console.print(t)
        for e in result.failed:
            if isinstance(e.error, OnboardingRefused):
                print_refusal(console, e.error.report)
    return 0 if not result.failed else 1


# ---- pause / resume / offboard -----------------------------------------------------------------------------------


def cmd_pause(settings: Settings, client: str) -> int:
    from .lifecycle import pause_client
    from .run_lock import ClientBusy

    try:
        change = pause_client(settings, client, changed_by=_changed_by())
    except (registry.RegistryError, ClientBusy) as e:
        raise CommandError(str(e)) from None
    console = Console()
    console.print(f"client [bold]{client}[/] is paused (was {change.previous_status}): capture and landing skip it")
    if not change.capture_released:
        console.print("[yellow]warning:[/] the running capture service still lists its database; it lets go at "
                      "its next registry poll")
    return 0


def cmd_resume(settings: Settings, client: str) -> int:
    from .lifecycle import resume_client
    from .run_lock import ClientBusy

    try:
        resume_client(settings, client, changed_by=_changed_by())
    except (registry.RegistryError, ClientBusy) as e:
        raise CommandError(str(e)) from None
    Console().print(f"client [bold]{client}[/] is active again: capture snapshots it again, landing resumes")
    return 0


def cmd_offboard(settings: Settings, client: str, drop_data: bool, yes: bool) -> int:
    from .client_data import existing_data
    from .offboard import offboard_client
    from .run_lock import ClientBusy

    console = Console()
    try:
        row = registry.get_client(settings, client)
    except registry.RegistryError as e:
        raise CommandError(str(e)) from None
    if drop_data and not yes:
        found = existing_data(settings, client, row.production_db)
        console.print(f"This deletes the data of [bold]{escape(client)}[/] for good:")
        for loc in found.all or ["(no data directories found)"]:
            console.print(f"  {escape(loc)}")
        if not sys.stdin.isatty():
            raise CommandError("refusing to drop data without confirmation: pass --yes")
        if input(f"Type the client name ({client}) to confirm: ").strip() != client:
            raise CommandError("not confirmed: nothing changed")
    try:
        r = offboard_client(settings, client, drop_data=drop_data, changed_by=_changed_by())
    except (registry.RegistryError, ClientBusy) as e:
        raise CommandError(str(e)) from None
    console.print(f"client [bold]{escape(client)}[/] offboarded (was {r.previous_status}) in {r.seconds:.2f} s: "
                  f"partition {'removed' if r.partition_removed else 'absent'}, {len(r.topics_deleted)} topic(s) "
                  "deleted")
    if drop_data:
        console.print(f"deleted {len(r.dropped.all)} data location(s)")
    elif r.kept:
        console.print("data kept (still readable):")
        for loc in r.kept.all:
            console.print(f"  {escape(loc)}")
    if not r.landing_offsets_reset:
        console.print("[yellow]warning:[/] the landing group's offsets could not be deleted")
    if not r.capture_released:
        console.print("[yellow]warning:[/] the running capture service still lists its database")
    return 0
