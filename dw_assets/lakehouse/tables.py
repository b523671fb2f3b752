"""The lake's tables as code: schemas derived from the model and idempotent creation of what is missing.

`ensure_client_tables` computes the tables a client needs (one bronze per client, partitioned by table; silver
and optional SCD2 history per table; bookkeeping) minus those that exist and creates the rest with the model's
types, nullability and properties.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake

from dw_assets.contracts import LANDING_SCHEMA
from dw_assets.model import StandardModel, Table, arrow_type
from dw_assets.settings import Settings

from .ordering import SEQ, SEQ_END, SEQ_END_ROW, SEQ_ROW, SEQ_TYPE
from .paths import bronze_url, meta_url, model_meta_url, storage_options, table_exists, table_url

UTC_TS = pa.timestamp("us", tz="UTC")
# Lake-maintained columns: prefixed so they can never collide with a model column (model names are plain
# identifiers, and the model could add `_dw_` ones only on purpose). The ordering pair is in `ordering`.
SOURCE_TS = "_dw_source_ts_ms"
DW_PREFIX = "_dw_"

BRONZE_TABLE = "_dw_table"  # bronze's partition column: the model table an event belongs to

# Bookkeeping tables per client, under <lake>/meta/<client>/. `silver_progress` and `tombstones` are only read
# from lakes written before progress moved into silver's commits and tombstones into bronze (see `apply`).
MANIFEST = "landing_manifest"
PROGRESS = "silver_progress"
TRUNCATIONS = "truncations"
TOMBSTONES = "tombstones"


def bronze_schema() -> pa.Schema:
    """The landing envelope unchanged (JSON row images: schema-agnostic) plus ordering and lineage columns."""
    return pa.schema(list(LANDING_SCHEMA.remove_metadata()) + [
        *order_fields(),
        pa.field("_dw_landing_file", pa.string(), nullable=False),
        pa.field("_dw_batch", pa.int64(), nullable=False),
        pa.field("_dw_ingested_at", UTC_TS, nullable=False),
        pa.field(BRONZE_TABLE, pa.string(), nullable=False),
    ])


def order_fields() -> list[pa.Field]:
    """`_dw_seq`, `_dw_seq_row`: the change's position (see `ordering`)."""
    return [pa.field(SEQ, SEQ_TYPE, nullable=False), pa.field(SEQ_ROW, SEQ_TYPE, nullable=False)]


def data_fields(table: Table) -> list[pa.Field]:
    return [pa.field(c.name, arrow_type(c.type), nullable=c.nullable) for c in table.columns]


def silver_schema(table: Table) -> pa.Schema:
    return pa.schema(data_fields(table) + order_fields() + [pa.field(SOURCE_TS, pa.int64())])


def history_schema(table: Table) -> pa.Schema:
    """SCD type 2: one row per key version, [valid_from, valid_to) in source time, ordered exactly by seq."""
    return pa.schema(data_fields(table) + order_fields() + [  # the change that started this version
        # The change that ended it (update, delete or truncate); NULL = current.
        pa.field(SEQ_END, SEQ_TYPE), pa.field(SEQ_END_ROW, SEQ_TYPE),
        pa.field("valid_from", UTC_TS),
        pa.field("valid_to", UTC_TS),
        pa.field("is_current", pa.bool_(), nullable=False),
        pa.field(SOURCE_TS, pa.int64()),
    ])


def manifest_schema() -> pa.Schema:
    return pa.schema([
        pa.field("file", pa.string(), nullable=False), pa.field("table", pa.string(), nullable=False),
        pa.field("topic", pa.string(), nullable=False), pa.field("partition", pa.int32(), nullable=False),
        pa.field("start_offset", pa.int64(), nullable=False), pa.field("rows", pa.int64(), nullable=False),
        pa.field("batch", pa.int64(), nullable=False), pa.field("applied_at", UTC_TS, nullable=False),
    ])


def truncations_schema() -> pa.Schema:
    return pa.schema([pa.field("table", pa.string(), nullable=False), *order_fields(),
                      pa.field("applied_at", UTC_TS, nullable=False)])


def model_meta_schema() -> pa.Schema:
    return pa.schema([
        pa.field("MODEL_VERSION", pa.string(), nullable=False), pa.field("TABLE_NAME", pa.string(), nullable=False),
        pa.field("COLUMN_NAME", pa.string(), nullable=False), pa.field("DATA_TYPE", pa.string(), nullable=False),
        pa.field("IS_NULLABLE", pa.string(), nullable=False), pa.field("CONFIG_OPTION_1", pa.string()),
        pa.field("CONFIG_OPTION_2", pa.string()), pa.field("ORDINAL_POSITION", pa.int32(), nullable=False),
        pa.field("IS_PRIMARY_KEY", pa.string(), nullable=False),
    ])


