"""Bronze: every landed change event of a client, once, in ONE Delta table per client partitioned by table.

One table per client makes a micro-batch's bronze write one commit whatever the number of tables (it was one
per table), and that commit is the batch's seal: it carries the application transaction (`dw.bronze`, batch)
and, in its commit metadata, the batch's landing files (`dw.files`: file, table, topic, partition, offset,
rows). If the process dies before the landing manifest is appended, the next apply finds the bronze
transaction ahead of the manifest and records those files from the commit, without re-reading or re-appending
them (the kafka-delta-ingest / Spark `txnAppId` mechanism; the manifest stays as the listing-friendly record).

A change is identified by its table, its source coordinates: the order pair (`_dw_seq`, `_dw_seq_row`), `op`
and the Kafka key. The key is needed because snapshot chunks taken at the same binlog position number their
rows from 0 each, and `op` because a primary-key change is a delete and a create at one position; a TRUNCATE
(sent on every partition, key NULL) is kept once. Redeliveries (a capture restart re-emits the transaction in
flight, a producer retry) are dropped within a batch (`unique_changes`) and against what bronze holds (an
anti-join read for the batch's seq values only: exact int64 statistics prune the files). Events without
coordinates (or without a key, other than a TRUNCATE) are never dropped.

Bronze also serves as the tombstone store: the deletes of a table at or after a batch's oldest change
(`deletes_since`) are exactly the ones that can hold back a late, older change of a deleted key, and the
statistics on `_dw_seq` prune everything older, so no separate tombstone table (and commit) is needed.

Each append also records, per table, the highest `_dw_seq` bronze holds (an application transaction
`dw.bronze.seq/<table>` in the same commit: it survives compaction and checkpoints and costs no read). A batch
whose changes of a table all come after that mark can neither repeat one nor be held back by an older delete,
so in-order streaming reads nothing from bronze: building the dataset alone lists every live file (a quarter
of a micro-batch's CPU, and growing with the table). Without a mark (a lake from before, a table's first
events) bronze is read as before and the mark written.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from dw_assets.settings import Settings

from .changes import connect
from .commit_retry import with_commit_retry
from .ordering import ORDER_COLUMNS, SEQ, quote
from .paths import bronze_url, open_table, read_table
from .tables import BRONZE_TABLE

HISTORY_LOOKBACK = 50  # commits; maintenance commits in between carry no dw.batch
BRONZE_APP = "dw.bronze"  # application transaction id: the last batch sealed in bronze
SEQ_MARK = "dw.bronze.seq/"  # + table: application transaction whose version is that table's highest `_dw_seq`


@dataclass(frozen=True)
class BronzeAppend:
    rows: int
    version: int | None
    duplicates: int = 0  # events bronze already held (redeliveries)
    per_table: dict[str, int] | None = None  # rows appended per table
    marks_before: dict[str, int | None] = field(default_factory=dict)  # the batch's tables' marks before it


def seq_marks(dt: DeltaTable, tables: Iterable[str]) -> dict[str, int | None]:
    """Per table the highest `_dw_seq` bronze holds, as its appends recorded it (None: not recorded)."""
    return {t: dt.transaction_version(SEQ_MARK + t) for t in tables}


class BronzeView:
    """Bronze as one apply reads it: each table's mark before the batch, and the dataset, built on first use
    (and once: the apply's table threads share it)."""

    def __init__(self, dt: DeltaTable, marks_before: Mapping[str, int | None] | None = None):
        self.dt = dt
        self._before = dict(marks_before or {})
        self._ds: pads.Dataset | None = None
        self._lock = threading.Lock()

    def may_hold(self, table: str, seq: int) -> bool:
        """Whether bronze held, before this batch, a change of `table` at `seq` or later."""
        mark = self._before[table] if table in self._before else self.dt.transaction_version(SEQ_MARK + table)
        return mark is None or seq <= mark

    def dataset(self) -> pads.Dataset:
        with self._lock:
            if self._ds is None:
                self._ds = self.dt.to_pyarrow_dataset()
            return self._ds


IDENTITY = (BRONZE_TABLE, *ORDER_COLUMNS, "op", "key")  # with known source coordinates; see the module docstring
# Identity is certain only with coordinates, and with a key unless a TRUNCATE: anything else is kept as is.
_KNOWN = "source_file IS NOT NULL AND source_pos IS NOT NULL AND (\"key\" IS NOT NULL OR op = 't')"
_SAME = " AND ".join(f"a.{quote(c)} IS NOT DISTINCT FROM b.{quote(c)}" for c in IDENTITY)


def _indexed(rows: pa.Table, columns: list[str]) -> pa.Table:
    """The identity columns of `rows` and each row's index (`_i`), for DuckDB to pick rows by."""
    return rows.select([*IDENTITY, *columns]).append_column("_i", pa.array(np.arange(rows.num_rows, dtype=np.int64)))


def unique_changes(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> pa.Table:
    """`rows` (bronze rows) with each change once: the first delivery by Kafka coordinates."""
    con.register("u_in", _indexed(rows, ["source_file", "source_pos", "kafka_partition", "kafka_offset"]))
    try:
        keep = con.sql(f"SELECT _i FROM u_in WHERE NOT ({_KNOWN}) OR _i IN ("
                       f" SELECT first(_i ORDER BY kafka_partition, kafka_offset, _i) FROM u_in WHERE {_KNOWN}"
                       f" GROUP BY {', '.join(quote(c) for c in IDENTITY)}) ORDER BY _i").to_arrow_table()["_i"]
    finally:
        con.unregister("u_in")
    return rows if len(keep) == rows.num_rows else rows.take(keep)


def _seq_range(rows: pa.Table, how: str) -> dict[str, int]:
    """Per table the min or max `_dw_seq` of `rows` (rows without one left out)."""
    narrow = rows.select([BRONZE_TABLE, SEQ])  # bronze rows are wide (row images): filter only these two
    agg = narrow.filter(pc.is_valid(narrow[SEQ])).group_by(BRONZE_TABLE).aggregate([(SEQ, how)])
    return dict(zip(agg[BRONZE_TABLE].to_pylist(), agg[f"{SEQ}_{how}"].to_pylist()))


def _not_in_bronze(dt: DeltaTable, rows: pa.Table, marks: Mapping[str, int | None]) -> pa.Table:
    """`rows` minus the changes bronze already holds (compared on IDENTITY, read for the batch's seqs only, and
    only for tables whose changes reach back to their mark: the others cannot repeat anything)."""
    narrow = rows.select([BRONZE_TABLE, SEQ, "source_file", "source_pos"])  # not the wide row images
    known = narrow.filter(pc.and_(pc.is_valid(narrow["source_file"]), pc.is_valid(narrow["source_pos"])))
    overlapping = [t for t, low in _seq_range(known, "min").items() if marks.get(t) is None or low <= marks[t]]
    if not overlapping:
        return rows
    known = known.filter(pc.is_in(known[BRONZE_TABLE], pa.array(overlapping, pa.string())))
    seqs = pc.unique(known[SEQ])
    held = read_table(dt, columns=list(IDENTITY), filter=pads.field(BRONZE_TABLE).isin(overlapping) & (
        pads.field(SEQ) >= pc.min(seqs)) & (pads.field(SEQ) <= pc.max(seqs)) & pads.field(SEQ).isin(seqs))
    if held.num_rows == 0:
        return rows
    con = connect()  # may run in a worker thread: a connection of its own
    try:
        con.register("a", _indexed(rows, ["source_file", "source_pos"]))
        con.register("b", held)
        keep = con.sql(f"SELECT _i FROM a WHERE NOT ({_KNOWN}) OR NOT EXISTS (SELECT 1 FROM b WHERE {_SAME}) "
                       "ORDER BY _i").to_arrow_table()["_i"]
    finally:
        con.close()
    return rows if len(keep) == rows.num_rows else rows.take(keep)


def sealed_batch(dt: DeltaTable) -> int:
    """The last batch committed to bronze (its application transaction), 0 when none."""
    return dt.transaction_version(BRONZE_APP) or 0


def files_of_batch(dt: DeltaTable, batch: int) -> list[dict]:
    """The landing files bronze's commit(s) of `batch` recorded (newest commits first, stop at an older batch):
    dicts with file, table, topic, partition, start_offset, rows."""
    found: list[dict] = []
    for commit in dt.history(HISTORY_LOOKBACK):
        b = commit.get("dw.batch")
        if b is None:
            continue
        if int(b) < batch:
            break
        if int(b) == batch:
            found += json.loads(commit.get("dw.files", "[]"))
    return found


def append_bronze(settings: Settings, client: str, rows: pa.Table, batch: int, files: list[dict],
                  dt: DeltaTable | None = None) -> BronzeAppend:
    """Append the batch's events of all tables (each change once, see `unique_changes`) minus the changes bronze
    holds from earlier deliveries, in one commit that seals `batch` (see the module docstring).

    `files` describes the batch's landing files (recorded in the commit). The commit is made even when every
    event was a duplicate: the seal is what later applies go by. `dt`: bronze as the caller opened it (a retry
    re-opens it); it is at the new version afterwards."""
    url = bronze_url(settings, client)
    opened = [dt]

    def step() -> BronzeAppend:
        dt = opened.pop() if opened and opened[0] is not None else open_table(settings, url)
        opened.clear()
        assert dt is not None, f"bronze table missing: {url}"
        if sealed_batch(dt) >= batch:  # a retried step whose commit had gone through
            return BronzeAppend(0, dt.version(), 0, {})
        marks = seq_marks(dt, pc.unique(rows[BRONZE_TABLE]).to_pylist()) if rows.num_rows else {}
        fresh = _not_in_bronze(dt, rows, marks) if rows.num_rows else rows
        props = CommitProperties(custom_metadata={"dw.batch": str(batch), "dw.files": json.dumps(files)},
                                 app_transactions=[Transaction(BRONZE_APP, batch),
                                                   *_advanced_marks(dt, marks, fresh)])
        write_deltalake(dt, fresh, mode="append", commit_properties=props)
        counts = pc.value_counts(fresh[BRONZE_TABLE]).to_pylist() if fresh.num_rows else []
        return BronzeAppend(fresh.num_rows, dt.version(), rows.num_rows - fresh.num_rows,
                            {c["values"]: c["counts"] for c in counts}, marks)

    return with_commit_retry(step, f"bronze append {client}")


def _advanced_marks(dt: DeltaTable, marks: Mapping[str, int | None], fresh: pa.Table) -> list[Transaction]:
    """The mark transactions of the tables whose highest seq this append raises; a table without a mark gets
    one from what bronze holds of it (read once in the lake's life)."""
    unknown = [t for t, m in marks.items() if m is None]
    held: dict[str, int] = {}
    if unknown:
        ds = dt.to_pyarrow_dataset()
        held = _seq_range(ds.to_table(columns=[BRONZE_TABLE, SEQ], filter=pads.field(BRONZE_TABLE).isin(unknown)),
                          "max")
    tops = _seq_range(fresh, "max")
    out = []
    for t in sorted(set(tops) | set(unknown)):
        seen = [v for v in (marks.get(t), held.get(t), tops.get(t)) if v is not None]
        if seen and max(seen) != marks.get(t):
            out.append(Transaction(SEQ_MARK + t, max(seen)))
    return out


def bronze_dataset(settings: Settings, client: str) -> pads.Dataset | None:
    """The client's bronze as a pyarrow dataset (one per apply: building it lists every live file once)."""
    dt = open_table(settings, bronze_url(settings, client))
    return None if dt is None else dt.to_pyarrow_dataset()


def read_bronze_since(settings: Settings, client: str, table: str, after_batch: int,
                      up_to_batch: int | None = None, dataset: pads.Dataset | None = None) -> pa.Table:
    """Bronze events of one table of batches after `after_batch` (and up to `up_to_batch`); the partition and
    file statistics on `_dw_batch` prune the rest."""
    ds = dataset or bronze_dataset(settings, client)
    assert ds is not None
    where = (pads.field(BRONZE_TABLE) == table) & (pads.field("_dw_batch") > after_batch)
    if up_to_batch is not None:
        where = where & (pads.field("_dw_batch") <= up_to_batch)
    return ds.to_table(filter=where)


def deletes_since(settings: Settings, client: str, table: str, seq: int,
                  dataset: pads.Dataset | None = None) -> pa.Table:
    """The table's delete events in bronze at binlog position `seq` or later: the candidate tombstones of a
    batch whose oldest change is at `seq` (statistics on `_dw_seq` prune the files of older changes)."""
    ds = dataset or bronze_dataset(settings, client)
    if ds is None:
        return pa.table({})
    return ds.to_table(filter=(pads.field(BRONZE_TABLE) == table) & (pads.field("op") == "d")
                       & (pads.field(SEQ) >= seq))
