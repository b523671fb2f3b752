"""Dagster wiring of the checks: the production schema asset with its conformance checks, the silver checks,
the sensor that runs the schema checks for every client without materializing data, and the drift summary.

The logic lives in `dw_assets.checks`; every check sends its findings through `checks.alerts` (one alert per
client and change, plus one when it resolves) and never fails because alerting failed.
"""


import dagster as dg

from dw_assets.checks import alerts
from dw_assets.checks.conformance import client_databases, production_conformance, staging_conformance
from dw_assets.checks.drift_report import drift_report, drift_summary, summary_markdown
from dw_assets.checks.freshness import DEFAULT_MAX_AGE_SECONDS, applied_ts_by_table, check_freshness
from dw_assets.checks.reconciliation import reconcile
from dw_assets.checks.repair import repair_client
from dw_assets.checks.schema_diff import differences_markdown
from dw_assets.checks.schema_snapshot import SnapshotError, snapshot_database
from dw_assets.lakehouse.quarantine_resolve import check_quarantine
from dw_assets.defs.reports import refresh_cron
from dw_assets.partitions import clients_partitions
from dw_assets.resources import DwSettings
from dw_assets.settings import Settings, load_settings

PRODUCTION_SCHEMA = dg.AssetKey(["sources", "production_schema"])
DRIFT_SUMMARY = dg.AssetKey(["checks", "drift_summary"])
CLIENT_TAG = "dw/client"  # the per-client run concurrency key of dagster.yaml
SCHEMA_CHECK_INTERVAL_SECONDS = 300
RECONCILE_ROUNDS, RECONCILE_SETTLE_SECONDS = 3, 5.0
# Reconciliation reads whole tables (counts and checksums on both sides; `dw bench reconcile` measures it): every
# 5 minutes per client by default (DW_RECONCILE_CRON; the automation sensor evaluates it), and on demand from
# the UI. With DW_RECONCILE_REPAIR=1 it also repairs what it confirms.
RECONCILE_CRON = refresh_cron("DW_RECONCILE_CRON", "*/5 * * * *")
SILVER_CHECK_SCHEDULE = dg.AutomationCondition.cron_tick_passed(RECONCILE_CRON) & ~dg.AutomationCondition.in_progress()


@dg.asset(
    key=PRODUCTION_SCHEMA, group_name="sources", owners=["team:data-platform"], kinds={"mariadb"}, partitions_def=clients_partitions,
    description="The client's production schema read from information_schema (least-privilege cdc role). "
                "Bronze and silver depend on it, so its blocking conformance check gates them per client.",
)
def production_schema(context: dg.AssetExecutionContext, dw: DwSettings) -> dg.MaterializeResult:
    settings = dw.load()
    dbs = client_databases(settings, context.partition_key)
    try:
        snap = snapshot_database(settings, dbs.production_db)
    except SnapshotError as e:
        raise dg.Failure(str(e)) from None
    rows = ["| table | columns | primary key |", "|---|---|---|"]
    rows += [f"| {t.name} | {len(t.columns)} | {', '.join(t.primary_key)} |" for t in snap.tables]
    return dg.MaterializeResult(metadata={
        "database": dbs.production_db, "tables": len(snap.tables),
        "columns": sum(len(t.columns) for t in snap.tables), "schema": dg.MetadataValue.md("\n".join(rows)),
    })


def _alert(settings: Settings, client: str, check: str, findings: list[alerts.Finding]) -> dict[str, int]:
    out = alerts.process_findings(settings, client, check, findings)
    return {"alerts_fired": len(out.fired), "alerts_resolved": len(out.resolved),
            "alerts_failed": len(out.failed)}


@dg.asset_check(
    asset=PRODUCTION_SCHEMA, name="production_conforms_to_model", blocking=True, partitions_def=clients_partitions,
    description="ERROR (blocking) when the client's production schema differs from the model in a way the "
                "pipeline cannot apply; stops bronze/silver for this client only.",
)
def production_conforms_to_model(context: dg.AssetCheckExecutionContext, dw: DwSettings) -> dg.AssetCheckResult:
    settings = dw.load()
    client = context.partition_key
    result = production_conformance(settings, client)
    reported = [d for d in result.differences if d.severity != "informational"]
    sent = _alert(settings, client, "production_conforms_to_model",
                  alerts.findings_from_differences(result.breaking, "ERROR"))
    return dg.AssetCheckResult(
        passed=result.conforming, severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(result.breaking)} breaking difference(s) from {result.reference}",
        metadata={**result.counts, **sent, "database": result.database, "reference": result.reference,
                  "differences": dg.MetadataValue.md(differences_markdown(reported)),
                  "ddl": dg.MetadataValue.md("```sql\n" + ";\n".join(d.ddl for d in result.breaking if d.ddl)
                                             + "\n```")},
    )


