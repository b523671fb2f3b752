"""The order of change events in the lake: two int64 columns whose Delta statistics are exact.

`_dw_seq` = binlog file number * 2^32 + event position (exact: file numbers are < 2^31, positions 32-bit), and
`_dw_seq_row` = (0 for a snapshot row `r`, else 2^40) + the row index in its event, so snapshot rows taken at a
position rank before the streamed change at that same position. Changes are ordered by the pair, compared
lexicographically. One DECIMAL(38,0) did this before; deltalake 1.6.6 writes min/max statistics above 2^63 as
2^63-1, so every stats-pruning reader skipped files (field notes). `legacy_*` decompose that old value exactly.
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

SEQ = "_dw_seq"
SEQ_ROW = "_dw_seq_row"
SEQ_END = "_dw_seq_end"  # history: the change that ended a version
SEQ_END_ROW = "_dw_seq_end_row"
ORDER_COLUMNS = (SEQ, SEQ_ROW)
SEQ_TYPE = pa.int64()

FILE_SHIFT = 1 << 32  # positions are 32-bit (binlog event headers)
MAX_FILE = (1 << 31) - 1  # file number * 2^32 + position stays below 2^63
STREAMED_ROW = 1 << 40  # row indexes are int32 in the landing contract: far below this
_FILE_NUMBER = re.compile(r"(\d+)$")


class ChangeOrder(NamedTuple):
    """The position of one change; tuples compare lexicographically, which is the lake's order."""
    seq: int
    row: int


class CoordinateError(ValueError):
    """Source coordinates (file, position, row) outside what the ordering columns can hold exactly."""


def order_of(op: str, source_file: str | None, source_pos: int | None, source_row: int | None) -> ChangeOrder:
    """The order of one event from its landing coordinates (the same arithmetic as `order_columns`)."""
    file_no = 0
    if source_file is not None:
        m = _FILE_NUMBER.search(source_file)
        file_no = int(m.group(1)) if m else -1
    pos, row = source_pos or 0, source_row or 0
    if not (0 <= file_no <= MAX_FILE and 0 <= pos < FILE_SHIFT and 0 <= row < STREAMED_ROW):
        raise CoordinateError(f"source coordinates out of range for ordering: file {source_file!r}, "
                              f"position {source_pos}, row {source_row}")
    return ChangeOrder(file_no * FILE_SHIFT + pos, (0 if op == "r" else STREAMED_ROW) + row)


# DuckDB over landing columns (op, source_file, source_pos, source_row). Unknown coordinates (NULL, from a
# producer that sets none) count as 0 like before; coordinates that do not fit give NULL and are refused.
_FILE_NO_SQL = ("CASE WHEN source_file IS NULL THEN 0 "
                "ELSE TRY_CAST(regexp_extract(source_file, '(\\d+)$', 1) AS BIGINT) END")
_ORDER_SQL = f"""
SELECT CASE WHEN ok THEN file_no * {FILE_SHIFT} + pos END AS {SEQ},
       CASE WHEN ok THEN (CASE WHEN op = 'r' THEN 0 ELSE {STREAMED_ROW} END) + row_ END AS {SEQ_ROW}
  FROM (SELECT *, (file_no BETWEEN 0 AND {MAX_FILE} AND pos BETWEEN 0 AND {FILE_SHIFT - 1}
                   AND row_ BETWEEN 0 AND {STREAMED_ROW - 1}) IS TRUE AS ok
          FROM (SELECT op, {_FILE_NO_SQL} AS file_no, coalesce(source_pos, 0) AS pos,
                       CAST(coalesce(source_row, 0) AS BIGINT) AS row_ FROM order_in))
"""


