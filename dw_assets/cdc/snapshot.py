"""Lock-free snapshots of newly captured databases, in PK-ordered chunks, each at an exact binlog position.

Every chunk runs in its own START TRANSACTION WITH CONSISTENT SNAPSHOT, whose binlog_snapshot_file/position
say exactly which transactions it contains. The capture loop emits a chunk once the stream has reached that
position, dropping rows whose key the stream changed after it (DBLog-style): snapshot + stream == the table.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import pymysql
import pymysql.converters

from ..db import connect
from ..identifiers import quote_ident, quote_qualified
from ..settings import Settings
from .checkpoint import Position
from .envelope import SnapshotColumn, dumps, select_expression, text_renderer

log = logging.getLogger(__name__)

# Leave every value as the server's text (bytes for binary columns): rendering is ours, not PyMySQL's.
_TEXT_CONV = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}


@dataclass
class SnapshotChunk:
    database: str
    table: str
    position: Position
    gtid: str | None
    rows: list[tuple[bytes | None, dict[str, Any]]]  # (key JSON, row)
    has_pk: bool
    table_done: bool
    database_done: bool
    total_estimate: int = 0


@dataclass
class TableLayout:
    columns: list[SnapshotColumn]
    primary_key: list[str]
    renderers: list[Callable[[Any], Any]] = field(default_factory=list)


def snapshot_connection(settings: Settings) -> pymysql.Connection:
    conn = connect(settings, "cdc", conv=_TEXT_CONV, autocommit=True, read_timeout=600)
    with conn.cursor() as cur:
        cur.execute("SET SESSION time_zone = '+00:00'")  # TIMESTAMP values read as UTC, like the binlog carries
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    return conn


def list_tables(cur: Any, database: str) -> list[tuple[str, int]]:
    cur.execute(
        "SELECT TABLE_NAME, COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        (database,),
    )
    return [(_s(name), int(rows)) for name, rows in cur.fetchall()]


def table_layout(cur: Any, database: str, table: str) -> TableLayout:
    cur.execute(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COALESCE(DATETIME_PRECISION, 0), CHARACTER_SET_NAME "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    columns = []
    for name, data_type, column_type, fsp, charset in cur.fetchall():
        dt = _s(data_type).lower()
        columns.append(SnapshotColumn(_s(name), dt, _s(column_type).lower(), int(fsp),
                                      binary=charset is None and dt in {"binary", "varbinary", "tinyblob", "blob",
                                                                       "mediumblob", "longblob"}))
    cur.execute(
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
        (database, table),
    )
    pk = [_s(r[0]) for r in cur.fetchall()]
    return TableLayout(columns, pk, [text_renderer(c) for c in columns])


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


def consistent_snapshot_position(cur: Any) -> tuple[Position, str | None]:
    """Inside START TRANSACTION WITH CONSISTENT SNAPSHOT: the binlog position the snapshot corresponds to."""
    cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
    status = {_s(k).lower(): _s(v) for k, v in cur.fetchall()}
    file, pos = status["binlog_snapshot_file"], int(status["binlog_snapshot_position"])
    cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
    gtid = cur.fetchone()[0]
    return Position.of(file, pos), (_s(gtid) or None) if gtid is not None else None


def _after_clause(pk: list[str]) -> str:
    """(a, b) > (x, y) spelled out so that the optimizer uses the primary key range."""
    terms = []
    for i, col in enumerate(pk):
        eqs = [f"{quote_ident(c)} = %s" for c in pk[:i]]
        terms.append("(" + " AND ".join(eqs + [f"{quote_ident(col)} > %s"]) + ")")
    return " OR ".join(terms)


def read_chunk(conn: pymysql.Connection, database: str, table: str, after: list[Any] | None, limit: int | None
               ) -> tuple[Position, str | None, TableLayout, list[tuple[Any, ...]]]:
    """One consistent chunk: rows with PK > `after` (all rows if the table has no PK), in PK order."""
    with conn.cursor() as cur:
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        try:
            position, gtid = consistent_snapshot_position(cur)
            layout = table_layout(cur, database, table)
            cols = ", ".join(select_expression(c, quote_ident(c.name)) for c in layout.columns)
            sql = f"SELECT {cols} FROM {quote_qualified(database, table)}"
            params: list[Any] = []
            if layout.primary_key:
                if after is not None:
                    sql += f" WHERE {_after_clause(layout.primary_key)}"
                    for i in range(len(layout.primary_key)):
                        params.extend(after[: i + 1])
                sql += " ORDER BY " + ", ".join(quote_ident(c) for c in layout.primary_key)
                if limit:
                    sql += " LIMIT %s"
                    params.append(limit)
            cur.execute(sql, params)
            rows = list(cur.fetchall())
        finally:
            cur.execute("COMMIT")
    return position, gtid, layout, rows


class SnapshotWorker(threading.Thread):
    """Reads one database's tables chunk by chunk and hands chunks to the capture loop through a small queue.

    The bounded queue is the back-pressure: at most `depth` chunks wait for the stream to reach their position.
    Tables without a primary key cannot be merged by key, so for them the worker first asks the capture loop to
    hold (`hold_wanted`), snapshots the whole table while the loop waits, and the loop emits it exactly at its
    position.
    """

    def __init__(self, settings: Settings, database: str, chunk_rows: int = 10_000, depth: int = 2):
        super().__init__(name=f"snapshot-{database}", daemon=True)
        self.settings = settings
        self.database = database
        self.chunk_rows = chunk_rows
        self.chunks: queue.Queue[SnapshotChunk | BaseException] = queue.Queue(maxsize=depth)
        self.hold_wanted = threading.Event()
        self.held = threading.Event()
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.held.set()

    def _put(self, item: SnapshotChunk | BaseException) -> None:
        while not self.stopping.is_set():
            try:
                self.chunks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        try:
            conn = snapshot_connection(self.settings)
            try:
                self._snapshot(conn)
            finally:
                conn.close()
        except BaseException as e:  # handed to the capture loop, which decides (retry or stop)
            self._put(e)

    def _snapshot(self, conn: pymysql.Connection) -> None:
        with conn.cursor() as cur:
            tables = list_tables(cur, self.database)
        if not tables:
            with conn.cursor() as cur:
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                position, gtid = consistent_snapshot_position(cur)
                cur.execute("COMMIT")
            self._put(SnapshotChunk(self.database, "", position, gtid, [], True, True, True))
            return
        for t_index, (table, estimate) in enumerate(tables):
            last_table = t_index == len(tables) - 1
            after: list[Any] | None = None
            while not self.stopping.is_set():
                with conn.cursor() as cur:
                    has_pk = bool(table_layout(cur, self.database, table).primary_key)
                if not has_pk:
                    log.warning("%s.%s has no primary key: its snapshot pauses the stream while it is read, and its "
                                "change events carry a null key", self.database, table)
                    self.hold_wanted.set()
                    self.held.wait()
                    self.hold_wanted.clear()
                    self.held.clear()
                position, gtid, layout, raw = read_chunk(conn, self.database, table, after,
                                                         self.chunk_rows if has_pk else None)
                rows = _render(layout, raw)
                done = not has_pk or len(raw) < self.chunk_rows
                if raw and has_pk:
                    idx = [i for i, c in enumerate(layout.columns) if c.name in layout.primary_key]
                    order = [next(i for i in idx if layout.columns[i].name == k) for k in layout.primary_key]
                    after = [raw[-1][i] for i in order]
                self._put(SnapshotChunk(self.database, table, position, gtid, rows, has_pk, done,
                                        done and last_table, estimate))
                if done:
                    break


def _render(layout: TableLayout, raw: list[tuple[Any, ...]]) -> list[tuple[bytes | None, dict[str, Any]]]:
    names = [c.name for c in layout.columns]
    renderers = layout.renderers
    pk = layout.primary_key
    out = []
    for r in raw:
        row = {n: (None if v is None else f(v)) for n, f, v in zip(names, renderers, r)}
        out.append((dumps({k: row[k] for k in pk}) if pk else None, row))
    return out
