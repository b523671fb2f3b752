"""Bronze: every landed change event of a table, once.

A change is identified by its source coordinates: the order pair (`_dw_seq`, `_dw_seq_row`), `op` and the Kafka
key. The key is needed because snapshot chunks taken at the same binlog position number their rows from 0
each, and `op` because a primary-key change is a delete and a create at one position; a TRUNCATE (sent on
every partition, key NULL) is kept once. Redeliveries (a capture restart re-emits the transaction in flight, a
producer retry) are dropped within a batch (`unique_changes`) and against what bronze holds (an anti-join on
the batch's seq values, which exact int64 statistics prune to few files). Events without coordinates (or
without a key, other than a TRUNCATE) are never dropped. Each append commit also carries `dw.batch` and
`dw.files`, so the re-run of a batch whose manifest commit was lost skips its files without reading them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, write_deltalake

from dw_assets.settings import Settings

from .commit_retry import with_commit_retry
from .ordering import ORDER_COLUMNS, SEQ, quote
from .paths import open_table, read_table, table_url

HISTORY_LOOKBACK = 50  # commits; maintenance commits in between carry no dw.batch


@dataclass(frozen=True)
class BronzeAppend:
    rows: int
    skipped_files: tuple[str, ...]  # already in bronze from an interrupted run
    version: int | None
    duplicates: int = 0  # events bronze already held (redeliveries)


IDENTITY = (*ORDER_COLUMNS, "op", "key")  # with known source coordinates; see the module docstring
# Identity is certain only with coordinates, and with a key unless a TRUNCATE: anything else is kept as is.
_KNOWN = "source_file IS NOT NULL AND source_pos IS NOT NULL AND (\"key\" IS NOT NULL OR op = 't')"
_SAME = " AND ".join(f"a.{quote(c)} IS NOT DISTINCT FROM b.{quote(c)}" for c in IDENTITY)


def _indexed(rows: pa.Table, columns: list[str]) -> pa.Table:
    """The identity columns of `rows` and each row's index (`_i`), for DuckDB to pick rows by."""
    return rows.select([*IDENTITY, *columns]).append_column("_i", pa.array(np.arange(rows.num_rows, dtype=np.int64)))


def unique_changes(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> pa.Table:
    """`rows` (bronze rows of one table) with each change once: the first delivery by Kafka coordinates."""
    con.register("u_in", _indexed(rows, ["source_file", "source_pos", "kafka_partition", "kafka_offset"]))
    try:
        keep = con.sql(f"SELECT _i FROM u_in WHERE NOT ({_KNOWN}) OR _i IN ("
                       f" SELECT first(_i ORDER BY kafka_partition, kafka_offset, _i) FROM u_in WHERE {_KNOWN}"
                       f" GROUP BY {', '.join(quote(c) for c in IDENTITY)}) ORDER BY _i").to_arrow_table()["_i"]
    finally:
        con.unregister("u_in")
    return rows if len(keep) == rows.num_rows else rows.take(keep)


def _not_in_bronze(dt: DeltaTable, rows: pa.Table) -> pa.Table:
    """`rows` minus the changes bronze already holds (compared on IDENTITY, read for the batch's seqs only)."""
    seqs = pc.unique(rows.filter(pc.and_(pc.is_valid(rows["source_file"]), pc.is_valid(rows["source_pos"])))[SEQ])
    if len(seqs) == 0:
        return rows
    held = read_table(dt, columns=list(IDENTITY), filter=(pads.field(SEQ) >= pc.min(seqs)) & (
        pads.field(SEQ) <= pc.max(seqs)) & pads.field(SEQ).isin(seqs))
    if held.num_rows == 0:
        return rows
    con = duckdb.connect()  # the bronze appends run in worker threads: a connection of their own
    try:
        con.register("a", _indexed(rows, ["source_file", "source_pos"]))
        con.register("b", held)
        keep = con.sql(f"SELECT _i FROM a WHERE NOT ({_KNOWN}) OR NOT EXISTS (SELECT 1 FROM b WHERE {_SAME}) "
                       "ORDER BY _i").to_arrow_table()["_i"]
    finally:
        con.close()
    return rows if len(keep) == rows.num_rows else rows.take(keep)


def files_in_batch(dt: DeltaTable, batch: int) -> set[str]:
    """Landing files already appended under `batch` (newest commits first, stop at an older batch)."""
    found: set[str] = set()
    for commit in dt.history(HISTORY_LOOKBACK):
        b = commit.get("dw.batch")
        if b is None:
            continue
        if int(b) < batch:
            break
        if int(b) == batch:
            found.update(json.loads(commit.get("dw.files", "[]")))
    return found


def append_bronze(settings: Settings, client: str, table: str, rows: pa.Table, batch: int) -> BronzeAppend:
    """Append the batch's events of one table (each change once, see `unique_changes`), minus the files an
    interrupted run already appended and the changes bronze holds from earlier deliveries."""
    url = table_url(settings, "bronze", client, table)

    def step() -> BronzeAppend:
        dt = open_table(settings, url)
        assert dt is not None, f"bronze table missing: {url}"
        done = files_in_batch(dt, batch)
        todo = rows
        if done:
            todo = rows.filter(pc.invert(pc.is_in(rows["_dw_landing_file"], pa.array(sorted(done), pa.string()))))
        fresh = _not_in_bronze(dt, todo) if todo.num_rows else todo
        duplicates = todo.num_rows - fresh.num_rows
        files = sorted(set(fresh["_dw_landing_file"].to_pylist())) if fresh.num_rows else []
        if not files:
            return BronzeAppend(0, tuple(sorted(done)), None, duplicates)
        write_deltalake(dt, fresh, mode="append", commit_properties=CommitProperties(
            custom_metadata={"dw.batch": str(batch), "dw.files": json.dumps(files)}))
        return BronzeAppend(fresh.num_rows, tuple(sorted(done)), dt.version(), duplicates)

    return with_commit_retry(step, f"bronze append {client}.{table}")


def read_bronze_since(settings: Settings, client: str, table: str, after_batch: int,
                      up_to_batch: int | None = None) -> pa.Table:
    """Bronze events of batches after `after_batch` (and up to `up_to_batch`); file statistics on `_dw_batch`
    prune the rest."""
    dt = open_table(settings, table_url(settings, "bronze", client, table))
    assert dt is not None
    where = pads.field("_dw_batch") > after_batch
    if up_to_batch is not None:
        where = where & (pads.field("_dw_batch") <= up_to_batch)
    return read_table(dt, filter=where)