def order_columns(con: duckdb.DuckDBPyConnection, landing: pa.Table) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """`_dw_seq` and `_dw_seq_row` of landing rows; a row whose coordinates do not fit is refused by name."""
    con.register("order_in", landing.select(["op", "source_file", "source_pos", "source_row"]))
    try:
        out = con.sql(_ORDER_SQL).to_arrow_table()
    finally:
        con.unregister("order_in")
    seq = out[SEQ]
    if seq.null_count:
        i = pc.index(pc.is_null(seq), True).as_py()
        r = landing.slice(i, 1).to_pylist()[0]
        raise CoordinateError(
            f"event {r.get('kafka_topic')}[{r.get('kafka_partition')}]@{r.get('kafka_offset')}: source coordinates "
            f"out of range for ordering (file {r['source_file']!r}, position {r['source_pos']}, row "
            f"{r['source_row']}); the lake orders by file number < 2^31, position < 2^32, row < 2^40")
    return seq.cast(SEQ_TYPE), out[SEQ_ROW].cast(SEQ_TYPE)


def quote(name: str) -> str:
    """A double-quoted identifier (DuckDB and deltalake's DataFusion expressions alike)."""
    return '"' + name.replace('"', '""') + '"'


def newer_sql(a: str, b: str, seq: tuple[str, str] = ORDER_COLUMNS, b_seq: tuple[str, str] | None = None,
              or_equal: bool = False) -> str:
    """SQL: the change in relation `a` comes after (or is, with `or_equal`) the one in `b`, by the pair.

    `seq` names a's pair of columns, `b_seq` b's (default the same); the names are quoted here.
    """
    (s, r), (bs, br) = seq, b_seq or seq
    x, y = f"{a}.{quote(s)}", f"{b}.{quote(bs)}"
    xr, yr = f"{a}.{quote(r)}", f"{b}.{quote(br)}"
    return f"({x} > {y} OR ({x} = {y} AND {xr} {'>=' if or_equal else '>'} {yr}))"


def before_literal_sql(order: ChangeOrder) -> str:
    """SQL on unqualified columns: the row's change comes before `order` (literals are ints from the lake)."""
    s, r = int(order.seq), int(order.row)  # int(): nothing but an integer can reach the expression
    return f"({quote(SEQ)} < {s} OR ({quote(SEQ)} = {s} AND {quote(SEQ_ROW)} < {r}))"


def max_order(table: pa.Table) -> ChangeOrder | None:
    """The latest (seq, row) among the rows of `table`, or None when empty."""
    return _extreme(table, pc.max)


def min_order(table: pa.Table) -> ChangeOrder | None:
    """The earliest (seq, row) among the rows of `table`, or None when empty."""
    return _extreme(table, pc.min)


def _extreme(table: pa.Table, agg) -> ChangeOrder | None:
    if table.num_rows == 0:
        return None
    seq = agg(table[SEQ]).as_py()
    return ChangeOrder(seq, agg(table.filter(pc.equal(table[SEQ], seq))[SEQ_ROW]).as_py())


# ---- the old layout: one DECIMAL(38,0) = file * 10^24 + position * 10^11 + (r ? 0 : 1) * 10^10 + row ----------
def legacy_order(value: Decimal | int) -> ChangeOrder:
    """The (seq, row) of an old `_dw_seq` decimal; its fields are fixed-width, so this is exact."""
    v = int(value)
    file_no, rest = divmod(v, 10**24)
    pos, rest = divmod(rest, 10**11)
    streamed, row = divmod(rest, 10**10)
    return ChangeOrder(file_no * FILE_SHIFT + pos, streamed * STREAMED_ROW + row)


def legacy_order_sql(column: str) -> tuple[str, str]:
    """DuckDB expressions (seq, row) decomposing the old decimal column `column` (NULL stays NULL)."""
    d = f"CAST({quote(column)} AS HUGEINT)"
    file_no, pos = f"({d} // CAST('1000000000000000000000000' AS HUGEINT))", f"(({d} // 100000000000) % 10000000000000)"
    seq = f"CAST({file_no} * {FILE_SHIFT} + {pos} AS BIGINT)"
    row = f"CAST((({d} // 10000000000) % 10) * {STREAMED_ROW} + {d} % 10000000000 AS BIGINT)"
    return seq, row
