"""Silver: the current state of each source table, maintained by an ordered MERGE of each batch of changes.

Order is the pair (`_dw_seq`, `_dw_seq_row`) (binlog file/position/row, stored in silver; see `ordering`): only
the latest change per key in a batch is merged, and only if newer than the row in silver, so replayed and
out-of-order batches are harmless.
Deletes remove the row and leave a tombstone (key, order) in `<lake>/meta/<client>/tombstones/<table>` so a late,
older upsert of a deleted key is dropped (Databricks AUTO CDC keeps tombstones the same way; maintenance
expires them after the retention period, beyond which a later-arriving older event is accepted).
A TRUNCATE at position T deletes every row older than T and is remembered in `truncations`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from dw_assets.settings import Settings

from .changes import latest_per_key, qi
from .commit_retry import with_commit_retry
from .ordering import ORDER_COLUMNS, SEQ, ChangeOrder, before_literal_sql, newer_sql, quote
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


def _filter_applicable(con: duckdb.DuckDBPyConnection, latest: pa.Table, current: pa.Table, tombs: pa.Table,
                       keys: Sequence[str]) -> pa.Table:
    """Changes that will match a MERGE clause: newer than silver, not older than a tombstone, deletes of rows
    silver has. Doing this before the MERGE avoids deltalake 1.6.6's "rows failed validation check" on CDF
    tables with NOT NULL columns when a source row matches no clause."""
    con.register("l_in", latest)
    con.register("s_in", current)
    con.register("t_in", tombs)
    on_s = " AND ".join(f"l.{qi(k)} = s.{qi(k)}" for k in keys)
    on_t = " AND ".join(f"l.{qi(k)} = t.{qi(k)}" for k in keys)
    try:
        return con.sql(
            f"SELECT l.* FROM l_in l LEFT JOIN s_in s ON {on_s} LEFT JOIN t_in t ON {on_t} "
            f"WHERE (s.{SEQ} IS NULL OR {newer_sql('l', 's')}) "
            f"AND (t.{SEQ} IS NULL OR {newer_sql('l', 't', or_equal=True)}) "
            f"AND NOT (l._dw_op = 'd' AND s.{SEQ} IS NULL)").to_arrow_table()
    finally:
        for n in ("l_in", "s_in", "t_in"):
            con.unregister(n)


def record_tombstones(settings: Settings, client: str, table: str, keys: Sequence[str], deletes: pa.Table,
                      now: datetime, con: duckdb.DuckDBPyConnection) -> int:
    """Upsert (key, seq) of deleted keys, keeping the newest delete per key."""
    if deletes.num_rows == 0:
        return 0
    url = meta_url(settings, client, f"{TOMBSTONES}/{table}")
    src = deletes.select(list(keys) + list(ORDER_COLUMNS)).append_column(
        "_dw_deleted_at", pa.array([now] * deletes.num_rows, pa.timestamp("us", tz="UTC")))

    def step() -> int:
        dt = _open(settings, url)
        existing = read_table(dt, columns=list(keys) + list(ORDER_COLUMNS))
        con.register("d_in", src)
        con.register("e_in", existing)
        on = " AND ".join(f"d.{qi(k)} = e.{qi(k)}" for k in keys)
        try:
            newer = con.sql(f"SELECT d.* FROM d_in d LEFT JOIN e_in e ON {on} "
                                f"WHERE e.{SEQ} IS NULL OR {newer_sql('d', 'e')}").to_arrow_table()
        finally:
            con.unregister("d_in")
            con.unregister("e_in")
        if newer.num_rows == 0:
            return 0
        cols = {dq(c): f"s.{dq(c)}" for c in newer.column_names}
        (dt.merge(newer, _key_predicate(keys),
                  source_alias="s", target_alias="t")
         .when_matched_update({**{dq(c): f"s.{dq(c)}" for c in ORDER_COLUMNS},
                               dq("_dw_deleted_at"): 's."_dw_deleted_at"'}, predicate=newer_sql("s", "t"))
         .when_not_matched_insert(cols).execute())
        return newer.num_rows

    return with_commit_retry(step, f"tombstones {client}.{table}")


def merge_silver(settings: Settings, client: str, table: str, keys: Sequence[str], typed: pa.Table,
                 columns: Sequence[str], con: duckdb.DuckDBPyConnection, now: datetime,
                 truncated_at: ChangeOrder | None = None) -> MergeCounts:
    """MERGE one batch of typed changes (any order, duplicates allowed) into silver.

    `columns` are silver's data columns; `truncated_at` drops changes at or before the table's last TRUNCATE.
    Retries the whole step (re-reading silver) when a concurrent writer wins the commit.
    """
    latest = latest_per_key(typed, keys, after=truncated_at)
    deletes = latest.filter(pc.equal(latest["_dw_op"], "d"))
    record_tombstones(settings, client, table, keys, deletes, now, con)
    url = table_url(settings, "silver", client, table)
    tomb_url = meta_url(settings, client, f"{TOMBSTONES}/{table}")
    data = list(columns) + list(ORDER_COLUMNS) + [SOURCE_TS]

    def step() -> MergeCounts:
        dt = _open(settings, url)
        current = read_table(dt, columns=list(keys) + list(ORDER_COLUMNS))
        tombs = read_table(_open(settings, tomb_url), columns=list(keys) + list(ORDER_COLUMNS))
        todo = _filter_applicable(con, latest, current, tombs, keys)
        counts = MergeCounts(ignored=typed.num_rows - todo.num_rows)
        if todo.num_rows == 0:
            return counts
        values = {dq(c): f"s.{dq(c)}" for c in data}
        newer = newer_sql("s", "t")  # re-checked inside the MERGE against the committed snapshot
        m = (dt.merge(todo, _key_predicate(keys), source_alias="s", target_alias="t")
             .when_matched_delete(predicate=f"s._dw_op = 'd' AND {newer}")
             .when_matched_update(values, predicate=f"s._dw_op <> 'd' AND {newer}")
             .when_not_matched_insert(values, predicate="s._dw_op <> 'd'")
             .execute())
        counts.inserted = int(m.get("num_target_rows_inserted", 0))
        counts.updated = int(m.get("num_target_rows_updated", 0))
        counts.deleted = int(m.get("num_target_rows_deleted", 0))
        counts.version = dt.version()
        counts.metrics = m
        return counts

    return with_commit_retry(step, f"silver merge {client}.{table}")