@dg.asset_check(
    asset=PRODUCTION_SCHEMA, name="staging_matches_production", partitions_def=clients_partitions,
    description="WARN when staging has schema changes production does not have yet, with the DDL to apply them.",
)
def staging_matches_production(context: dg.AssetCheckExecutionContext, dw: DwSettings) -> dg.AssetCheckResult:
    settings = dw.load()
    client = context.partition_key
    result = staging_conformance(settings, client)
    sent = _alert(settings, client, "staging_matches_production",
                  alerts.findings_from_differences(result.differences, "WARN"))
    ddl = ";\n".join(d.ddl for d in result.differences if d.ddl)
    return dg.AssetCheckResult(
        passed=not result.differences, severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(result.differences)} change(s) in {result.database} not in production",
        metadata={**result.counts, **sent, "staging_db": result.database,
                  "differences": dg.MetadataValue.md(differences_markdown(result.differences)),
                  "ddl": dg.MetadataValue.md(f"```sql\n{ddl}\n```" if ddl else "_none_")},
    )


# ---- silver checks ----------------------------------------------------------------------------------------


def _silver_check_defs(table: str) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey(["silver", table])

    @dg.asset_check(asset=key, name="silver_matches_source", partitions_def=clients_partitions,
                    automation_condition=SILVER_CHECK_SCHEDULE,
                    description=f"ERROR when silver {table} and production {table} differ (row counts, key and "
                                "content checksums), allowing for changes still in flight.")
    def silver_matches_source(context: dg.AssetCheckExecutionContext, dw: DwSettings) -> dg.AssetCheckResult:
        settings = dw.load()
        client = context.partition_key
        check = dict(tables=[table], rounds=RECONCILE_ROUNDS, settle_seconds=RECONCILE_SETTLE_SECONDS,
                     watermark=lambda: applied_ts_by_table(settings, client))
        res = found = reconcile(settings, client, **check)  # type: ignore[arg-type]
        repaired = None
        if not res.passed and settings.reconcile_repair:
            repaired = repair_client(settings, client, found=found, **check)  # type: ignore[arg-type]
            res = repaired.after or res
        findings = [alerts.Finding(f"reconcile:{t.table}", "ERROR", t.summary()) for t in res.failed_tables]
        if repaired is not None and repaired.corrections:  # told once, resolved by the next clean check
            findings.append(alerts.Finding(f"repaired:{table}", "WARN", repaired.summary()))
        sent = _alert(settings, client, f"silver_matches_source:{table}", findings)
        t = res.tables[0] if res.tables else None
        return dg.AssetCheckResult(
            passed=res.passed, severity=dg.AssetCheckSeverity.ERROR,
            description=(repaired.summary() if repaired is not None else t.summary() if t
                         else f"{table} not in production"),
            metadata={**sent, "rounds": res.rounds, "source_rows": t.source_rows if t else 0,
                      "repaired_keys": repaired.corrections if repaired is not None else 0,
                      "found_differing": sum(len(x.differing_keys) for x in found.tables),
                      "silver_rows": (t.silver_rows or 0) if t else 0,
                      "missing_in_silver": t.missing_in_silver if t else 0,
                      "extra_in_silver": t.extra_in_silver if t else 0,
                      "content_differs": t.content_differs if t else 0,
                      "resolved_in_flight": t.resolved_in_flight if t else 0,
                      "unconfirmed_behind": t.unconfirmed_behind if t else 0,
                      "tables": dg.MetadataValue.md(res.markdown())},
        )

    @dg.asset_check(asset=key, name="silver_fresh", partitions_def=clients_partitions,
                    automation_condition=SILVER_CHECK_SCHEDULE,
                    description=f"ERROR when the client's silver has applied nothing newer than "
                                f"{DEFAULT_MAX_AGE_SECONDS} s of source time.")
    def silver_fresh(context: dg.AssetCheckExecutionContext, dw: DwSettings) -> dg.AssetCheckResult:
        settings = dw.load()
        client = context.partition_key
        res = check_freshness(settings, client)
        findings = [] if res.passed else [alerts.Finding("stale", "ERROR",
                                                         f"silver age {res.age_seconds} s > {res.max_age_seconds} s")]
        sent = _alert(settings, client, "silver_fresh", findings)
        return dg.AssetCheckResult(
            passed=res.passed, severity=dg.AssetCheckSeverity.ERROR,
            metadata={**sent, "latest_ts_ms": res.latest_ts_ms or 0, "age_seconds": res.age_seconds or -1.0,
                      "max_age_seconds": res.max_age_seconds, "tables": dg.MetadataValue.md(res.markdown())},
        )

    @dg.asset_check(asset=key, name="silver_quarantine_empty", partitions_def=clients_partitions,
                    automation_condition=SILVER_CHECK_SCHEDULE,
                    description=f"ERROR while changes of {table} wait in <lake>/quarantine/<client>/{table} (a "
                                "change that did not decode, and later changes of its key held behind it).")
    def silver_quarantine_empty(context: dg.AssetCheckExecutionContext, dw: DwSettings) -> dg.AssetCheckResult:
        settings = dw.load()
        client = context.partition_key
        res = check_quarantine(settings, client, table)
        sent = _alert(settings, client, f"silver_quarantine_empty:{table}", res.findings(table))
        s = res.summary
        return dg.AssetCheckResult(
            passed=res.passed, severity=dg.AssetCheckSeverity.ERROR, description=res.description,
            metadata={**sent, "failed": s.failed if s else 0, "held": s.held if s else 0,
                      "discarded": s.discarded if s else 0},
        )

    return [silver_matches_source, silver_fresh, silver_quarantine_empty]


