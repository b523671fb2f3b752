"""The onboarding steps, in order. Each is idempotent on its own and returns a JSON-able detail for the step log;
`summary` in the detail is the one line shown next to the step's time.

validate -> register -> topics -> partition -> tables -> snapshot -> land -> apply -> reports -> activate
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from dw_assets.engine.dispatch import apply_with_engine, ensure_tables_with_engine
from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from . import dagster_partitions, registry
from .client_options import ClientOptions, get_options, set_options
from .client_snapshot import await_snapshot, is_snapshotted, prepare_snapshot
from .kafka_topics import create_client_topics
from .step_log import StepRecord
from .validation import ValidationReport, validate_onboarding


@dataclass
class OnboardingContext:
    settings: Settings
    client: str
    production_db: str | None  # as requested; resolved by `validate`
    staging_db: str | None
    model: StandardModel
    options: ClientOptions
    run_by: str  # who or what runs it, recorded in the status history and the step log
    records: dict[str, StepRecord] = field(default_factory=dict)  # the step log when this attempt began
    validation: ValidationReport | None = None
    instance: Any = None  # a DagsterInstance inside a Dagster run; None: the one at settings.dagster_home
    snapshot_timeout_s: float = 900.0
    landing_busy_timeout_s: float = 120.0

    @property
    def database(self) -> str:
        assert self.validation is not None, "validate runs first"
        return self.validation.production_db


Detail = dict[str, Any]


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[OnboardingContext], Detail]
    always: bool = False  # read-only checks run on every attempt and are not recorded


def validate(ctx: OnboardingContext) -> Detail:
    from dw_assets.reports.catalog import load_reports

    # Report SQL that does not fit the model fails here (naming file and table), before anything is registered.
    load_reports(ctx.model)
    report = validate_onboarding(ctx.settings, ctx.client, ctx.production_db, ctx.staging_db, ctx.model)
    ctx.validation = report
    warnings = [f"{where}: {d.kind} {d.table}{'.' + d.column if d.column else ''}" for where, d in report.warnings]
    return {"summary": f"{report.production_db} / {report.staging_db} follow model {ctx.model.version}"
                       + (f"; {len(warnings)} additive difference(s)" if warnings else ""),
            "production_db": report.production_db, "staging_db": report.staging_db, "warnings": warnings}


def register(ctx: OnboardingContext) -> Detail:
    s, v = ctx.settings, ctx.validation
    assert v is not None
    try:
        row: registry.Client | None = registry.get_client(s, ctx.client)
    except registry.RegistryError:
        row = None
    if row is None or row.status in ("seeded", "offboarded"):
        # `replace` re-points a seeded or offboarded row at the databases validated above and records the change.
        row = registry.register_client(s, ctx.client, v.production_db, v.staging_db, status="onboarding",
                                       model_version=ctx.model.version, changed_by=ctx.run_by,
                                       replace=row is not None)
        action = "registered"
    else:
        action = f"already registered ({row.status})"
    options = set_options(s, ctx.client, ctx.options) if ctx.options.as_dict() else get_options(s, ctx.client)
    return {"summary": f"{action}, model {row.model_version}, options {options.as_dict() or 'default'}",
            "status": row.status, "model_version": row.model_version, "options": options.as_dict()}


def topics(ctx: OnboardingContext) -> Detail:
    partitions = get_options(ctx.settings, ctx.client).partitions(ctx.settings)
    counts, created = create_client_topics(ctx.settings, ctx.database, ctx.model, partitions)
    return {"summary": f"{len(counts)} topics ({len(created)} created, {partitions} partitions each)",
            "topics": counts, "created": created}


def partition(ctx: OnboardingContext) -> Detail:
    added = dagster_partitions.add_partition(ctx.settings, ctx.client, ctx.instance)
    return {"summary": "partition added" if added else "partition existed", "added": added,
            "dagster_home": ctx.settings.dagster_home}


def tables(ctx: OnboardingContext) -> Detail:
    created = ensure_tables_with_engine(ctx.settings, ctx.client, ctx.model)
    return {"summary": f"{len(created)} Delta table(s) created", "created": created}


def snapshot(ctx: OnboardingContext) -> Detail:
    s, db = ctx.settings, ctx.database
    row = registry.get_client(s, ctx.client)
    if row.status == "active" and is_snapshotted(s, db):
        return {"summary": "snapshotted earlier", "mode": "already snapshotted", "events": 0}
    requested = prepare_snapshot(s, db, active=row.status == "active")
    if row.status != "active":
        # Activation is what tells the capture service to capture (and first snapshot) the database.
        registry.set_status(s, ctx.client, "active", changed_by=f"{ctx.run_by} (snapshot)")
    outcome = await_snapshot(s, db, timeout_s=ctx.snapshot_timeout_s)
    return {"summary": f"{outcome.mode}: {outcome.events} event(s)", "mode": outcome.mode, "events": outcome.events,
            "resnapshot_requested": requested}


def land(ctx: OnboardingContext) -> Detail:
    from dw_assets.ingest import land_or_await

    policy = get_options(ctx.settings, ctx.client).flush_policy()
    # Active clients are landed by the ingest service or a sensor run too: then wait until they landed it all.
    report = land_or_await(ctx.settings, ctx.client, ctx.database, policy=policy,
                           timeout_s=ctx.landing_busy_timeout_s)
    if report is None:
        return {"summary": "landed by the running ingest service or landing run", "landed_by_other": True}
    if not report.complete:
        raise RuntimeError(f"landing of {ctx.client} stopped before the end offsets: {report.summary()}")
    return {"summary": f"{report.records} record(s) in {len(report.files)} file(s)", **report.summary()}


def apply(ctx: OnboardingContext) -> Detail:
    result = apply_with_engine(ctx.settings, ctx.client, ctx.model, database=ctx.database)
    if not result.ok:
        raise RuntimeError(f"apply failed for {', '.join(f'{t}: {e}' for t, e in result.failed.items())}")
    rows = {t: r.silver.inserted for t, r in result.tables.items() if r.silver.inserted}
    return {"summary": f"batch {result.batch}: {result.events} event(s), {sum(rows.values())} silver row(s) inserted",
            "batch": result.batch, "events": result.events, "inserted": rows}


def reports(ctx: OnboardingContext) -> Detail:
    try:
        from dw_assets.reports.build import build_client_reports
    except ImportError as e:  # the reports stage is optional for onboarding: say so, do not fail
        return {"summary": f"skipped: reports stage not available ({e})", "skipped": True}
    from dw_assets.reports.build import no_reports_reason

    why = no_reports_reason(ctx.model)
    if why:  # a model without reports: nothing to build, and onboarding goes on to activate
        return {"summary": f"skipped: {why}", "skipped": True}
    results, pages = build_client_reports(ctx.settings, ctx.client, model=ctx.model)
    assets: dict[tuple[str, ...], dict[str, Any]] = {
        ("gold", r.name): {"dagster/row_count": r.table.num_rows, "gold_table": r.url, "source": ctx.run_by}
        for r in results}
    assets[("reports", "client_reports")] = {"pages": len(pages), "source": ctx.run_by}
    dagster_partitions.report_materializations(ctx.settings, ctx.client, assets, ctx.instance)
    return {"summary": f"{len(results)} gold table(s), {len(pages)} page(s)",
            "gold": {r.name: r.table.num_rows for r in results}, "pages": [str(p) for p in pages]}


def activate(ctx: OnboardingContext) -> Detail:
    row = registry.get_client(ctx.settings, ctx.client)
    if row.status == "paused":  # paused by someone while onboarding ran: respect it
        return {"summary": "left paused (paused during onboarding)", "status": row.status}
    row = registry.set_status(ctx.settings, ctx.client, "active", changed_by=ctx.run_by)
    return {"summary": "active", "status": row.status}


STEPS: tuple[Step, ...] = (
    Step("validate", "validate name, databases and schema", validate, always=True),
    Step("register", "register in the control database", register),
    Step("topics", "create Kafka topics", topics),
    Step("partition", "add Dagster partition", partition),
    Step("tables", "create Delta tables", tables),
    Step("snapshot", "snapshot through the capture service", snapshot),
    Step("land", "land the snapshot", land),
    Step("apply", "apply to bronze and silver", apply),
    Step("reports", "materialize reports", reports),
    Step("activate", "set status active", activate),
)
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)
RECORDED_STEPS: tuple[str, ...] = tuple(s.name for s in STEPS if not s.always)
