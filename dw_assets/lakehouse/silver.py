"""Silver: the current state of each source table, maintained by an ordered MERGE of each batch of changes.

Order is the pair (`_dw_seq`, `_dw_seq_row`) (binlog file/position/row, stored in silver; see `ordering`): only
the latest change per key in a batch is merged, and only if newer than the row in silver, so replayed and
out-of-order batches are harmless.
Deletes remove the row; the delete event in bronze is its tombstone (key, order), so a late, older upsert of a
deleted key is dropped (Databricks AUTO CDC keeps tombstones the same way): a batch reads only the deletes at or
after its oldest change (`bronze.deletes_since`, pruned by `_dw_seq` statistics), which are the only ones that
can hold one of its changes back. No tombstone table, no extra commit, no expiry needed.
A TRUNCATE at position T deletes every row older than T and is remembered in `truncations`.
A batch's MERGE is one commit, carrying the batch number as silver's progress (application transaction
`dw.silver`): progress and data cannot disagree after a crash.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, Sequence

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction

from dw_assets.model import TypeSpec

from dw_assets.settings import Settings

from .bronze import BronzeView, deletes_since
from .changes import decode_events, latest_per_key
from .decoding import Encoding
from .commit_retry import with_commit_retry
from .ordering import ORDER_COLUMNS, SEQ, SEQ_TYPE, ChangeOrder, before_literal_sql, quote
from .paths import meta_url, open_table, read_table, table_url
from .tables import SOURCE_TS, TOMBSTONES


@dataclass
class MergeCounts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    ignored: int = 0  # stale, replayed, or deletes of keys silver never had
    version: int | None = None
    metrics: dict = field(default_factory=dict)


SILVER_APP = "dw.silver"  # application transaction id: the last batch a silver table applied
dq = quote  # deltalake's SQL expressions: DataFusion lower-cases unquoted names


def _key_predicate(keys: Sequence[str]) -> str:
    return " AND ".join(f"t.{dq(k)} = s.{dq(k)}" for k in keys)


def _open(settings: Settings, url: str) -> DeltaTable:
    dt = open_table(settings, url)
    if dt is None:
        raise FileNotFoundError(f"no Delta table at {url}")
    return dt


def truncate_silver(settings: Settings, client: str, table: str, at: ChangeOrder) -> int:
    """Delete every silver row older than the TRUNCATE at `at` (rows of later changes stay). Idempotent."""
    url = table_url(settings, "silver", client, table)

    def step() -> int:
        m = _open(settings, url).delete(before_literal_sql(at))
        return int(m.get("num_deleted_rows", 0))

    return with_commit_retry(step, f"silver truncate {client}.{table}")


def _filter_applicable(latest: pa.Table, current: pa.Table, tombs: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Changes that will match a MERGE clause: newer than silver, not older than a tombstone, deletes of rows
    silver has. Doing this before the MERGE avoids deltalake 1.6.6's "rows failed validation check" on CDF
    tables with NOT NULL columns when a source row matches no clause.

    The joins run in Polars on the keys and order columns only (a mask, then Arrow's filter keeps `latest`'s
    types as they are): ~1 ms where registering three relations in DuckDB cost ~11 ms per table."""
    seq, row = ORDER_COLUMNS
    l_side = pl.from_arrow(latest.select([*keys, seq, row, "_dw_op"])).with_row_index("_i")

    def side(t: pa.Table, tag: str) -> pl.DataFrame:
        # Keys cast to the batch's types so the join compares like with like (silver's may be NOT NULL etc.).
        cols = t.select([*keys, seq, row])
        cols = cols.cast(pa.schema([latest.schema.field(k).with_nullable(True) for k in keys]
                                   + [pa.field(seq, SEQ_TYPE), pa.field(row, SEQ_TYPE)]))
        df = pl.from_arrow(cols)
        assert isinstance(df, pl.DataFrame)
        return df.rename({seq: f"{seq}{tag}", row: f"{row}{tag}"})

    assert isinstance(l_side, pl.DataFrame)
    joined = (l_side.join(side(current, "_s"), on=list(keys), how="left")  # SQL's `=`: NULL matches nothing
              .join(side(tombs, "_t"), on=list(keys), how="left"))
    ls, lr = pl.col(seq), pl.col(row)
    ss, sr, ts, tr = (pl.col(f"{seq}_s"), pl.col(f"{row}_s"), pl.col(f"{seq}_t"), pl.col(f"{row}_t"))
    no_s = ss.is_null()
    keep = ((no_s | (ls > ss) | ((ls == ss) & (lr > sr)))
            & (ts.is_null() | (ls > ts) | ((ls == ts) & (lr >= tr)))
            & ~((pl.col("_dw_op") == "d") & no_s))
    rows = joined.filter(keep)["_i"].unique().sort()
    if rows.len() == latest.num_rows:
        return latest
    return latest.take(pa.array(rows.to_numpy(), pa.int64()))