# ---- schema checks for every client, without materializing ------------------------------------------------

schema_checks_job = dg.define_asset_job(
    "schema_checks",
    selection=dg.AssetSelection.checks(production_conforms_to_model, staging_matches_production),
    description="Evaluate the schema checks of one client (no data is materialized).",
)


@dg.sensor(job=schema_checks_job, minimum_interval_seconds=SCHEMA_CHECK_INTERVAL_SECONDS,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 5 minutes, evaluates the schema checks of every registered client that has a "
                       "partition (alerts de-duplicate, so re-evaluation is cheap).")
def schema_checks_sensor(context: dg.SensorEvaluationContext, dw: DwSettings) -> dg.SensorResult | dg.SkipReason:
    from dw_assets.checks.drift_report import checked_clients

    settings = dw.load()
    known = set(context.instance.get_dynamic_partitions(clients_partitions.name))
    clients = [c.client for c in checked_clients(settings) if c.client in known]
    if not clients:
        return dg.SkipReason("no registered client has a partition yet")
    tick = context.cursor or "0"
    # Checks-only runs carry the partition as a tag: a check selection has no asset to take it from.
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"schema-{c}-{tick}", tags={"dagster/partition": c, CLIENT_TAG: c})
                      for c in clients],
        cursor=str(int(tick) + 1),
    )


@dg.asset(
    key=DRIFT_SUMMARY, group_name="checks", owners=["team:data-platform"], kinds={"mariadb"},
    description="Cross-client schema drift: how many clients on which model version, and how many conform.",
)
def drift_summary_asset(dw: DwSettings) -> dg.MaterializeResult:
    settings = dw.load()
    model = settings.standard_model()
    report = drift_report(settings, model=model)
    s = drift_summary(report, model)
    return dg.MaterializeResult(metadata={
        "model_version": s["model_version"], "clients": s["clients"], "conforming": s["conforming"],
        "breaking": s["breaking"], "staging_ahead": s["staging_ahead"],
        "by_model_version": dg.MetadataValue.json(s["by_model_version"]),
        "non_conforming_clients": dg.MetadataValue.json(s["non_conforming_clients"]),
        "clients_table": dg.MetadataValue.md(summary_markdown(report)),
    })


@dg.definitions
def checks_definitions() -> dg.Definitions:
    # The lakehouse defines silver/<table> for every model table (dw_assets/defs/lakehouse.py).
    silver_checks = [c for t in load_settings().standard_model().tables for c in _silver_check_defs(t.name)]
    return dg.Definitions(
        assets=[production_schema, drift_summary_asset],
        asset_checks=[production_conforms_to_model, staging_matches_production, *silver_checks],
        jobs=[schema_checks_job], sensors=[schema_checks_sensor],
    )