def table_properties(table: Table) -> dict[str, str]:
    """Delta properties from the model's options.

    Column mapping is RECORDED as `dw.columnMapping.mode`, never enabled: deltalake 1.6.6, Polars and DuckDB
    read `delta.columnMapping.mode=name` tables back as all NULLs (field notes). A Spark/Databricks engine can
    switch it on later from this property.
    """
    return {
        "delta.enableChangeDataFeed": str(table.options.change_data_feed).lower(),
        "dw.columnMapping.mode": table.options.column_mapping,
    }


@dataclass(frozen=True)
class PlannedTable:
    url: str
    schema: pa.Schema
    properties: dict[str, str]
    name: str
    description: str
    partition_by: tuple[str, ...] = ()


def planned_tables(settings: Settings, client: str, model: StandardModel) -> list[PlannedTable]:
    """Every table the client needs according to the model, with schema and properties."""
    # One bronze table per client (partitioned by table): a micro-batch appends to it in one commit.
    plan: list[PlannedTable] = [PlannedTable(
        bronze_url(settings, client), bronze_schema(), {"delta.enableChangeDataFeed": "false"}, "bronze",
        f"Change events of every table of {client}, each once, partitioned by {BRONZE_TABLE}", (BRONZE_TABLE,))]
    for t in model.tables:
        props = table_properties(t)
        plan.append(PlannedTable(table_url(settings, "silver", client, t.name), silver_schema(t), props,
                                 f"silver_{t.name}", f"Current state of {client}.{t.name}"))
        if t.options.scd2:
            plan.append(PlannedTable(table_url(settings, "silver_history", client, t.name), history_schema(t), props,
                                     f"silver_history_{t.name}", f"SCD2 history of {client}.{t.name}"))
    for name, schema in ((MANIFEST, manifest_schema()), (TRUNCATIONS, truncations_schema())):
        plan.append(PlannedTable(meta_url(settings, client, name), schema, {}, name, f"{name} of {client}"))
    return plan


def ensure_client_tables(settings: Settings, client: str, model: StandardModel) -> list[str]:
    """Create the client's missing tables (required minus existing); returns the URLs created. Idempotent."""
    created = []
    for p in planned_tables(settings, client, model):
        if table_exists(settings, p.url):
            continue
        DeltaTable.create(p.url, p.schema, mode="ignore", name=p.name, description=p.description,
                          partition_by=list(p.partition_by) or None, configuration=p.properties or None,
                          storage_options=storage_options(settings, p.url), raise_if_key_not_exists=False)
        created.append(p.url)
    ensure_model_meta(settings, model)
    with _ensured_lock:
        _ensured[(settings.lake_url, client)] = model.version
    return created


_ensured: dict[tuple[str, str], str] = {}  # (lake, client) -> model version ensured in this process
_ensured_lock = threading.Lock()


def ensure_client_tables_cached(settings: Settings, client: str, model: StandardModel) -> list[str]:
    """`ensure_client_tables` once per process and model version; later calls check only that bronze is there
    (offboarding removes the client's tables), so a micro-batch does not stat every table and the model table."""
    if _ensured.get((settings.lake_url, client)) == model.version and table_exists(settings,
                                                                                  bronze_url(settings, client)):
        return []
    return ensure_client_tables(settings, client, model)


def model_meta_table(model: StandardModel) -> pa.Table:
    rows = [{"MODEL_VERSION": model.version, **r} for r in model.meta_rows()]
    return pa.Table.from_pylist(rows, schema=model_meta_schema())


def ensure_model_meta(settings: Settings, model: StandardModel) -> bool:
    """Write `<lake>/meta/standard_model` when missing or different (overwrite: time travel keeps the old one)."""
    url = model_meta_url(settings)
    new = model_meta_table(model)
    if table_exists(settings, url):
        old = DeltaTable(url, storage_options=storage_options(settings, url)).to_pyarrow_table()
        if old.sort_by([("TABLE_NAME", "ascending"), ("ORDINAL_POSITION", "ascending")]).equals(
                new.sort_by([("TABLE_NAME", "ascending"), ("ORDINAL_POSITION", "ascending")])):
            return False
    write_deltalake(url, new, mode="overwrite", schema_mode="overwrite", storage_options=storage_options(settings, url),
                    commit_properties=CommitProperties(custom_metadata={"dw.model_version": model.version,
                                                                        "dw.tables": json.dumps(model.table_names)}))
    return True
