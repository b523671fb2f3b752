"""Debezium-format change events: the JSON envelope, keys, and the snapshot's per-type value rendering.

Streamed rows are rendered by `row_decoder` straight from the binlog; snapshot rows come from a SELECT over the
text protocol and are rendered here into exactly the same JSON values (README.md, "Value mapping").
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from .row_decoder import b64, float32_repr, render_bits, render_geometry

CONNECTOR = "mariadb"
VERSION = "dw-cdc-1.0"

OP_CREATE, OP_UPDATE, OP_DELETE, OP_READ, OP_TRUNCATE = "c", "u", "d", "r", "t"

dumps = orjson.dumps


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SourceInfo:
    """The per-event `source` block, minus the fields that vary per row."""

    name: str  # the topic prefix (Debezium's topic.prefix / logical server name)
    server_id: int  # of the MariaDB server the event came from


def source_block(info: SourceInfo, *, ts_ms: int, db: str, table: str | None, gtid: str | None, file: str,
                 pos: int, row: int, snapshot: str = "false", thread: int | None = None,
                 query: str | None = None) -> dict[str, Any]:
    return {
        "version": VERSION,
        "connector": CONNECTOR,
        "name": info.name,
        "ts_ms": ts_ms,
        "snapshot": snapshot,
        "db": db,
        "sequence": None,
        "table": table,
        "server_id": info.server_id,
        "gtid": gtid,
        "file": file,
        "pos": pos,
        "row": row,
        "thread": thread,
        "query": query,
    }


def change_value(op: str, before: dict | None, after: dict | None, source: dict, transaction: dict | None) -> bytes:
    return dumps({"before": before, "after": after, "source": source, "op": op, "ts_ms": now_ms(),
                  "transaction": transaction})


def key_bytes(key: dict[str, Any] | None) -> bytes | None:
    """The message key: JSON of the primary-key columns in key order; None for tables without a PK."""
    return None if key is None else dumps(key)


def schema_change_value(info: SourceInfo, *, db: str, table: str | None, ddl: str, ts_ms: int, gtid: str | None,
                        file: str, pos: int) -> bytes:
    """Debezium's schema-change event (include.schema.changes) plus the table the statement touches."""
    return dumps({
        "source": source_block(info, ts_ms=ts_ms, db=db, table=table, gtid=gtid, file=file, pos=pos, row=0),
        "ts_ms": now_ms(),
        "databaseName": db,
        "schemaName": None,
        "table": table,
        "ddl": ddl,
        "tableChanges": [],
    })


# ---- snapshot rendering: text protocol -> the documented JSON value ------------------------------------------


@dataclass(frozen=True)
class SnapshotColumn:
    """A column as the snapshot reads it: its name, how to SELECT it, and how to render the text it returns."""

    name: str
    data_type: str  # information_schema.COLUMNS.DATA_TYPE
    column_type: str  # e.g. 'bit(10)', 'decimal(10,2)'
    fsp: int
    binary: bool


def _iso(text: str, fsp: int, suffix: str = "") -> str | None:
    if text.startswith("0000-00-00") or "-00" in text[:10]:
        return None  # zero dates have no ISO form
    date, _, clock = text.partition(" ")
    if not clock:
        return date
    if fsp:
        whole, _, frac = clock.partition(".")
        clock = f"{whole}.{frac.ljust(6, '0')}"
    return f"{date}T{clock}{suffix}"


def _time(text: str, fsp: int) -> str:
    if not fsp:
        return text
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(6, '0')}"


_INTS = {"tinyint", "smallint", "mediumint", "int", "bigint"}
_BLOBS = {"tinyblob", "blob", "mediumblob", "longblob", "binary", "varbinary"}
_GEOMETRY = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
             "geometrycollection"}


def select_expression(col: SnapshotColumn, quoted: str) -> str:
    """FLOAT is read as DOUBLE: the server prints FLOAT with 6 digits, losing what the binlog carries."""
    return f"CAST({quoted} AS DOUBLE)" if col.data_type == "float" else quoted


def text_renderer(col: SnapshotColumn) -> Callable[[Any], Any]:
    """text-protocol value (str, or bytes for binary columns) -> the same JSON value the binlog path renders."""
    t = col.data_type
    if t in _INTS or t == "year":
        return int
    if t == "decimal":
        return str
    if t == "float":
        return lambda v: float32_repr(float(v))
    if t == "double":
        return float
    if t == "date":
        return lambda v: _iso(v, 0)
    if t == "datetime":
        return lambda v: _iso(v, col.fsp)
    if t == "timestamp":
        return lambda v: _iso(v, col.fsp, "Z")  # the snapshot session runs with time_zone '+00:00'
    if t == "time":
        return lambda v: _time(v, col.fsp)
    if t == "bit":
        bits = int(col.column_type.partition("(")[2].rstrip(")") or 1)
        return lambda v: render_bits(v, bits)
    if t in _GEOMETRY:
        return lambda v: render_geometry(v if isinstance(v, (bytes, bytearray)) else v.encode("latin-1"))
    if t in _BLOBS or col.binary:
        return lambda v: b64(v) if isinstance(v, (bytes, bytearray)) else b64(v.encode())
    return lambda v: v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v
