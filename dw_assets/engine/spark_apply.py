"""The Spark engine's apply step (DW_ENGINE=spark): a client's committed bronze changes into silver through
Spark Connect, with the statements of `apply_sql`.

Bronze (an append of each change once), the schema evolution, the decoding of Debezium row images and the
quarantine are the local engine's code (`lakehouse.apply.prepare_changes`); what differs is where the set-based
work runs: here the latest change per key, the guarded MERGE, tombstones, truncates and SCD2 history run as Spark
SQL on the cluster (Sail locally, Databricks in production).

Incremental: each table reads only the bronze batches after its progress marker, a row per table in
`<lake>/meta/<client>/spark_progress` (last bronze batch applied, last TRUNCATE seen), MERGEd in one statement
after the tables' silver and history. Why a marker table and not the local engine's application transactions in the silver commit:
Spark SQL has no way to attach a `txn` action to a MERGE INTO (Sail 0.7.2 takes none through SQL; Databricks
only for DataFrame writes), so progress and data cannot be one commit. They need not be: every write before the
marker is idempotent (ALTER skips present columns, the quarantine skips events it holds, the DELETE of a TRUNCATE,
the MERGEs guarded by the binlog order, history upserted on (key, start)), so a crash anywhere before the marker
makes the rerun re-apply the same batches to the same silver, and a rerun after it finds nothing to do.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import DeltaTable

from dw_assets.lakehouse import changes, quarantine
from dw_assets.lakehouse.apply import TABLE_ERRORS, ApplyResult, TableApply, encoding_of, prepare_changes
from dw_assets.lakehouse.bronze import bronze_dataset, sealed_batch
from dw_assets.lakehouse.evolution import SourceSchema
from dw_assets.lakehouse.interchange import spark_readable
from dw_assets.lakehouse.ordering import ORDER_COLUMNS, ChangeOrder
from dw_assets.lakehouse.paths import bronze_url, meta_url, open_table, storage_options, table_exists, table_url
from dw_assets.lakehouse.tables import BRONZE_TABLE, SOURCE_TS, TOMBSTONES, UTC_TS, order_fields, \
    planned_tables
from dw_assets.model import StandardModel, Table, arrow_type
from dw_assets.settings import Settings

from . import apply_sql as q

log = logging.getLogger(__name__)
PROGRESS = "spark_progress"
COORDS = ["kafka_topic", "kafka_partition", "kafka_offset"]  # a change's identity in the quarantine
PROGRESS_SCHEMA = pa.schema([pa.field("table", pa.string()), pa.field("batch", pa.int64()),
                             pa.field("truncate_seq", pa.int64()), pa.field("truncate_seq_row", pa.int64()),
                             pa.field("applied_at", UTC_TS)])


def _view(spark, name: str, rows: pa.Table) -> None:
    if rows.num_rows == 0:  # Spark cannot infer a schema from no rows (e.g. a batch without truncates)
        from pyspark.sql.pandas.types import from_arrow_schema

        spark.createDataFrame([], schema=from_arrow_schema(rows.schema)).createOrReplaceTempView(name)
        return
    spark.createDataFrame(rows).createOrReplaceTempView(name)


def read_progress(settings: Settings, client: str) -> dict[str, tuple[int, ChangeOrder | None]]:
    """Per table: the last bronze batch the Spark engine applied and the last TRUNCATE it saw."""
    dt = open_table(settings, meta_url(settings, client, PROGRESS))
    if dt is None:
        return {}
    rows = dt.to_pyarrow_table().to_pylist()
    return {r["table"]: (r["batch"], None if r["truncate_seq"] is None
                         else ChangeOrder(r["truncate_seq"], r["truncate_seq_row"])) for r in rows}


def _record_progress(spark, settings: Settings, client: str, rows: list[dict], now: datetime) -> None:
    """Upsert the markers of the tables applied (`table`, `batch`, `truncate`), in one MERGE after all of them."""
    if not rows:
        return
    url = meta_url(settings, client, PROGRESS)
    table = pa.Table.from_pylist([{"table": r["table"], "batch": r["batch"],
                                   "truncate_seq": r["truncate"].seq if r["truncate"] else None,
                                   "truncate_seq_row": r["truncate"].row if r["truncate"] else None,
                                   "applied_at": now} for r in rows], schema=PROGRESS_SCHEMA)
    _view(spark, "dw_progress", table)
    spark.sql(q.upsert(url, "dw_progress", ["table"], PROGRESS_SCHEMA.names)).collect()


def apply_table(spark, settings: Settings, client: str, t: Table, events: pa.Table, now: datetime, *,
                tr: TableApply, source: SourceSchema | None, stored_truncate: ChangeOrder | None,
                history_events=None) -> ChangeOrder | None:
    """Apply one table's change events (any order, duplicates allowed) to its silver through Spark SQL; returns
    the table's last TRUNCATE after them. `history_events()`: every bronze change of the keys these events touch
    (SCD2 chains are rebuilt from them); default `events` alone."""
    silver_url = table_url(settings, "silver", client, t.name)
    tomb_url = meta_url(settings, client, f"{TOMBSTONES}/{t.name}")
    silver_dt = open_table(settings, silver_url)
    assert silver_dt is not None, silver_url
    con = changes.connect()
    try:
        prepared = prepare_changes(settings, client, t, events, source, con, now, tr,
                                   pa.schema(silver_dt.schema().to_arrow()))
    finally:
        con.close()
    keys = list(t.primary_key)
    batch_truncate = changes.truncate_order(events)
    truncate_at = max((o for o in (stored_truncate, batch_truncate) if o is not None), default=None)
    if batch_truncate is not None and (stored_truncate is None or batch_truncate > stored_truncate):
        spark.sql(q.truncate(silver_url, batch_truncate)).collect()
        tr.silver.metrics["truncated"] = True
    typed = prepared.typed
    columns = [f.name for f in prepared.data_fields]
    data = columns + list(ORDER_COLUMNS) + [SOURCE_TS]
    if typed.num_rows:
        v = lambda name: f"{name}_{t.name}"  # noqa: E731 - per-table temp views: tables apply side by side
        stamped = typed.append_column("_dw_deleted_at", pa.array([now] * typed.num_rows, UTC_TS))
        _view(spark, v("dw_changes"), stamped)
        spark.sql(q.latest_per_key(v("dw_changes"), keys, data + ["_dw_op", "_dw_deleted_at"], truncate_at)) \
            .createOrReplaceTempView(v("dw_latest"))
        # The silver MERGE first, the tombstones after: the guard compares with the tombstones as they were
        # before this batch (the source view is evaluated by the MERGE itself; no round trip through here).
        spark.sql(q.not_behind_tombstone(f"SELECT * FROM {q.bq(v('dw_latest'))}", tomb_url, keys)) \
            .createOrReplaceTempView(v("dw_todo"))
        spark.sql(q.merge_silver(silver_url, v("dw_todo"), keys, data)).collect()
        if pc.any(pc.equal(typed["_dw_op"], "d")).as_py():
            spark.sql(f"SELECT {', '.join(q.bq(c) for c in [*keys, *ORDER_COLUMNS, '_dw_deleted_at'])} "
                      f"FROM {q.bq(v('dw_latest'))} WHERE `_dw_op` = 'd'").createOrReplaceTempView(v("dw_deletes"))
            spark.sql(q.merge_tombstones(tomb_url, v("dw_deletes"), keys)).collect()
        tr.silver.metrics["offered"] = typed.num_rows  # changes given to the guarded MERGE
    if t.options.scd2 and (typed.num_rows or batch_truncate is not None):
        chain = history_events() if history_events is not None else events
        _apply_history(spark, settings, client, t, chain, keys, prepared.data_fields)
    return truncate_at


def _apply_history(spark, settings: Settings, client: str, t: Table, events: pa.Table, keys: list[str],
                   data_fields: list[pa.Field]) -> None:
    """Rebuild the version chains of every key in `events` from all its changes, and upsert them."""
    # Changes in the quarantine (failed, and held behind them) stay out of the chains, as out of the local history.
    waiting = quarantine.open_rows(settings, client, t.name).select(COORDS)
    if waiting.num_rows:
        events = pl.from_arrow(events).join(pl.from_arrow(waiting), on=COORDS, how="anti").to_arrow() \
            .cast(events.schema)
    con = changes.connect()
    try:
        decoded = changes.decode_events(con, events, data_fields, {c.name: c.type for c in t.columns},
                                        encoding_of(settings))
    finally:
        con.close()
    v = lambda name: f"{name}_{t.name}"  # noqa: E731
    _view(spark, v("dw_chain"), decoded.typed)
    truncates = events.filter(pc.equal(events["op"], "t")).select([*ORDER_COLUMNS, "source_ts_ms"]) \
        .rename_columns([*ORDER_COLUMNS, SOURCE_TS])
    _view(spark, v("dw_truncates"), truncates)
    history_url = table_url(settings, "silver_history", client, t.name)
    target = pa.schema(open_table(settings, history_url).schema().to_arrow())
    columns = [f.name for f in data_fields]
    versions = spark.sql(q.history_versions(v("dw_chain"), v("dw_truncates"), keys, columns))
    _view(spark, v("dw_versions"), versions.toArrow().select(target.names).cast(
        pa.schema([f.with_nullable(True) for f in target])))
    spark.sql(q.merge_history(history_url, v("dw_versions"), keys, target.names)).collect()


# Table properties a Sail-written table cannot carry: Sail 0.7.2 refuses to write a table whose protocol needs
# the changeDataFeed writer feature. On Databricks the model's properties apply (see defs/databricks.py).
SAIL_UNSUPPORTED = ("delta.enableChangeDataFeed",)


def tombstone_schema(table: Table) -> pa.Schema:
    """The Spark path keeps its own tombstones per table (the local engine reads deletes back from bronze)."""
    keys = [spark_readable(pa.field(c.name, arrow_type(c.type), nullable=False)) for c in table.key_columns]
    return pa.schema(keys + order_fields() + [pa.field("_dw_deleted_at", UTC_TS, nullable=False)])


def ensure_spark_tables(settings: Settings, client: str, model: StandardModel) -> list[str]:
    """The client's tables as the model plans them, minus the properties Sail cannot write, and the Spark
    path's tombstone and progress tables. Idempotent."""
    created = []
    own = [(meta_url(settings, client, f"{TOMBSTONES}/{t.name}"), tombstone_schema(t)) for t in model.tables]
    for url, schema in own + [(meta_url(settings, client, PROGRESS), PROGRESS_SCHEMA)]:
        if not table_exists(settings, url):
            DeltaTable.create(url, schema, mode="ignore", storage_options=storage_options(settings, url))
            created.append(url)
    for p in planned_tables(settings, client, model):
        if table_exists(settings, p.url):
            continue
        props = {k: v for k, v in p.properties.items() if k not in SAIL_UNSUPPORTED}
        DeltaTable.create(p.url, p.schema, mode="ignore", name=p.name, description=p.description,
                          partition_by=list(p.partition_by) or None, configuration=props or None,
                          storage_options=storage_options(settings, p.url), raise_if_key_not_exists=False)
        created.append(p.url)
    return created


