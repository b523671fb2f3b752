"""The report engine: DuckDB over Arrow datasets of silver Delta tables, one connection per scope.

A scope is one client or the portfolio (several clients). For either, the engine registers one view per model
table the report reads, named after the table, with the model's columns plus `client`; for the portfolio the
view is a UNION ALL over the clients. The report SQL is therefore the same text for both scopes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import duckdb
import pyarrow as pa

from dw_assets.identifiers import validate_client_name
from dw_assets.lakehouse.changes import duck_type, qi
from dw_assets.model import StandardModel, Table
from dw_assets.model.types import arrow_type
from dw_assets.settings import Settings

from .catalog import ReportSpec
from .silver_source import DEFAULT_SOURCE_TS_COLUMN, SilverSource, open_silver

log = logging.getLogger(__name__)

# Directory/scope name of the cross-client results. It starts with an underscore because client names cannot
# (CLIENT_NAME_RE), so a client called "portfolio" can never collide with it.
PORTFOLIO_SCOPE = "_portfolio"


class NoSilverData(LookupError):
    """None of the tables a report reads exists in silver for the scope's clients."""


@dataclass(frozen=True)
class Scope:
    name: str  # the client's name, or PORTFOLIO_SCOPE
    clients: tuple[str, ...]

    @classmethod
    def client(cls, name: str) -> "Scope":
        return cls(validate_client_name(name), (name,))

    @classmethod
    def portfolio(cls, clients: Iterable[str]) -> "Scope":
        names = tuple(sorted({validate_client_name(c) for c in clients}))
        if not names:
            raise ValueError("a portfolio needs at least one client")
        return cls(PORTFOLIO_SCOPE, names)

    @property
    def is_portfolio(self) -> bool:
        return self.name == PORTFOLIO_SCOPE


