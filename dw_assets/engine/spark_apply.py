"""The Spark engine's apply step (DW_ENGINE=spark): a client's committed bronze changes into silver through
Spark Connect, with the statements of `apply_sql`.

Bronze (an append of each change once) and the decoding of Debezium row images are the same code for both
engines; what differs is where the set-based work runs: here the latest change per key, the guarded MERGE,
tombstones and truncates run as Spark SQL on the cluster (Sail locally, Databricks in production).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from dw_assets.lakehouse import changes
from dw_assets.lakehouse.bronze import read_bronze_since
from dw_assets.lakehouse.decoding import Encoding
from dw_assets.lakehouse.ordering import ORDER_COLUMNS
from deltalake import DeltaTable

from dw_assets.lakehouse.paths import meta_url, open_table, storage_options, table_exists, table_url
from dw_assets.lakehouse.interchange import spark_readable
from dw_assets.lakehouse.tables import DW_PREFIX, SOURCE_TS, TOMBSTONES, UTC_TS, order_fields, planned_tables
from dw_assets.model import arrow_type
from dw_assets.model import StandardModel, Table
from dw_assets.settings import Settings

from . import apply_sql as q


@dataclass
class SparkTableApply:
    table: str
    events: int = 0
    merged: int = 0  # latest changes offered to the MERGE
    truncated: bool = False


@dataclass
class SparkApplyResult:
    client: str
    tables: dict[str, SparkTableApply] = field(default_factory=dict)


def _view(spark, name: str, rows: pa.Table) -> None:
    if rows.num_rows == 0:  # Spark cannot infer a schema from no rows (e.g. a batch without truncates)
        from pyspark.sql.pandas.types import from_arrow_schema

        spark.createDataFrame([], schema=from_arrow_schema(rows.schema)).createOrReplaceTempView(name)
        return
    spark.createDataFrame(rows).createOrReplaceTempView(name)


def apply_table(spark, settings: Settings, client: str, t: Table, events: pa.Table, now: datetime) -> SparkTableApply:
    """Apply one table's change events (any order, duplicates allowed) to its silver through Spark SQL."""
    out = SparkTableApply(t.name, events=events.num_rows)
    silver_url = table_url(settings, "silver", client, t.name)
    tomb_url = meta_url(settings, client, f"{TOMBSTONES}/{t.name}")
    silver_dt = open_table(settings, silver_url)
    assert silver_dt is not None, silver_url
    data_fields = [f for f in pa.schema(silver_dt.schema().to_arrow()) if not f.name.startswith(DW_PREFIX)]
    con = changes.connect()
    try:
        decoded = changes.decode_events(con, events, data_fields, {c.name: c.type for c in t.columns},
                                        Encoding(settings.cdc_time_precision_mode, settings.cdc_decimal_handling_mode))
    finally:
        con.close()
    if decoded.failed.num_rows:
        raise changes.ChangeParseError(f"{client}.{t.name}: {decoded.failed.num_rows} change(s) do not decode")
    keys = list(t.primary_key)
    truncate_at = changes.truncate_order(events)
    if truncate_at is not None:
        spark.sql(q.truncate(silver_url, truncate_at)).collect()
        out.truncated = True
    typed = decoded.typed
    if typed.num_rows == 0:
        return out
    columns = [f.name for f in data_fields]
    data = columns + list(ORDER_COLUMNS) + [SOURCE_TS]
    _view(spark, "dw_changes", typed)
    spark.sql(q.latest_per_key("dw_changes", keys, data + ["_dw_op"], truncate_at)).createOrReplaceTempView("dw_latest")
    deletes = spark.sql(f"SELECT {', '.join(q.bq(c) for c in [*keys, *ORDER_COLUMNS])}, "
                        f"TIMESTAMP '{now.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S.%f}' AS `_dw_deleted_at` "
                        f"FROM dw_latest WHERE `_dw_op` = 'd'")
    applicable = spark.sql(q.not_behind_tombstone("SELECT * FROM dw_latest", tomb_url, keys))
    # Materialized before the tombstones move: the guard compares with the tombstones as they were.
    todo = applicable.toArrow()
    if deletes.count():
        deletes.createOrReplaceTempView("dw_deletes")
        spark.sql(q.merge_tombstones(tomb_url, "dw_deletes", keys)).collect()
    out.merged = todo.num_rows
    if todo.num_rows:
        _view(spark, "dw_todo", todo)
        spark.sql(q.merge_silver(silver_url, "dw_todo", keys, data)).collect()
    if t.options.scd2:
        _apply_history(spark, settings, client, t, events, keys, columns)
    return out


