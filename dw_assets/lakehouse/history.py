"""SCD type 2 history (`silver_history/<client>/<table>`), like Databricks AUTO CDC stored_as_scd_type=2.

One row per key version: the change that started it (`_dw_seq`, `valid_from`) and the one that ended it
(`_dw_seq_end`, `valid_to`: the next update, a delete or a TRUNCATE); `is_current` marks the open version.
Out-of-order and replayed batches are handled by rebuilding the version chain of the affected keys from the
stored versions that can change (open, or ended at/after the batch's oldest change) plus the batch's events,
then MERGEing on (key, `_dw_seq`).
"""
from __future__ import annotations

from typing import Sequence

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from dw_assets.settings import Settings

from .changes import qi
from .commit_retry import with_commit_retry
from .paths import open_table, read_table, table_url
from .silver import MergeCounts, dq
from .tables import SEQ, SOURCE_TS


def apply_history(settings: Settings, client: str, table: str, keys: Sequence[str], columns: Sequence[str],
                  typed: pa.Table, truncates: pa.Table, con: duckdb.DuckDBPyConnection) -> MergeCounts:
    """Add a batch's changes (typed events of all ops, and truncates: `_dw_seq`, `_dw_source_ts_ms`)."""
    if typed.num_rows == 0 and truncates.num_rows == 0:
        return MergeCounts()
    url = table_url(settings, "silver_history", client, table)
    seqs = [s for s in (typed[SEQ].to_pylist() + truncates[SEQ].to_pylist()) if s is not None]
    min_seq = min(seqs)
    k = ", ".join(qi(c) for c in keys)
    data = ", ".join(qi(c) for c in columns)
    # A truncate event carries only keys: NULL for the other data columns.
    trunc_data = ", ".join(qi(c) if c in keys else f"NULL AS {qi(c)}" for c in columns)

    def step() -> MergeCounts:
        dt = open_table(settings, url)
        assert dt is not None, f"history table missing: {url}"
        # Only versions still open or ended at/after the oldest new change can get a different end.
        existing = read_table(dt, columns=list(columns) + [SEQ, "_dw_seq_end", "valid_from", "valid_to"],
                              filter=pads.field("_dw_seq_end").is_null() | (pads.field("_dw_seq_end") >= min_seq))
        con.register("ev_in", typed)
        con.register("ex_in", existing)
        con.register("tr_in", truncates)
        same_key = " AND ".join(f"v.{qi(c)} = x.{qi(c)}" for c in keys)
        key_filter = "" if truncates.num_rows else f"WHERE EXISTS (SELECT 1 FROM ev_in v WHERE {same_key})"
        sql = f"""
        WITH ex AS (SELECT * FROM ex_in x {key_filter}),
        events AS (
            SELECT {data}, 'u' AS op, {SEQ} AS seq, epoch_ms(valid_from) AS ts, 0 AS is_new FROM ex
            UNION ALL  -- a stored end that starts no stored version was a delete or a truncate
            SELECT {data}, 'd', "_dw_seq_end", epoch_ms(valid_to), 0 FROM ex e
             WHERE "_dw_seq_end" IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM ex n WHERE {' AND '.join(f'n.{qi(c)} = e.{qi(c)}' for c in keys)}
                  AND n.{SEQ} = e."_dw_seq_end")
            UNION ALL
            SELECT {data}, CASE WHEN _dw_op = 'd' THEN 'd' ELSE 'u' END, {SEQ}, {SOURCE_TS}, 1 FROM ev_in
            UNION ALL  -- a truncate ends every key's open version
            SELECT {trunc_data}, 'd', tr.{SEQ}, tr.{SOURCE_TS}, 1
              FROM (SELECT DISTINCT {k} FROM (SELECT {k} FROM ex UNION ALL SELECT {k} FROM ev_in)) keys_
              CROSS JOIN tr_in tr
        ),
        uniq AS (SELECT * FROM events QUALIFY row_number() OVER (PARTITION BY {k}, seq ORDER BY is_new DESC) = 1),
        chain AS (
            SELECT *, lead(seq) OVER w AS seq_end, lead(ts) OVER w AS ts_end FROM uniq
            WINDOW w AS (PARTITION BY {k} ORDER BY seq)
        )
        SELECT {data}, seq AS {SEQ}, seq_end AS "_dw_seq_end",
               make_timestamp(ts * 1000)::TIMESTAMPTZ AS valid_from,
               make_timestamp(ts_end * 1000)::TIMESTAMPTZ AS valid_to,
               seq_end IS NULL AS is_current, ts AS {SOURCE_TS}
          FROM chain WHERE op = 'u'
        """
        try:
            rows = con.sql(sql).to_arrow_table()
        finally:
            for n in ("ev_in", "ex_in", "tr_in"):
                con.unregister(n)
        if rows.num_rows == 0:
            return MergeCounts()
        target = pa.schema(dt.schema().to_arrow())
        rows = rows.cast(pa.schema([pa.field(f.name, target.field(f.name).type) for f in rows.schema]))
        values = {dq(c): f"s.{dq(c)}" for c in rows.column_names}
        pred = " AND ".join(f"t.{dq(c)} = s.{dq(c)}" for c in list(keys) + [SEQ])
        m = (dt.merge(rows, pred, source_alias="s", target_alias="t")
             .when_matched_update(values).when_not_matched_insert(values).execute())
        return MergeCounts(inserted=int(m.get("num_target_rows_inserted", 0)),
                           updated=int(m.get("num_target_rows_updated", 0)), version=dt.version(), metrics=m)

    return with_commit_retry(step, f"history merge {client}.{table}")

