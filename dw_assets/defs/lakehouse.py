"""Dagster wiring of the lakehouse: one client-partitioned apply step that materializes bronze/<table>,
silver/<table> and silver_history/<table> for every model table, plus the scheduled maintenance job.

Why one multi_asset with a spec per table and layer (not one asset per table): a client's apply shares one
landing listing, one manifest commit and one batch number across all tables, so it must be ONE step; the specs
still give every table its own node in the lineage graph (6-30 tables read fine grouped by layer), its own
metadata and a place for per-table checks. The logic lives in `dw_assets.lakehouse`.
"""

from typing import Iterable, Iterator

import dagster as dg

from dw_assets.checks.conformance import client_databases
from dw_assets.engine.dispatch import apply_with_engine
from dw_assets.lakehouse.apply import ApplyResult, TableApply
from dw_assets.lakehouse.maintenance import COMPACT_FROM_FILES, DEFAULT_RETENTION_HOURS, maintain_lake
from dw_assets.lakehouse.table_info import preview_markdown, table_facts, table_head
from dw_assets.model import StandardModel
from dw_assets.partitions import clients_partitions
from dw_assets.resources import DwSettings
from dw_assets.settings import Settings, load_settings

LANDING_FILES = dg.AssetKey(["landing", "landing_files"])
PRODUCTION_SCHEMA = dg.AssetKey(["sources", "production_schema"])  # its blocking check gates the apply
PREVIEW_ROWS = 10
OWNERS = ["team:data-platform"]


def _specs(model: StandardModel) -> list[dg.AssetSpec]:
    specs = []
    for t in model.tables:
        specs.append(dg.AssetSpec(
            ["bronze", t.name], group_name="bronze", kinds={"delta"}, partitions_def=clients_partitions, owners=OWNERS,
            deps=[LANDING_FILES, PRODUCTION_SCHEMA], skippable=True,
            description=f"Every change event of {t.name} (JSON row images), exactly once per landing file."))
        specs.append(dg.AssetSpec(
            ["silver", t.name], group_name="silver", kinds={"delta"}, partitions_def=clients_partitions, owners=OWNERS,
            deps=[dg.AssetKey(["bronze", t.name])], skippable=True,
            description=f"Current state of {t.name}: ordered MERGE by binlog position, deletes and truncates "
                        "applied, change data feed " + ("on." if t.options.change_data_feed else "off.")))
        if t.options.scd2:
            specs.append(dg.AssetSpec(
                ["silver_history", t.name], group_name="silver", kinds={"delta"}, partitions_def=clients_partitions, owners=OWNERS,
                deps=[dg.AssetKey(["bronze", t.name])], skippable=True,
                description=f"SCD type 2 history of {t.name}: valid_from/valid_to/is_current per key version."))
    return specs


def lake_materializations(settings: Settings, client: str, model: StandardModel, tables: dict[str, TableApply],
                          created: Iterable[str] = ()) -> Iterator[tuple[dg.AssetKey, dict]]:
    """(asset key, metadata) of every bronze/silver/history table a client's apply changed or created; shared by
    the partitioned `lake_apply` step and the multi-client ingest job. Metadata comes from the Delta log and the
    first rows only: no table is read whole, so a run over many clients stays cheap."""
    created = set(created)
    for t in model.tables:
        r = tables.get(t.name) or TableApply(t.name)
        changed = r.bronze_rows or r.events or r.truncated_rows or r.added_columns
        if not r.ok or not (changed or t.name in created):
            continue
        yield dg.AssetKey(["bronze", t.name]), {
            "rows_appended": r.bronze_rows, "duplicates_dropped": r.bronze_duplicates,
            **{f"table_{k}": v for k, v in table_facts(settings, "bronze", client, t.name).items()}}
        facts = table_facts(settings, "silver", client, t.name)
        head = table_head(settings, "silver", client, t.name, PREVIEW_ROWS)
        yield dg.AssetKey(["silver", t.name]), {
            "events_applied": r.events, "rows_inserted": r.silver.inserted, "rows_updated": r.silver.updated,
            "rows_deleted": r.silver.deleted, "changes_ignored": r.silver.ignored,
            "rows_truncated": r.truncated_rows, **({"rows": facts["rows"]} if "rows" in facts else {}),
            "added_columns": ", ".join(r.added_columns),
            **{f"table_{k}": v for k, v in facts.items() if k != "rows"},
            **({"latest_source_ts": dg.MetadataValue.timestamp(r.latest_source_ts_ms / 1000)}
               if r.latest_source_ts_ms else {}),
            **({"preview": dg.MetadataValue.md(preview_markdown(head, PREVIEW_ROWS))} if head is not None else {}),
        }
        if t.options.scd2:
            h = r.history
            yield dg.AssetKey(["silver_history", t.name]), {
                "versions_inserted": h.inserted if h else 0, "versions_updated": h.updated if h else 0,
                **{f"table_{k}": v for k, v in table_facts(settings, "silver_history", client, t.name).items()}}


