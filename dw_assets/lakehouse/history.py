"""SCD type 2 history (`silver_history/<client>/<table>`), like Databricks AUTO CDC stored_as_scd_type=2.

One row per key version: the change that started it (`_dw_seq`/`_dw_seq_row`, `valid_from`) and the one that
ended it (`_dw_seq_end`/`_dw_seq_end_row`, `valid_to`: the next update, a delete or a TRUNCATE); `is_current`
marks the open version.
Out-of-order and replayed batches are handled by rebuilding the version chain of the affected keys from the
stored versions that can change (open, or ended at/after the batch's oldest change) plus the batch's events,
then MERGEing on (key, `_dw_seq`, `_dw_seq_row`).
"""
from __future__ import annotations

from typing import Sequence

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction

from dw_assets.settings import Settings

from . import prepared
from .changes import qi
from .commit_retry import with_commit_retry
from .ordering import ORDER_COLUMNS, SEQ, SEQ_END, SEQ_END_ROW, SEQ_ROW, min_order
from .paths import open_table, read_table, table_url
from .silver import MergeCounts, dq, key_filter
from .tables import SOURCE_TS


HISTORY_APP = "dw.history"  # application transaction id: the last batch the history table applied


def apply_history(settings: Settings, client: str, table: str, keys: Sequence[str], columns: Sequence[str],
                  typed: pa.Table, truncates: pa.Table, con: duckdb.DuckDBPyConnection,
                  batch: int | None = None, dt: DeltaTable | None = None) -> MergeCounts:
    """Add a batch's changes (typed events of all ops, and truncates: `_dw_seq`, `_dw_seq_row`,
    `_dw_source_ts_ms`) in one commit, which records `batch` as the history's progress (`HISTORY_APP`); `dt`:
    the history table at its latest version, as the caller opened it (a retry re-opens it)."""
    if typed.num_rows == 0 and truncates.num_rows == 0:
        return MergeCounts()
    url = table_url(settings, "silver_history", client, table)
    oldest = min(o for o in (min_order(typed), min_order(truncates)) if o is not None)
    k = ", ".join(qi(c) for c in keys)
    data = ", ".join(qi(c) for c in columns)
    # A truncate event carries only keys: NULL for the other data columns.
    trunc_data = ", ".join(qi(c) if c in keys else f"NULL AS {qi(c)}" for c in columns)

    opened = [dt]

    def step() -> MergeCounts:
        dt = opened.pop() if opened and opened[0] is not None else open_table(settings, url)
        opened.clear()
        assert dt is not None, f"history table missing: {url}"
        # Only versions still open or ended at/after the oldest new change can get a different end.
        # Filtered on `_dw_seq_end` alone: a superset (a version ended at the oldest seq, before its row, comes
        # along and is rebuilt unchanged); exact int64 statistics prune the files of older closed versions.
        # Without a truncate (which ends every key's open version) only the batch's keys can change: their
        # values and ranges prune the files too, so the read follows the batch, not the history's size.
        where = pads.field(SEQ_END).is_null() | (pads.field(SEQ_END) >= oldest.seq)
        if truncates.num_rows == 0:
            where = where & key_filter(typed, keys)
        existing = read_table(dt, columns=[*columns, SEQ, SEQ_ROW, SEQ_END, SEQ_END_ROW, "valid_from", "valid_to"],
                              filter=where)
        same_key = " AND ".join(f"v.{qi(c)} = x.{qi(c)}" for c in keys)
        batch_keys = "" if truncates.num_rows else f"WHERE EXISTS (SELECT 1 FROM {{ev_in}} v WHERE {same_key})"
        end_starts_none = " AND ".join(f"n.{qi(c)} = e.{qi(c)}" for c in keys)
        sql = f"""
        WITH ex AS (SELECT * FROM {{ex_in}} x {batch_keys}),
        events AS (
            SELECT {data}, 'u' AS op, {SEQ} AS seq, {SEQ_ROW} AS seq_row, epoch_ms(valid_from) AS ts, 0 AS is_new
              FROM ex
            UNION ALL  -- a stored end that starts no stored version was a delete or a truncate
            SELECT {data}, 'd', {SEQ_END}, {SEQ_END_ROW}, epoch_ms(valid_to), 0 FROM ex e
             WHERE {SEQ_END} IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM ex n WHERE {end_starts_none}
                  AND n.{SEQ} = e.{SEQ_END} AND n.{SEQ_ROW} = e.{SEQ_END_ROW})
            UNION ALL
            SELECT {data}, CASE WHEN _dw_op = 'd' THEN 'd' ELSE 'u' END, {SEQ}, {SEQ_ROW}, {SOURCE_TS}, 1 FROM {{ev_in}}
            UNION ALL  -- a truncate ends every key's open version
            SELECT {trunc_data}, 'd', tr.{SEQ}, tr.{SEQ_ROW}, tr.{SOURCE_TS}, 1
              FROM (SELECT DISTINCT {k} FROM (SELECT {k} FROM ex UNION ALL SELECT {k} FROM {{ev_in}})) keys_
              CROSS JOIN {{tr_in}} tr
        ),
        uniq AS (SELECT * FROM events
                 QUALIFY row_number() OVER (PARTITION BY {k}, seq, seq_row ORDER BY is_new DESC) = 1),
        chain AS (
            SELECT *, lead(seq) OVER w AS seq_end, lead(seq_row) OVER w AS seq_end_row, lead(ts) OVER w AS ts_end
              FROM uniq WINDOW w AS (PARTITION BY {k} ORDER BY seq, seq_row)
        )
        SELECT {data}, seq AS {SEQ}, seq_row AS {SEQ_ROW}, seq_end AS {SEQ_END}, seq_end_row AS {SEQ_END_ROW},
               make_timestamp(ts * 1000)::TIMESTAMPTZ AS valid_from,
               make_timestamp(ts_end * 1000)::TIMESTAMPTZ AS valid_to,
               seq_end IS NULL AS is_current, ts AS {SOURCE_TS}
          FROM chain WHERE op = 'u'
        """
        rows = prepared.POOL.run(sql, {"ev_in": typed, "ex_in": existing, "tr_in": truncates})
        if rows.num_rows == 0:
            return MergeCounts()
        target = pa.schema(dt.schema().to_arrow())
        rows = rows.cast(pa.schema([pa.field(f.name, target.field(f.name).type) for f in rows.schema]))
        values = {dq(c): f"s.{dq(c)}" for c in rows.column_names}
        pred = " AND ".join(f"t.{dq(c)} = s.{dq(c)}" for c in list(keys) + list(ORDER_COLUMNS))
        props = CommitProperties(app_transactions=[Transaction(HISTORY_APP, batch)]) if batch is not None else None
        # Materialised source (not streamed): lets the MERGE prune target files (see silver.merge_silver).
        m = (dt.merge(rows, pred, source_alias="s", target_alias="t", commit_properties=props,
                      streamed_exec=False)
             .when_matched_update(values).when_not_matched_insert(values).execute())
        return MergeCounts(inserted=int(m.get("num_target_rows_inserted", 0)),
                           updated=int(m.get("num_target_rows_updated", 0)), version=dt.version(), metrics=m)

    return with_commit_retry(step, f"history merge {client}.{table}")

