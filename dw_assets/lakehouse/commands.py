"""`dw lake init|apply|maintain|migrate`: create a client's lake tables, apply its new landing files, maintain the
lake, migrate an old table layout."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from rich.console import Console
from rich.table import Table as RichTable

from dw_assets.cli import CommandError
from dw_assets.identifiers import validate_client_name
from dw_assets.settings import Settings

from .apply import ApplyResult
from .maintenance import DEFAULT_RETENTION_HOURS, lake_clients, maintain_lake
from .migration import migrate_client
from .quarantine import quarantined_clients
from .quarantine_resolve import discard, retry, summarize


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("lake", help="Delta lake: create tables, apply landing files, maintain")
    sub = p.add_subparsers(dest="lake_command", metavar="ACTION")
    sub.required = True

    init = sub.add_parser("init", help="create the client's missing lake tables from the model (idempotent)")
    init.add_argument("--client", required=True)
    init.set_defaults(func=lambda args, settings: cmd_init(settings, args.client))

    ap = sub.add_parser("apply", help="apply the client's new landing files to bronze and silver")
    ap.add_argument("--client", required=True)
    ap.add_argument("--database", help="the client's source database (default: the client name)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.set_defaults(func=lambda args, settings: cmd_apply(settings, args.client, args.database, args.json))

    qr = sub.add_parser("quarantine", help="changes that could not be applied: list, retry, discard")
    qsub = qr.add_subparsers(dest="quarantine_command", metavar="ACTION")
    qsub.required = True
    for action, text in (("list", "what waits in quarantine, per client and table"),
                         ("retry", "re-decode with the current model and code and apply what now converts"),
                         ("discard", "drop the failed changes (kept as discarded) and apply those held behind them")):
        q = qsub.add_parser(action, help=text)
        q.add_argument("--client", help="only this client (default: every client with a quarantine)")
        q.add_argument("--table", action="append", help="only this table (repeatable)")
        if action != "list":
            q.add_argument("--database", help="the client's source database (default: the client name)")
        q.set_defaults(func=lambda args, settings: cmd_quarantine(
            settings, args.quarantine_command, args.client, args.table, getattr(args, "database", None)))

    mt = sub.add_parser("maintain", help="compact and vacuum every client's tables (or the given ones)")
    mt.add_argument("--client", action="append", help="only this client (repeatable)")
    mt.add_argument("--retention-hours", type=int, default=DEFAULT_RETENTION_HOURS)
    mt.add_argument("--zorder", action="store_true", help="Z-order silver by primary key instead of compacting")
    mt.set_defaults(func=lambda args, settings: cmd_maintain(settings, args.client, args.retention_hours, args.zorder))

    mg = sub.add_parser("migrate", help="rewrite tables of the old DECIMAL `_dw_seq` layout (apply also does it)")
    mg.add_argument("--client", action="append", help="only this client (repeatable; default every lake client)")
    mg.set_defaults(func=lambda args, settings: cmd_migrate(settings, args.client))


def cmd_init(settings: Settings, client: str) -> int:
    validate_client_name(client)
    from dw_assets.engine.dispatch import ensure_tables_with_engine

    created = ensure_tables_with_engine(settings, client, settings.standard_model())
    Console().print(f"{len(created)} table(s) created for {client}" + "".join(f"\n  {u}" for u in created))
    return 0


def cmd_apply(settings: Settings, client: str, database: str | None, as_json: bool) -> int:
    validate_client_name(client)
    from dw_assets.engine.dispatch import apply_with_engine

    r = apply_with_engine(settings, client, settings.standard_model(), database=database)
    if as_json:
        print(json.dumps(_as_json(r), indent=2, default=str))
    else:
        _print(r)
    if r.failed:
        raise CommandError("apply failed for " + "; ".join(f"{t}: {e}" for t, e in r.failed.items()))
    return 0


def _as_json(r: ApplyResult) -> dict:
    d = asdict(r)
    for t in d["tables"].values():
        for part in ("silver", "history"):
            if t.get(part):
                t[part].pop("metrics", None)
    return d


def _print(r: ApplyResult) -> None:
    table = RichTable(title=f"lake apply {r.client}: batch {r.batch}, {r.files} file(s), {r.events} event(s), "
                            f"{r.seconds:.2f} s")
    table.add_column("table", no_wrap=True)  # names are identifiers: never break them
    for col in ("bronze rows", "duplicates", "inserted", "updated", "deleted", "ignored", "new columns", "status"):
        table.add_column(col)
    for t in r.tables.values():
        table.add_row(t.table, str(t.bronze_rows), str(t.bronze_duplicates), str(t.silver.inserted),
                      str(t.silver.updated), str(t.silver.deleted), str(t.silver.ignored), ", ".join(t.added_columns),
                      "ok" if t.ok else f"[red]{t.error}[/]")
    Console().print(table)


def cmd_quarantine(settings: Settings, action: str, client: str | None, tables: list[str] | None,
                   database: str | None) -> int:
    if client:
        validate_client_name(client)
    model = settings.standard_model()
    unknown = sorted(set(tables or []) - set(model.table_names))
    if unknown:
        raise CommandError(f"table(s) not in the model: {', '.join(unknown)}")
    names = list(tables or model.table_names)
    clients = [client] if client else quarantined_clients(settings)
    out = RichTable(title=f"lake quarantine {action}")
    if action == "list":
        for col in ("client", "table", "failed", "held", "discarded", "first failed change"):
            out.add_column(col, no_wrap=col in ("client", "table"))
        waiting = 0
        for c in clients:
            for s in summarize(settings, c, names):
                waiting += s.open
                where = ", ".join(f"{k}={v}" for k, v in s.first_coordinates.items())
                out.add_row(c, s.table, str(s.failed), str(s.held + s.retrying), str(s.discarded),
                            f"{s.first_error}\n{where}" if s.first_error else "")
        Console().print(out)
        Console().print(f"{waiting} change(s) waiting")
        return 0
    run = retry if action == "retry" else discard
    for col in ("client", "table", "taken", "applied", "still failed", "still held", "status"):
        out.add_column(col, no_wrap=col in ("client", "table"))
    remaining = 0
    for c in clients:
        for r in run(settings, c, model, names, database=database if client else None):
            remaining += r.still_failed + r.still_held + (r.taken if r.error else 0)
            out.add_row(c, r.table, str(r.taken), str(r.applied), str(r.still_failed), str(r.still_held),
                        f"[red]{r.error}[/]" if r.error else "ok")
    Console().print(out)
    if remaining:
        raise CommandError(f"{remaining} change(s) still in quarantine (see `dw lake quarantine list`)")
    return 0


def cmd_maintain(settings: Settings, clients: list[str] | None, retention_hours: int, zorder: bool) -> int:
    for c in clients or []:
        validate_client_name(c)
    try:
        results = maintain_lake(settings, clients, retention_hours=retention_hours, z_order_by_key=zorder)
    except RuntimeError as e:
        raise CommandError(str(e)) from None
    for r in results:
        before = sum(t.files_before for t in r.tables)
        after = sum(t.files_after for t in r.tables)
        vac = sum(t.files_vacuumed for t in r.tables)
        Console().print(f"{r.client}: {len(r.tables)} table(s), files {before} -> {after}, {vac} vacuumed")
    return 0


def cmd_migrate(settings: Settings, clients: list[str] | None) -> int:
    for c in clients or []:
        validate_client_name(c)
    model = settings.standard_model()
    for client in clients or lake_clients(settings):
        r = migrate_client(settings, client, model, check_all=True)
        Console().print(f"{client}: {len(r.migrated)} table(s) migrated, {r.rows} row(s)"
                        + "".join(f"\n  {u}" for u in r.migrated))
    return 0