def _touched_keys_reader(ds: pads.Dataset, table: str, events: pa.Table, up_to: int):
    """Every bronze change (up to batch `up_to`) of the keys `events` touch, and every TRUNCATE of the table;
    with a TRUNCATE among `events`, all the table's changes (it ends every key's open version)."""
    def read() -> pa.Table:
        where = (pads.field(BRONZE_TABLE) == table) & (pads.field("_dw_batch") <= up_to)
        if not pc.any(pc.equal(events["op"], "t")).as_py():
            keys = pc.unique(events["key"].drop_null())
            where = where & (pads.field("key").isin(keys) | (pads.field("op") == "t"))
        return ds.to_table(filter=where)
    return read


def apply_client_spark(spark, settings: Settings, client: str, model: StandardModel,
                       bronze_settings: Settings | None = None, source: SourceSchema | None = None,
                       result: ApplyResult | None = None) -> ApplyResult:
    """Apply the client's bronze batches (of `bronze_settings`' lake, default the same) each table has not
    applied yet to its silver; see the module docstring. `source` types added columns (None: no evolution, an
    unknown column is a table error). A table that fails (schema change) records its error and keeps its marker,
    the others go on. Idempotent."""
    result = result or ApplyResult(client, 0)
    result.created_tables += ensure_spark_tables(settings, client, model)
    bronze_of = bronze_settings or settings
    bronze_dt = open_table(bronze_of, bronze_url(bronze_of, client))
    if bronze_dt is None:
        return result
    sealed = sealed_batch(bronze_dt) or int(pc.max(bronze_dt.to_pyarrow_dataset().to_table(
        columns=["_dw_batch"])["_dw_batch"]).as_py() or 0)
    ds = bronze_dataset(bronze_of, client)
    progress = read_progress(settings, client)
    now = datetime.now(timezone.utc)

    def one(t: Table) -> dict | None:
        """Apply one table's new batches; its marker row, or None (failed: the marker stays)."""
        done, stored_truncate = progress.get(t.name, (0, None))
        events = ds.to_table(filter=(pads.field(BRONZE_TABLE) == t.name) & (pads.field("_dw_batch") > done)
                             & (pads.field("_dw_batch") <= sealed))
        tr = result.tables.setdefault(t.name, TableApply(t.name))
        try:
            if events.num_rows:
                reader = _touched_keys_reader(ds, t.name, events, sealed) if t.options.scd2 else None
                stored_truncate = apply_table(spark, settings, client, t, events, now, tr=tr, source=source,
                                              stored_truncate=stored_truncate, history_events=reader)
        except TABLE_ERRORS as e:
            tr.error = str(e)
            log.error("spark apply %s.%s failed: %s", client, t.name, e)
            return None
        return {"table": t.name, "batch": sealed, "truncate": stored_truncate}

    todo = [t for t in model.tables if progress.get(t.name, (0, None))[0] < sealed]
    # Tables side by side on the one session (their temp views are per table): the cluster overlaps their
    # statements. A failure of one (outage, bug) propagates after the others finished; no marker moves then,
    # and the rerun re-applies idempotently.
    with ThreadPoolExecutor(max_workers=max(1, settings.apply_threads), thread_name_prefix=f"spark-{client}") as pool:
        marks = list(pool.map(one, todo))
    _record_progress(spark, settings, client, [m for m in marks if m is not None], now)
    result.batch = max(result.batch, sealed)
    return result