def key_filter(latest: pa.Table, keys: Sequence[str]) -> pads.Expression:
    """A filter on silver selecting at least the rows of `latest`'s keys: per key column its values and their
    range (the range is what file statistics prune by; a composite key gives a superset, joined exactly later)."""
    where = None
    for k in keys:
        values = pc.unique(latest[k].combine_chunks().drop_null())
        f = pads.field(k)
        e = (f >= pc.min(values)) & (f <= pc.max(values)) & f.isin(values)
        where = e if where is None else where & e
    assert where is not None
    return where


def tombstones(con: duckdb.DuckDBPyConnection, deletes: pa.Table, key_fields: Sequence[pa.Field],
               specs: Mapping[str, TypeSpec] | None = None, encoding: Encoding | None = None) -> pa.Table:
    """(keys, `_dw_seq`, `_dw_seq_row`) of the newest delete per key among bronze delete events (see
    `bronze.deletes_since`); a key image that does not decode holds nothing back."""
    keys = [f.name for f in key_fields]
    empty = pa.schema([f.with_nullable(True) for f in key_fields]
                      + [pa.field(c, SEQ_TYPE) for c in ORDER_COLUMNS]).empty_table()
    if deletes.num_rows == 0:
        return empty
    typed = decode_events(con, deletes, key_fields, specs, encoding).typed
    if typed.num_rows == 0:
        return empty
    return latest_per_key(typed, keys).select([*keys, *ORDER_COLUMNS])


def read_tombstones(settings: Settings, client: str, table: str, con: duckdb.DuckDBPyConnection,
                    key_fields: Sequence[pa.Field], since_seq: int, specs: Mapping[str, TypeSpec] | None = None,
                    encoding: Encoding | None = None, bronze: BronzeView | None = None,
                    batch_events: pa.Table | None = None) -> pa.Table:
    """The tombstones that can hold back changes at `since_seq` or later (bronze's deletes from there on), plus
    those of a lake written before tombstones moved into bronze (its `tombstones` table, if it has one).

    Deletes among `batch_events` (the batch itself) are left out: the latest change per key in the batch already
    decides against them, so in-order streaming decodes nothing here, and reads nothing when bronze held no
    change of the table from `since_seq` on before the batch (`bronze`: the batch's view of it)."""
    if bronze is not None and batch_events is not None and not bronze.may_hold(table, since_seq):
        deletes = pa.table({})
    else:
        deletes = deletes_since(settings, client, table, since_seq, bronze.dataset() if bronze is not None else None)
    if deletes.num_rows and batch_events is not None and batch_events.num_rows:
        ident = ["key", *ORDER_COLUMNS]
        own = pl.from_arrow(batch_events.select(ident))
        rest = pl.from_arrow(deletes).with_row_index("_i").join(own, on=ident, how="anti", nulls_equal=True)
        deletes = deletes.take(pa.array(rest["_i"].to_numpy()))
    tombs = tombstones(con, deletes, key_fields, specs, encoding)
    legacy = open_table(settings, meta_url(settings, client, f"{TOMBSTONES}/{table}"))
    if legacy is not None:
        old = read_table(legacy, columns=[f.name for f in key_fields] + list(ORDER_COLUMNS),
                         filter=pads.field(SEQ) >= since_seq)
        if old.num_rows:  # one row per key: the join in `_filter_applicable` expects it
            keys = [f.name for f in key_fields]
            tombs = latest_per_key(pa.concat_tables([tombs, old.cast(tombs.schema)]), keys)
    return tombs


