"""DuckDB queries kept prepared across micro-batches, for the apply step's per-table SQL.

Binding one of the apply's queries costs tens of milliseconds whatever the rows (a table's decoding query is a
nested projection per column and encoding: ~75 ms bound, ~3-10 ms executed prepared), which made the fixed cost
of a micro-batch. DuckDB re-binds a prepared statement on any catalog change, so the inputs are not registered
Arrow views (registering is a catalog change) but tables created once per query and input schema, emptied and
refilled per run. A connection serves one thread at a time; the pool is shared by the threads of a process, so
a long-running apply (the ingest service's workers) binds each query once.
"""
from __future__ import annotations

import threading
from typing import Mapping

import duckdb
import pyarrow as pa

MAX_PREPARED = 512  # per connection: new model tables and schema changes add statements; then start afresh


class _Prepared:
    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.statements: dict[tuple, tuple[str, dict[str, str]]] = {}  # key -> (statement, input -> table)

    def run(self, template: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
        key = (template, *((n, t.schema) for n, t in sorted(inputs.items())))
        found = self.statements.get(key)
        if found is None:
            if len(self.statements) >= MAX_PREPARED:
                self.con.close()
                raise _Reset()
            qid = len(self.statements)
            tables = {n: f"dw_q{qid}_{n}" for n in inputs}
            for n, t in inputs.items():
                self.con.from_arrow(t.schema.empty_table()).create(tables[n])
            statement = f"dw_q{qid}"
            sql = template
            for n, table in tables.items():  # not str.format: the SQL has braces of its own (JSON literals)
                sql = sql.replace("{" + n + "}", table)
            self.con.execute(f"PREPARE {statement} AS {sql}")
            found = self.statements[key] = (statement, tables)
        statement, tables = found
        for n, t in inputs.items():
            self.con.from_arrow(t).insert_into(tables[n])
        try:
            return self.con.sql(f"EXECUTE {statement}").to_arrow_table()
        finally:
            for table in tables.values():
                self.con.execute(f"DELETE FROM {table}")


class _Reset(Exception):
    """The connection held too many statements: it was closed; the caller takes a fresh one."""


class PreparedPool:
    def __init__(self, setup: str = "SET TimeZone='UTC'"):
        self._setup = setup
        self._free: list[_Prepared] = []
        self._lock = threading.Lock()

    def run(self, template: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
        """`template` with `{name}` for each input table (input names are identifiers); the same template and input schemas reuse the
        bound statement. Raises what DuckDB raises (the connection is then dropped, never reused)."""
        while True:
            with self._lock:
                p = self._free.pop() if self._free else None
            if p is None:
                con = duckdb.connect()
                con.execute(self._setup)
                p = _Prepared(con)
            try:
                out = p.run(template, inputs)
            except _Reset:
                continue
            except BaseException:
                p.con.close()  # a statement failed half-way: its tables may hold rows
                raise
            with self._lock:
                self._free.append(p)
            return out


POOL = PreparedPool()
