"""Change events as SQL: typed row images from JSON text, latest change per key (order: `ordering`).

All bulk work runs in DuckDB over Arrow (no per-row Python): `json_transform` to a struct of strings, then one
CAST per column to the lake type; measured ~0.13 s per 100k events x 10 columns, ~2x faster than Polars'
json_decode. The statements are plain SQL so a Spark engine can run the same logic later.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Sequence

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from .ordering import ORDER_COLUMNS, SEQ, SEQ_ROW, SEQ_TYPE, ChangeOrder, max_order, order_columns
from .ordering import quote as qi  # noqa: F401  (quotes DuckDB identifiers; used here and by other modules)
from .tables import SOURCE_TS, bronze_schema


class ChangeParseError(ValueError):
    """A row image value that does not convert to the column's lake type."""


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # TIMESTAMP columns arrive as ISO strings with Z: keep DuckDB's TIMESTAMPTZ output in UTC.
    con.execute("SET TimeZone='UTC'")
    return con


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def bronze_rows(con: duckdb.DuckDBPyConnection, landing: pa.Table, batch: int, ingested_at: datetime) -> pa.Table:
    """Landing rows + `_dw_seq`, `_dw_seq_row`, `_dw_batch`, `_dw_ingested_at`, in bronze's schema.

    Only the ordering columns are computed in DuckDB; the (large) JSON columns stay in their Arrow buffers.
    """
    seq, seq_row = order_columns(con, landing)
    n = landing.num_rows
    out = (landing.append_column(SEQ, seq).append_column(SEQ_ROW, seq_row)
           .append_column("_dw_batch", pa.array([batch] * n, pa.int64()) if n else pa.array([], pa.int64()))
           .append_column("_dw_ingested_at", pa.array([ingested_at] * n, pa.timestamp("us", tz="UTC"))))
    schema = bronze_schema()
    return out.select(schema.names).cast(schema)


def image_columns(con: duckdb.DuckDBPyConnection, events: pa.Table) -> set[str]:
    """The column names present in the row images of `events` (detects added or dropped source columns)."""
    con.register("img_in", events.select(["after", "before"]))
    try:
        rows = con.sql("SELECT DISTINCT unnest(json_keys(coalesce(after, before))) FROM img_in "
                           "WHERE coalesce(after, before) IS NOT NULL").fetchall()
    finally:
        con.unregister("img_in")
    return {r[0] for r in rows}


def duck_type(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return {8: "TINYINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}[t.bit_width]
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_float32(t):
        return "FLOAT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BLOB"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    raise TypeError(f"no DuckDB mapping for Arrow type {t}")


def _convert(name: str, t: pa.DataType) -> str:
    v = f"img.{qi(name)}"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return f"from_base64({v})"  # Debezium's JSON converter renders bytes as base64
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return v
    return f"CAST({v} AS {duck_type(t)})"


def typed_events(con: duckdb.DuckDBPyConnection, events: pa.Table, columns: Sequence[pa.Field]) -> pa.Table:
    """Row changes (not truncates) with typed columns: `columns` + `_dw_op`, `_dw_seq`, `_dw_seq_row`,
    `_dw_source_ts_ms`.

    The image is `after` for c/u/r and `before` for d, so a delete carries its key. Values are extracted as
    text first: JSON numbers, strings and nested JSON text all become the literal text, then CAST exactly
    (DECIMAL strings never pass through a float).
    """
    spec = json.dumps({f.name: "VARCHAR" for f in columns})
    select = ", ".join(f"{_convert(f.name, f.type)} AS {qi(f.name)}" for f in columns)
    seq = ", ".join(ORDER_COLUMNS)
    con.register("events_in", events.select(["op", "after", "before", *ORDER_COLUMNS, "source_ts_ms"]))
    try:
        out = con.sql(
            f"SELECT {select}, op AS _dw_op, {seq}, source_ts_ms AS {SOURCE_TS} FROM ("
            f"  SELECT op, {seq}, source_ts_ms, json_transform(coalesce(after, before), {sql_literal(spec)}) AS img"
            "   FROM events_in WHERE op <> 't')").to_arrow_table()
    except (duckdb.ConversionException, duckdb.InvalidInputException) as e:
        raise ChangeParseError(str(e).splitlines()[0]) from None
    finally:
        con.unregister("events_in")
    schema = pa.schema(list(columns) + [pa.field("_dw_op", pa.string()), pa.field(SEQ, SEQ_TYPE),
                                        pa.field(SEQ_ROW, SEQ_TYPE), pa.field(SOURCE_TS, pa.int64())])
    # Relax nullability for the cast: NOT NULL is enforced by the Delta write.
    return out.cast(pa.schema([f.with_nullable(True) for f in schema]))


def truncate_order(events: pa.Table) -> ChangeOrder | None:
    """The position of the last TRUNCATE in `events`, or None."""
    return max_order(events.filter(pc.equal(events["op"], "t")))


def latest_per_key(typed: pa.Table, keys: Sequence[str], after: ChangeOrder | None = None) -> pa.Table:
    """One row per key: the latest change by (`_dw_seq`, `_dw_seq_row`), and newer than `after` (a truncate).

    Polars' sort + unique(keep="last") measured ~4x faster than a DuckDB window (QUALIFY row_number()).
    """
    df = pl.from_arrow(typed)
    assert isinstance(df, pl.DataFrame)
    if after is not None:
        df = df.filter((pl.col(SEQ) > after.seq) | ((pl.col(SEQ) == after.seq) & (pl.col(SEQ_ROW) > after.row)))
    latest = df.sort(list(ORDER_COLUMNS)).unique(subset=list(keys), keep="last", maintain_order=False)
    return latest.to_arrow().cast(typed.schema)