def merge_silver(settings: Settings, client: str, table: str, keys: Sequence[str], typed: pa.Table,
                 columns: Sequence[str], con: duckdb.DuckDBPyConnection, now: datetime,
                 truncated_at: ChangeOrder | None = None, tombs: pa.Table | None = None,
                 batch: int | None = None, dt: DeltaTable | None = None) -> MergeCounts:
    """MERGE one batch of typed changes (any order, duplicates allowed) into silver.

    `columns` are silver's data columns; `truncated_at` drops changes at or before the table's last TRUNCATE;
    `tombs` are the deletes that can hold changes back (default: read from bronze, `read_tombstones`); `batch`
    is recorded in the commit as silver's progress (application transaction `SILVER_APP`); `dt` is silver as
    the caller opened it (a retry re-opens it). Only silver's rows of
    the batch's keys are read (`key_filter`: file statistics prune the rest). Retries the whole step
    (re-reading silver) when a concurrent writer wins the commit.
    """
    latest = latest_per_key(typed, keys, after=truncated_at)
    if latest.num_rows == 0:
        return MergeCounts(ignored=typed.num_rows)
    if tombs is None:
        key_fields = [typed.schema.field(k) for k in keys]
        tombs = read_tombstones(settings, client, table, con, key_fields, int(pc.min(latest[SEQ]).as_py()))
    url = table_url(settings, "silver", client, table)
    data = list(columns) + list(ORDER_COLUMNS) + [SOURCE_TS]
    where = key_filter(latest, keys)
    props = CommitProperties(app_transactions=[Transaction(SILVER_APP, batch)]) if batch is not None else None
    opened = [dt]

    def step() -> MergeCounts:
        dt = opened.pop() if opened and opened[0] is not None else _open(settings, url)
        opened.clear()
        current = read_table(dt, columns=list(keys) + list(ORDER_COLUMNS), filter=where)
        todo = _filter_applicable(latest, current, tombs, keys)
        counts = MergeCounts(ignored=typed.num_rows - todo.num_rows)
        if todo.num_rows == 0:
            return counts
        values = {dq(c): f"s.{dq(c)}" for c in data}
        # No ordering re-check in the clauses: the MERGE runs on `dt`, the very snapshot `todo` was filtered
        # against, so a matched row is always older than its change (a concurrent commit is the conflict
        # check's and `with_commit_retry`'s to catch, as before). Dropping it cut ~15 % of a MERGE's CPU.
        # streamed_exec=False: deltalake 1.6's streamed MERGE cannot prune target files by the source's key
        # range and rewrites-scans every file; materialised, it skips files the batch's keys cannot touch.
        m = (dt.merge(todo, _key_predicate(keys), source_alias="s", target_alias="t", commit_properties=props,
                      streamed_exec=False)
             .when_matched_delete(predicate="s._dw_op = 'd'")
             .when_matched_update(values)
             .when_not_matched_insert(values, predicate="s._dw_op <> 'd'")
             .execute())
        counts.inserted = int(m.get("num_target_rows_inserted", 0))
        counts.updated = int(m.get("num_target_rows_updated", 0))
        counts.deleted = int(m.get("num_target_rows_deleted", 0))
        counts.version = dt.version()
        counts.metrics = m
        return counts

    return with_commit_retry(step, f"silver merge {client}.{table}")