def _apply_history(spark, settings: Settings, client: str, t: Table, events: pa.Table, keys: list[str],
                   columns: list[str]) -> None:
    """Rebuild the version chains of every key from all its changes (`dw_changes`) and upsert them."""
    truncates = events.filter(pc.equal(events["op"], "t")).select([*ORDER_COLUMNS, "source_ts_ms"]) \
        .rename_columns([*ORDER_COLUMNS, SOURCE_TS])
    _view(spark, "dw_truncates", truncates)
    history_url = table_url(settings, "silver_history", client, t.name)
    target = pa.schema(open_table(settings, history_url).schema().to_arrow())
    versions = spark.sql(q.history_versions("dw_changes", "dw_truncates", keys, columns))
    _view(spark, "dw_versions", versions.toArrow().select(target.names).cast(
        pa.schema([f.with_nullable(True) for f in target])))
    spark.sql(q.merge_history(history_url, "dw_versions", keys, target.names)).collect()


# Table properties a Sail-written table cannot carry: Sail 0.7.2 refuses to write a table whose protocol needs
# the changeDataFeed writer feature. On Databricks the model's properties apply (see defs/databricks.py).
SAIL_UNSUPPORTED = ("delta.enableChangeDataFeed",)


def tombstone_schema(table: Table) -> pa.Schema:
    """The Spark path keeps its own tombstones per table (the local engine reads deletes back from bronze)."""
    keys = [spark_readable(pa.field(c.name, arrow_type(c.type), nullable=False)) for c in table.key_columns]
    return pa.schema(keys + order_fields() + [pa.field("_dw_deleted_at", UTC_TS, nullable=False)])


def ensure_spark_tables(settings: Settings, client: str, model: StandardModel) -> list[str]:
    """The client's tables as the model plans them, minus the properties Sail cannot write, and the Spark
    path's tombstone tables. Idempotent."""
    created = []
    for t in model.tables:
        url = meta_url(settings, client, f"{TOMBSTONES}/{t.name}")
        if not table_exists(settings, url):
            DeltaTable.create(url, tombstone_schema(t), mode="ignore", storage_options=storage_options(settings, url))
            created.append(url)
    for p in planned_tables(settings, client, model):
        if table_exists(settings, p.url):
            continue
        props = {k: v for k, v in p.properties.items() if k not in SAIL_UNSUPPORTED}
        DeltaTable.create(p.url, p.schema, mode="ignore", name=p.name, description=p.description,
                          configuration=props or None, storage_options=storage_options(settings, p.url),
                          raise_if_key_not_exists=False)
        created.append(p.url)
    return created


def apply_client_spark(spark, settings: Settings, client: str, model: StandardModel,
                       bronze_settings: Settings | None = None) -> SparkApplyResult:
    """Apply every change in the client's bronze (of `bronze_settings`' lake, default the same) to silver.

    Idempotent: re-applying the same changes leaves silver as it is (the order guards).
    """
    ensure_spark_tables(settings, client, model)
    result = SparkApplyResult(client)
    now = datetime.now(timezone.utc)
    for t in model.tables:
        events = read_bronze_since(bronze_settings or settings, client, t.name, 0)
        if events.num_rows:
            result.tables[t.name] = apply_table(spark, settings, client, t, events, now)
    return result
