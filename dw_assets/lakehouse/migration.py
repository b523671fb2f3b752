"""Migration of a client's lake from older layouts: the DECIMAL(38,0) `_dw_seq` (to the int64 pair of
`ordering`), then bronze per table (to one bronze table per client, `migrate_bronze`).

Runs at the start of every apply (cheap when done: one table's schema is read) and by `dw lake migrate`. Each
table whose `_dw_seq` is still a DECIMAL is rewritten in one overwrite commit, streamed batch by batch, with
`_dw_seq`/`_dw_seq_row` (and `_dw_seq_end`/`_dw_seq_end_row` in history) recomputed from the old value, which
decomposes exactly; every other column, every row and the table's properties stay, and time travel still
shows the old versions. One commit per table makes it crash-safe: an interrupted migration leaves each table
either old or new, and the next run migrates those still old. The client's `truncations` table goes last and
serves as the marker that the client is done.

Bronze per table (`<lake>/bronze/<client>/<table>`) is copied into the client's bronze table (partition
`_dw_table`), one table per commit; the commit carries the application transaction
`dw.migrated.<table>`, so a crash after it only deletes the old table on the next run (never copies twice).
Every column, row and `_dw_batch` stays, so catch-up and de-duplication work across the move.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Iterator

import duckdb
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .commit_retry import with_commit_retry
from .ordering import SEQ, SEQ_END, SEQ_END_ROW, SEQ_ROW, SEQ_TYPE, legacy_order_sql, quote
from .paths import bronze_url, filesystem, meta_url, open_table, table_exists, table_url
from .tables import BRONZE_TABLE, TOMBSTONES, TRUNCATIONS

log = logging.getLogger(__name__)
# (old column, new seq column, new row column) per ordering value a table can hold.
_PAIRS = ((SEQ, SEQ, SEQ_ROW), (SEQ_END, SEQ_END, SEQ_END_ROW))
_done: set[tuple[str, str]] = set()  # (lake, client) seen migrated in this process
_done_lock = threading.Lock()


@dataclass
class MigrationResult:
    client: str
    migrated: list[str] = field(default_factory=list)  # table URLs rewritten
    rows: int = 0


def client_table_urls(settings: Settings, client: str, model: StandardModel) -> list[str]:
    """Every table of the client that holds ordering values; `truncations` last (the marker)."""
    urls = []
    for t in model.tables:
        urls += [table_url(settings, layer, client, t.name) for layer in ("bronze", "silver", "silver_history")]
        urls.append(meta_url(settings, client, f"{TOMBSTONES}/{t.name}"))
    return urls + [meta_url(settings, client, TRUNCATIONS)]


def needs_migration(schema: pa.Schema) -> bool:
    return SEQ in schema.names and pa.types.is_decimal(schema.field(SEQ).type)


def migrate_client(settings: Settings, client: str, model: StandardModel, check_all: bool = False) -> MigrationResult:
    """Migrate the client's tables still in the old layout. Idempotent; resumes an interrupted run.

    Without `check_all` a client whose marker table is already new is taken as done (the apply path);
    `dw lake migrate` checks every table.
    """
    result = MigrationResult(client)
    marker = meta_url(settings, client, TRUNCATIONS)
    key = (settings.lake_url, client)
    if not check_all:
        if key in _done:
            return result
        dt = open_table(settings, marker)
        if dt is not None and not needs_migration(pa.schema(dt.schema().to_arrow())):
            migrate_bronze(settings, client, model, result)
            with _done_lock:
                _done.add(key)
            return result
    for url in client_table_urls(settings, client, model):
        rows = migrate_table(settings, url)
        if rows is not None:
            result.migrated.append(url)
            result.rows += rows
    migrate_bronze(settings, client, model, result)
    with _done_lock:
        _done.add(key)
    if result.migrated:
        log.info("lake layout of %s migrated to int64 ordering: %d table(s), %d row(s)", client,
                 len(result.migrated), result.rows)
    return result


def migrate_table(settings: Settings, url: str) -> int | None:
    """Rewrite one table with the new ordering columns; the number of rows, or None if nothing to do."""
    def step() -> int | None:
        dt = open_table(settings, url)
        if dt is None:
            return None
        ds = dt.to_pyarrow_dataset()
        old = ds.schema
        if not needs_migration(old):
            return None
        new = _new_schema(old)
        rows = ds.count_rows()
        reader = pa.RecordBatchReader.from_batches(new, _convert(ds.to_batches(), old, new))
        write_deltalake(dt, reader, mode="overwrite", schema_mode="overwrite",
                        commit_properties=CommitProperties(custom_metadata={"dw.migration": "int64-ordering"}))
        return rows

    return with_commit_retry(step, f"migrate {url}")


def _new_schema(old: pa.Schema) -> pa.Schema:
    fields: list[pa.Field] = []
    pairs = {o: (s, r) for o, s, r in _PAIRS}
    for f in old:
        if f.name in pairs:
            s, r = pairs[f.name]
            fields += [pa.field(s, SEQ_TYPE, nullable=f.nullable), pa.field(r, SEQ_TYPE, nullable=f.nullable)]
        else:
            fields.append(f)
    return pa.schema(fields, metadata=old.metadata)


def _convert(batches: Iterator[pa.RecordBatch], old: pa.Schema, new: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The old batches with each DECIMAL ordering value split into (seq, row) by DuckDB; other columns as is."""
    present = [o for o, _, _ in _PAIRS if o in old.names]
    exprs = []
    for o, s, r in _PAIRS:
        if o in present:
            es, er = legacy_order_sql(o)
            exprs += [f"{es} AS {quote(s)}", f"{er} AS {quote(r)}"]
    sql = f"SELECT {', '.join(exprs)} FROM m_in"
    con = duckdb.connect()
    try:
        for b in batches:
            con.register("m_in", pa.Table.from_batches([b]).select(present))
            computed = con.sql(sql).to_arrow_table()
            con.unregister("m_in")
            cols = {n: computed[n] for n in computed.column_names}
            arrays = [cols[f.name] if f.name in cols else pa.chunked_array([b.column(f.name)]) for f in new]
            yield from pa.Table.from_arrays(arrays, schema=new).to_batches()
    finally:
        con.close()


