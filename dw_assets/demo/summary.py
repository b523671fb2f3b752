"""What a demo run produced, per client: events captured (Kafka end offsets), landing files, silver rows, check
results (those Dagster recorded, plus a reconciliation and the exact silver = source comparison), report pages
and the freshness the demo measured. `render()` prints it; `as_dict()` is the JSON form.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from dw_assets.checks.reconciliation import reconcile
from dw_assets.checks.silver_equality import TableEquality, compare_silver_with_source
from dw_assets.lakehouse.landing_files import list_landing_files
from dw_assets.landing.lag import measure_lag
from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .freshness import FreshnessStats

PRODUCTION_SCHEMA = ("sources", "production_schema")
SCHEMA_CHECKS = ("production_conforms_to_model", "staging_matches_production")
SILVER_CHECKS = ("silver_matches_source", "silver_fresh")


@dataclass
class ClientSummary:
    client: str
    database: str
    workload_changes: int = 0
    events_captured: int = 0
    files_landed: int = 0
    silver_rows: int = 0
    equality: list[TableEquality] = field(default_factory=list)
    reconciliation: str = ""
    dagster_checks: dict[str, str] = field(default_factory=dict)  # "asset:check" -> PASSED/FAILED (+ when)
    report_pages: list[str] = field(default_factory=list)
    freshness: FreshnessStats = field(default_factory=FreshnessStats)

    @property
    def silver_equals_source(self) -> bool:
        return bool(self.equality) and all(t.equal for t in self.equality)

    def as_dict(self) -> dict[str, Any]:
        return {"client": self.client, "database": self.database, "workload_changes": self.workload_changes,
                "events_captured": self.events_captured, "files_landed": self.files_landed,
                "silver_rows": self.silver_rows, "silver_equals_source": self.silver_equals_source,
                "differences": [t.describe(self.client) for t in self.equality if not t.equal],
                "reconciliation": self.reconciliation, "dagster_checks": self.dagster_checks,
                "report_pages": self.report_pages, "freshness": self.freshness.as_dict()}


@dataclass
class DemoSummary:
    clients: list[ClientSummary]
    freshness: FreshnessStats
    seconds: float
    portfolio_pages: list[str] = field(default_factory=list)
    reports_index: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.clients) and all(c.silver_equals_source for c in self.clients)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 1), "freshness": self.freshness.as_dict(),
                "clients": [c.as_dict() for c in self.clients], "portfolio_pages": self.portfolio_pages,
                "reports_index": self.reports_index, "notes": self.notes}


def dagster_check_results(settings: Settings, clients: list[str], model: StandardModel) -> dict[str, dict[str, str]]:
    """client -> {"asset:check": "PASSED|FAILED"} from the latest evaluations the instance recorded."""
    import dagster as dg

    out: dict[str, dict[str, str]] = {c: {} for c in clients}
    keys = [dg.AssetCheckKey(dg.AssetKey(list(PRODUCTION_SCHEMA)), n) for n in SCHEMA_CHECKS]
    keys += [dg.AssetCheckKey(dg.AssetKey(["silver", t.name]), n) for t in model.tables for n in SILVER_CHECKS]
    instance = dg.DagsterInstance.from_config(str(Path(settings.dagster_home).resolve()))
    try:
        storage = instance.event_log_storage
        for key in keys:
            for rec in storage.get_asset_check_execution_history(key, limit=500):
                evaluation = rec.event.asset_check_evaluation if rec.event else None
                if evaluation is None or evaluation.partition not in out:
                    continue
                name = f"{key.asset_key.to_user_string()}:{key.name}"
                # History is newest first: keep the latest evaluation per client.
                out[evaluation.partition].setdefault(name, "PASSED" if evaluation.passed else "FAILED")
    finally:
        instance.dispose()
    return out


def collect_summary(settings: Settings, clients: dict[str, str], model: StandardModel, *,
                    freshness_by_client: dict[str, FreshnessStats], freshness: FreshnessStats,
                    workload_changes: dict[str, int], seconds: float, report_pages: dict[str, list[str]],
                    portfolio_pages: list[str], reports_index: str | None, notes: list[str]) -> DemoSummary:
    lags = measure_lag(settings, clients)
    try:
        checks = dagster_check_results(settings, list(clients), model)
    except Exception as e:  # noqa: BLE001 - the instance is informative here; equality decides the exit code
        checks = {c: {"dagster": f"not read: {e}"} for c in clients}
    out = []
    for client, database in clients.items():
        s = ClientSummary(client, database, workload_changes=workload_changes.get(client, 0),
                          freshness=freshness_by_client.get(client, FreshnessStats()),
                          report_pages=report_pages.get(client, []), dagster_checks=checks.get(client, {}))
        lag = lags.get(client)
        s.events_captured = sum(p.end_offset for p in lag.partitions) if lag else 0
        s.files_landed = len(list_landing_files(settings, database))
        s.equality = compare_silver_with_source(settings, client, model, database)
        s.silver_rows = sum(t.silver_rows for t in s.equality)
        rec = reconcile(settings, client, model, rounds=1, settle_seconds=0)
        s.reconciliation = "PASSED" if rec.passed else \
            "FAILED: " + "; ".join(t.summary() for t in rec.failed_tables)
        out.append(s)
    return DemoSummary(out, freshness, seconds, portfolio_pages, reports_index, notes)


def render(summary: DemoSummary, console: Console) -> None:
    t = RichTable(title="dw demo: summary")
    for col in ("client", "changes", "events captured", "files landed", "silver rows", "silver = source",
                "reconcile", "Dagster checks", "freshness p50/p95"):
        t.add_column(col, no_wrap=True)
    for c in summary.clients:
        checks = c.dagster_checks
        passed = sum(1 for v in checks.values() if v == "PASSED")
        t.add_row(c.client, f"{c.workload_changes:,}", f"{c.events_captured:,}", str(c.files_landed),
                  f"{c.silver_rows:,}", "[green]yes[/]" if c.silver_equals_source else "[red]NO[/]",
                  c.reconciliation.split(":")[0],
                  f"{passed}/{len(checks)} passed" if checks else "none recorded",
                  _pct(c.freshness))
    console.print(t)
    for c in summary.clients:
        for d in (x for x in c.equality if not x.equal):
            console.print(f"[red]difference[/] {d.describe(c.client)}")
        failed = [k for k, v in c.dagster_checks.items() if v != "PASSED"]
        if failed:
            console.print(f"[yellow]{c.client}[/]: checks not passed: {', '.join(failed)}")
        if c.report_pages:
            console.print(f"{c.client} reports: {Path(c.report_pages[0]).parent}/ ({len(c.report_pages)} pages)")
    if summary.portfolio_pages:
        console.print(f"portfolio reports: {Path(summary.portfolio_pages[0]).parent}/")
    if summary.reports_index:
        console.print(f"reports index: {summary.reports_index}")
    console.print(f"end-to-end freshness (commit -> visible in silver, measured by the demo): "
                  f"[bold]{summary.freshness.describe()}[/]")
    for n in summary.notes:
        console.print(f"note: {n}")
    verdict = "[bold green]OK[/]: every silver table equals its source" if summary.ok else \
        "[bold red]FAILED[/]: silver differs from the source (see above)"
    console.print(verdict)


def _pct(f: FreshnessStats) -> str:
    return "-" if not f.samples else f"{f.p50:.1f}s / {f.p95:.1f}s"
