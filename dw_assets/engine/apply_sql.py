"""The apply step's set-based rules as Spark SQL text: what the Spark engine runs through Spark Connect.

The same rules the local engine applies with deltalake's MERGE builder (lakehouse/silver.py): order is the pair
(`_dw_seq`, `_dw_seq_row`); only the latest change per key after the table's last TRUNCATE counts; it applies
only if newer than the silver row and not older than the key's tombstone; a delete removes the row and leaves a
tombstone. Spark SQL quotes identifiers with backticks (Sail rejects ANSI double quotes), so the text is built
here with `bq`; every name comes from the model and is quoted, every literal is an int from the lake.
Features used: MERGE INTO (matched/not-matched clauses with conditions), DELETE FROM, window ROW_NUMBER, temp
views, Delta tables by path. Not used (Sail 0.7.2 lacks them): UPDATE, change data feed, OPTIMIZE, VACUUM,
QUALIFY, commit-conflict detection (so one writer per client table, as the apply lock already ensures).
"""
from __future__ import annotations

from typing import Sequence

from dw_assets.lakehouse.ordering import ORDER_COLUMNS, SEQ, SEQ_ROW, ChangeOrder


def bq(name: str) -> str:
    """A backquoted Spark SQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def delta_path(url: str) -> str:
    """A Delta table by location: delta.`<url>`."""
    return f"delta.{bq(url)}"


def newer(a: str, b: str, or_equal: bool = False) -> str:
    (s, r) = ORDER_COLUMNS
    x, y, xr, yr = f"{a}.{bq(s)}", f"{b}.{bq(s)}", f"{a}.{bq(r)}", f"{b}.{bq(r)}"
    return f"({x} > {y} OR ({x} = {y} AND {xr} {'>=' if or_equal else '>'} {yr}))"


def before(order: ChangeOrder, alias: str | None = None) -> str:
    p = f"{alias}." if alias else ""
    s, r = int(order.seq), int(order.row)
    return f"({p}{bq(SEQ)} < {s} OR ({p}{bq(SEQ)} = {s} AND {p}{bq(SEQ_ROW)} < {r}))"


def _on(keys: Sequence[str], a: str = "t", b: str = "s") -> str:
    return " AND ".join(f"{a}.{bq(k)} = {b}.{bq(k)}" for k in keys)


def latest_per_key(view: str, keys: Sequence[str], columns: Sequence[str], after: ChangeOrder | None) -> str:
    """One row per key of `view` (its `columns`): the latest change strictly after the truncate `after`.
    A window, not QUALIFY (Sail 0.7.2 has none)."""
    s, r = (int(after.seq), int(after.row)) if after else (0, 0)
    where = f"WHERE {bq(SEQ)} > {s} OR ({bq(SEQ)} = {s} AND {bq(SEQ_ROW)} > {r})" if after else ""
    part = ", ".join(bq(k) for k in keys)
    order = ", ".join(f"{bq(c)} DESC" for c in ORDER_COLUMNS)
    cols = ", ".join(bq(c) for c in columns)
    return (f"SELECT {cols} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {part} ORDER BY {order}) "
            f"AS `_dw_rank` FROM {bq(view)} {where}) WHERE `_dw_rank` = 1")


def not_behind_tombstone(latest: str, tombstones_url: str, keys: Sequence[str]) -> str:
    """Changes of `latest` (a query) not older than their key's tombstone."""
    return (f"SELECT l.* FROM ({latest}) l LEFT JOIN {delta_path(tombstones_url)} b ON {_on(keys, 'l', 'b')} "
            f"WHERE b.{bq(SEQ)} IS NULL OR {newer('l', 'b', or_equal=True)}")


def merge_tombstones(tombstones_url: str, source_view: str, keys: Sequence[str]) -> str:
    cols = [*keys, *ORDER_COLUMNS, "_dw_deleted_at"]
    sets = ", ".join(f"t.{bq(c)} = s.{bq(c)}" for c in [*ORDER_COLUMNS, "_dw_deleted_at"])
    return (f"MERGE INTO {delta_path(tombstones_url)} t USING {bq(source_view)} s ON {_on(keys)} "
            f"WHEN MATCHED AND {newer('s', 't')} THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(bq(c) for c in cols)}) "
            f"VALUES ({', '.join('s.' + bq(c) for c in cols)})")