def migrate_bronze(settings: Settings, client: str, model: StandardModel, result: MigrationResult) -> None:
    """Move every per-table bronze of the client into its one bronze table (see the module docstring)."""
    target = bronze_url(settings, client)
    for t in model.tables:
        old = table_url(settings, "bronze", client, t.name)
        if not table_exists(settings, old):
            continue
        app = f"dw.migrated.{t.name}"

        def step(old: str = old, app: str = app, table: str = t.name) -> int:
            dt = open_table(settings, target)
            assert dt is not None, f"bronze table missing: {target}"
            if dt.transaction_version(app) is not None:
                return 0  # copied by an interrupted run: only the old table is left to remove
            src = open_table(settings, old)
            assert src is not None
            ds = src.to_pyarrow_dataset()
            schema = pa.schema(dt.schema().to_arrow())
            reader = pa.RecordBatchReader.from_batches(schema, _with_table(ds.to_batches(), table, schema))
            write_deltalake(dt, reader, mode="append", commit_properties=CommitProperties(
                custom_metadata={"dw.migration": f"bronze-per-client:{table}"},
                app_transactions=[Transaction(app, 1)]))
            return ds.count_rows()

        rows = with_commit_retry(step, f"migrate {old}")
        fs, path = filesystem(settings, old)
        fs.delete_dir(path)
        result.migrated.append(old)
        result.rows += rows
        log.info("bronze of %s.%s moved into %s: %d row(s)", client, t.name, target, rows)


def _with_table(batches: Iterator[pa.RecordBatch], table: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for b in batches:
        t = pa.Table.from_batches([b])
        t = t.append_column(BRONZE_TABLE, pa.array([table] * t.num_rows, pa.string()))
        yield from t.select(schema.names).cast(schema).to_batches()
