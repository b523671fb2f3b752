"""Per-client schema drift (production vs model, staging vs production) and the cross-client summary.

Feeds `dw drift` and the `checks/drift_summary` asset, so the command line and Dagster show the same data.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .conformance import (
    ClientDatabases,
    Snapshots,
    client_databases,
    production_conformance,
    staging_conformance,
)
from .schema_diff import Difference, severity_counts
from .schema_snapshot import snapshot_databases

SEVERITY_STYLE = {"breaking": "bold red", "additive": "yellow", "informational": "dim"}


@dataclass
class ClientDrift:
    client: str
    production_db: str
    staging_db: str
    model_version: str | None  # as recorded in the registry
    status: str | None
    production: list[Difference] = field(default_factory=list)  # vs the model
    staging: list[Difference] = field(default_factory=list)  # staging changes production does not have yet
    missing_production: bool = False

    @property
    def breaking(self) -> bool:
        return any(d.is_breaking for d in self.production)

    @property
    def conforming(self) -> bool:
        return not self.breaking

    def as_dict(self) -> dict[str, Any]:
        return {"client": self.client, "production_db": self.production_db, "staging_db": self.staging_db,
                "model_version": self.model_version, "status": self.status, "conforming": self.conforming,
                "breaking": self.breaking, "missing_production": self.missing_production,
                "counts": severity_counts(self.production),
                "production": [d.as_dict() for d in self.production],
                "staging": [d.as_dict() for d in self.staging]}


def client_drift(settings: Settings, client: str | ClientDatabases, model: StandardModel | None = None,
                 snapshots: Snapshots | None = None) -> ClientDrift:
    dbs = client if isinstance(client, ClientDatabases) else client_databases(settings, client)
    prod = production_conformance(settings, dbs, model, snapshots)
    staging = staging_conformance(settings, dbs, snapshots)
    return ClientDrift(dbs.client, dbs.production_db, dbs.staging_db, dbs.model_version, dbs.status,
                       prod.differences, staging.differences, prod.missing_database)


def checked_clients(settings: Settings) -> list[ClientDatabases]:
    """Every registered client that is not offboarded."""
    from dw_assets.onboarding.registry import STATUSES, list_clients

    return [ClientDatabases(c.name, c.production_db, c.staging_db, c.model_version, c.status)
            for c in list_clients(settings, status=[s for s in STATUSES if s != "offboarded"])]


def drift_report(settings: Settings, clients: list[str] | None = None, model: StandardModel | None = None
                 ) -> list[ClientDrift]:
    model = model or settings.standard_model()
    targets = [client_databases(settings, c) for c in clients] if clients else checked_clients(settings)
    # Every database's schema in a few bulk information_schema reads, then the diffs in Python: per-client
    # reads cost MariaDB a privilege check and a table open per query (minutes at 500 clients).
    snapshots = snapshot_databases(settings, [d for t in targets for d in (t.production_db, t.staging_db)])
    return [client_drift(settings, c, model, snapshots) for c in targets]


def drift_summary(report: list[ClientDrift], model: StandardModel) -> dict[str, Any]:
    """How many clients on which model version, how many conform (no breaking difference) to `model`."""
    versions = Counter(r.model_version or "unknown" for r in report)
    conforming_by_version = Counter(r.model_version or "unknown" for r in report if r.conforming)
    return {
        "model_version": model.version,
        "clients": len(report),
        "conforming": sum(r.conforming for r in report),
        "breaking": sum(r.breaking for r in report),
        "staging_ahead": sum(bool(r.staging) for r in report),
        "by_model_version": {v: {"clients": n, "conforming": conforming_by_version[v]}
                             for v, n in sorted(versions.items())},
        "non_conforming_clients": [r.client for r in report if r.breaking],
    }


def summary_markdown(report: list[ClientDrift]) -> str:
    lines = ["| client | model version | status | conforming | breaking | additive | informational | staging ahead |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report:
        c = severity_counts(r.production)
        lines.append(f"| {r.client} | {r.model_version or '—'} | {r.status or '—'} | {'yes' if r.conforming else 'NO'}"
                     f" | {c['breaking']} | {c['additive']} | {c['informational']} | {len(r.staging)} |")
    return "\n".join(lines)


def print_report(report: list[ClientDrift], model: StandardModel, console: Console | None = None) -> None:
    console = console or Console()
    for r in report:
        verdict = "[green]conforms[/]" if r.conforming else "[bold red]BREAKING[/]"
        title = f"{r.client} (production {r.production_db}, model {r.model_version or '?'}): {verdict}"
        if not r.production and not r.staging:
            console.print(f"{title}: no differences")
            continue
        t = RichTable(title=title, title_justify="left")
        for col in ("where", "severity", "kind", "table", "column", "old", "new", "ddl"):
            t.add_column(col, overflow="fold")
        for where, diffs in (("production vs model", r.production), ("staging vs production", r.staging)):
            for d in diffs:
                t.add_row(where, f"[{SEVERITY_STYLE[d.severity]}]{d.severity}[/]", d.kind, d.table, d.column or "",
                          d.old or "", d.new or "", d.ddl or "")
        console.print(t)
    s = drift_summary(report, model)
    console.print(f"{s['clients']} client(s): {s['conforming']} conforming, {s['breaking']} with breaking "
                  f"differences, {s['staging_ahead']} with staging ahead of production")