@dataclass(frozen=True)
class ReportRun:
    """One report computed for one scope, with the freshness of the silver data it includes."""

    spec: ReportSpec
    scope: Scope
    table: pa.Table
    newest_source_ts_ms: int | None  # newest source change (of the tables read) included; None if unknown
    built_at_ms: int
    seconds: float
    clients: tuple[str, ...]  # clients that had silver data for this report

    @property
    def lag_seconds(self) -> float | None:
        """How old the newest included source change was when the report was built."""
        if self.newest_source_ts_ms is None:
            return None
        return max(0.0, (self.built_at_ms - self.newest_source_ts_ms) / 1000)


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class ReportEngine:
    """Runs report SQL for one scope. Use as a context manager; tables are registered on first use."""

    def __init__(self, settings: Settings, scope: Scope, model: StandardModel | None = None,
                 source_ts_column: str = DEFAULT_SOURCE_TS_COLUMN, threads: int | None = None):
        self.settings, self.scope, self.model = settings, scope, model or settings.standard_model()
        self.source_ts_column = source_ts_column
        self.con = duckdb.connect()
        # Report dates come from naive DATETIME columns; pin the session zone so TIMESTAMP (UTC) columns agree.
        self.con.execute("SET TimeZone = 'UTC'")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self._views: dict[str, list[SilverSource]] = {}  # table -> per-client sources that exist
        self._newest: dict[str, int | None] = {}

    def __enter__(self) -> "ReportEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # ---- registration -------------------------------------------------------------------------------------

    def ensure_tables(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self._views:
                self._register(self.model.table(name))

    def _register(self, table: Table) -> None:
        selects, present, newest = [], [], []
        for i, client in enumerate(self.scope.clients):
            src = open_silver(self.settings, client, table)
            raw = f"_src_{table.name}_{i}"
            if src.parquet_files:
                files = ", ".join(_lit(f) for f in src.parquet_files)
                # union_by_name: files written before a schema change lack the newer columns.
                self.con.execute(f"CREATE OR REPLACE VIEW {qi(raw)} AS "
                                 f"SELECT * FROM read_parquet([{files}], union_by_name = true)")
            else:
                self.con.register(raw, src.data)
            selects.append(self._select(table, src, raw))
            if src.exists:
                present.append(src)
                # Same snapshot as the data the report reads (the table was opened once, at one version), so
                # the recorded freshness never claims a change the report does not include.
                if self.source_ts_column in src.columns:
                    newest.append(self.con.execute(
                        f"SELECT max({qi(self.source_ts_column)}) FROM {qi(raw)}").fetchall()[0][0])
        self.con.execute(f"CREATE OR REPLACE VIEW {qi(table.name)} AS\n" + "\nUNION ALL\n".join(selects))
        self._views[table.name] = present
        values = [int(v) for v in newest if v is not None]
        self._newest[table.name] = max(values) if values else None

    def _select(self, table: Table, src: SilverSource, raw: str) -> str:
        cols = [f"{_lit(src.client)} AS client"]
        for c in table.columns:
            cols.append(qi(c.name) if c.name in src.columns
                        else f"CAST(NULL AS {duck_type(arrow_type(c.type))}) AS {qi(c.name)}")
        return f"SELECT {', '.join(cols)} FROM {qi(raw)}"

    # ---- running ------------------------------------------------------------------------------------------

    def clients_with_data(self, spec: ReportSpec) -> tuple[str, ...]:
        self.ensure_tables(spec.silver_tables)
        have = {s.client for t in spec.silver_tables for s in self._views[t]}
        return tuple(c for c in self.scope.clients if c in have)

    def newest_source_ts_ms(self, tables: Sequence[str]) -> int | None:
        self.ensure_tables(tables)
        values = [v for t in tables if (v := self._newest.get(t)) is not None]
        return max(values) if values else None

    def query(self, sql: str, params: Sequence[object] | None = None) -> pa.Table:
        """Run any SQL over the registered views (tests and ad-hoc checks); returns Arrow."""
        # DuckDB 2.0: a relation's Arrow result avoids the extra copy a DB-API result makes.
        return self.con.sql(sql, params=params).to_arrow_table()

    def run(self, spec: ReportSpec) -> ReportRun:
        """Compute one report for the scope. Raises NoSilverData when no client has any of its tables."""
        return run_report(self, spec, lambda sql: self.con.sql(sql).to_arrow_table())


def run_report(engine, spec: ReportSpec, execute: Callable[[str], pa.Table], label: str = "") -> ReportRun:
    """One report on `engine` (either engine: its views, freshness and `execute` of the SQL text), timed."""
    t0 = time.perf_counter()
    clients = engine.clients_with_data(spec)
    if not clients:
        raise NoSilverData(f"report {spec.name}: no silver table among {', '.join(spec.silver_tables)} "
                           f"exists for {', '.join(engine.scope.clients)}")
    newest = engine.newest_source_ts_ms(spec.silver_tables)
    table = execute(spec.sql)
    seconds = time.perf_counter() - t0
    log.info("report %s for %s%s: %d rows in %.2f s", spec.name, engine.scope.name, label, table.num_rows, seconds)
    return ReportRun(spec, engine.scope, table, newest, int(time.time() * 1000), seconds, clients)

def open_report_engine(settings: Settings, scope: Scope, model: StandardModel | None = None,
                       source_ts_column: str = DEFAULT_SOURCE_TS_COLUMN, threads: int | None = None,
                       engine: str | None = None, session: object | None = None):
    """The report engine `engine` (default `settings.engine`) names, for one scope: DuckDB in this process
    (`local`) or Spark Connect (`spark`: `session` if given, else a new one to `settings.spark_remote`).
    Both run the same SQL text over the same views and return the same schema; every report path opens its
    engine here. Use as a context manager."""
    kind = engine or settings.engine
    if kind == "local":
        return ReportEngine(settings, scope, model, source_ts_column, threads)
    if kind == "spark":
        from dw_assets.engine.spark_reports import SparkReportEngine  # the Spark client is an optional extra

        return SparkReportEngine(settings, scope, model, source_ts_column, session)
    raise ValueError(f"unknown report engine {kind!r} (DW_ENGINE is local or spark)")