def _results(settings: Settings, client: str, model: StandardModel, result: ApplyResult) -> Iterator[dg.MaterializeResult]:
    for key, metadata in lake_materializations(settings, client, model, result.tables, result.created_tables):
        yield dg.MaterializeResult(asset_key=key, metadata=metadata)


def _lake_apply_asset(model: StandardModel) -> dg.AssetsDefinition:
    @dg.multi_asset(name="lake_apply", specs=_specs(model), can_subset=False,
                    description="Apply the client's new landing files to bronze, silver and SCD2 history.")
    def lake_apply(context: dg.AssetExecutionContext, dw: DwSettings) -> Iterator[dg.MaterializeResult]:
        settings = dw.load()
        client = context.partition_key
        result = apply_with_engine(settings, client, model,
                                   database=client_databases(settings, client).production_db)
        context.log.info(f"{client}: batch {result.batch}, {result.files} file(s), {result.events} event(s) "
                         f"in {result.seconds:.2f} s {result.timings}")
        yield from _results(settings, client, model, result)
        if result.failed:
            # Other tables were applied and materialized above; the failed ones catch up from bronze later.
            raise dg.Failure("lake apply failed for " + "; ".join(f"{t}: {e}" for t, e in result.failed.items()),
                             metadata={"failed_tables": ", ".join(result.failed)})

    return lake_apply


class LakeMaintenanceConfig(dg.Config):
    retention_hours: int = DEFAULT_RETENTION_HOURS
    z_order_by_key: bool = False
    # Set: the light pass (compact tables with at least this many live files; no vacuum, no tombstone expiry).
    compact_only_from: int | None = None


@dg.op(description="Compact (or Z-order) and vacuum every client's lake tables; expire old tombstones. With "
                   "compact_only_from, only compact the tables that have that many small files.")
def maintain_lake_tables(context: dg.OpExecutionContext, config: LakeMaintenanceConfig, dw: DwSettings) -> None:
    results = maintain_lake(dw.load(), retention_hours=config.retention_hours, z_order_by_key=config.z_order_by_key,
                            compact_only_from=config.compact_only_from)
    for r in results:
        before = sum(t.files_before for t in r.tables)
        after = sum(t.files_after for t in r.tables)
        context.log.info(f"{r.client}: {len(r.tables)} tables, files {before} -> {after}")


@dg.job(name="lake_maintenance", description="Scheduled compaction and vacuum of the lake across clients.")
def lake_maintenance() -> None:
    maintain_lake_tables()


lake_maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_nightly", job=lake_maintenance, cron_schedule="30 2 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING)
# Every apply adds about one file per bronze/bookkeeping table: the light pass keeps them bounded in between.
lake_compaction_schedule = dg.ScheduleDefinition(
    name="lake_compaction_quarter_hourly", job=lake_maintenance, cron_schedule="*/15 * * * *",
    run_config={"ops": {"maintain_lake_tables": {"config": {"compact_only_from": COMPACT_FROM_FILES}}}},
    default_status=dg.DefaultScheduleStatus.RUNNING)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[_lake_apply_asset(load_settings().standard_model())], jobs=[lake_maintenance],
                          schedules=[lake_maintenance_schedule, lake_compaction_schedule])