def merge_silver(silver_url: str, source_view: str, keys: Sequence[str], data: Sequence[str]) -> str:
    """The guarded upsert/delete of the latest changes into silver."""
    sets = ", ".join(f"t.{bq(c)} = s.{bq(c)}" for c in data)
    return (f"MERGE INTO {delta_path(silver_url)} t USING {bq(source_view)} s ON {_on(keys)} "
            f"WHEN MATCHED AND s.`_dw_op` = 'd' AND {newer('s', 't')} THEN DELETE "
            f"WHEN MATCHED AND s.`_dw_op` <> 'd' AND {newer('s', 't')} THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED AND s.`_dw_op` <> 'd' THEN INSERT ({', '.join(bq(c) for c in data)}) "
            f"VALUES ({', '.join('s.' + bq(c) for c in data)})")


def truncate(silver_url: str, at: ChangeOrder) -> str:
    """Every silver row older than the TRUNCATE at `at`."""
    return f"DELETE FROM {delta_path(silver_url)} WHERE {before(at)}"


def history_versions(changes_view: str, truncates_view: str, keys: Sequence[str], columns: Sequence[str]) -> str:
    """SCD2 versions of every key in `changes_view` (typed changes) and `truncates_view` (`_dw_seq`,
    `_dw_seq_row`, `_dw_source_ts_ms`): each upsert starts a version, the next change of the key (or a delete, or a
    TRUNCATE) ends it. The same chain the local engine builds incrementally (lakehouse/history.py)."""
    from dw_assets.lakehouse.ordering import SEQ_END, SEQ_END_ROW

    k = ", ".join(bq(c) for c in keys)
    data = ", ".join(bq(c) for c in columns)
    trunc_data = ", ".join(bq(c) if c in keys else f"NULL AS {bq(c)}" for c in columns)
    seq, row, ts = bq(SEQ), bq(SEQ_ROW), bq("_dw_source_ts_ms")
    return f"""
    WITH events AS (
        SELECT {data}, CASE WHEN `_dw_op` = 'd' THEN 'd' ELSE 'u' END AS op, {seq} AS seq, {row} AS seq_row,
               {ts} AS ts FROM {bq(changes_view)}
        UNION ALL
        SELECT {trunc_data}, 'd', tr.{seq}, tr.{row}, tr.{ts}
          FROM (SELECT DISTINCT {k} FROM {bq(changes_view)}) keys_ CROSS JOIN {bq(truncates_view)} tr
    ),
    uniq AS (SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {k}, seq, seq_row ORDER BY seq) AS rn
                              FROM events) WHERE rn = 1),
    chain AS (SELECT *, lead(seq) OVER w AS seq_end, lead(seq_row) OVER w AS seq_end_row, lead(ts) OVER w AS ts_end
                FROM uniq WINDOW w AS (PARTITION BY {k} ORDER BY seq, seq_row))
    SELECT {data}, seq AS {seq}, seq_row AS {row}, seq_end AS {bq(SEQ_END)}, seq_end_row AS {bq(SEQ_END_ROW)},
           timestamp_millis(ts) AS `valid_from`, timestamp_millis(ts_end) AS `valid_to`,
           seq_end IS NULL AS `is_current`, ts AS {ts}
      FROM chain WHERE op = 'u'"""


def merge_history(history_url: str, source_view: str, keys: Sequence[str], columns: Sequence[str]) -> str:
    """Upsert versions on (key, start of the version): a re-run rewrites them unchanged."""
    on = " AND ".join(f"t.{bq(c)} = s.{bq(c)}" for c in [*keys, *ORDER_COLUMNS])
    sets = ", ".join(f"t.{bq(c)} = s.{bq(c)}" for c in columns)
    return (f"MERGE INTO {delta_path(history_url)} t USING {bq(source_view)} s ON {on} "
            f"WHEN MATCHED THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(bq(c) for c in columns)}) "
            f"VALUES ({', '.join('s.' + bq(c) for c in columns)})")


def upsert(url: str, source_view: str, keys: Sequence[str], columns: Sequence[str]) -> str:
    """Insert or overwrite the rows of `source_view` by `keys` (bookkeeping rows such as the progress marker)."""
    sets = ", ".join(f"t.{bq(c)} = s.{bq(c)}" for c in columns if c not in keys)
    return (f"MERGE INTO {delta_path(url)} t USING {bq(source_view)} s ON {_on(keys)} "
            f"WHEN MATCHED THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(bq(c) for c in columns)}) "
            f"VALUES ({', '.join('s.' + bq(c) for c in columns)})")
