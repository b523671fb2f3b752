"""The report SQL on Spark (Sail locally over Spark Connect, or a Databricks cluster): the same views and the
same SQL text as the DuckDB engine, with the result in the DuckDB engine's schema so gold is written alike.

Per scope and model table, one temporary view named after the table holds the model's columns plus `client`
(a UNION ALL over the clients for the portfolio), over the silver Delta tables read by path at the version
deltalake opened, so the freshness recorded and the rows read are one snapshot.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Sequence

import duckdb
import pyarrow as pa

from dw_assets.lakehouse.changes import qi
from dw_assets.lakehouse.paths import open_table, table_url
from dw_assets.model import StandardModel, Table
from dw_assets.model.types import arrow_type
from dw_assets.reports.catalog import ReportSpec
from dw_assets.reports.engine import ReportRun, Scope, run_report
from dw_assets.reports.silver_source import DEFAULT_SOURCE_TS_COLUMN, arrow_source, empty_table
from dw_assets.settings import Settings

from .apply_sql import bq
from .session import spark_session


def spark_sql_type(t: pa.DataType) -> str:
    """The Spark SQL name of an Arrow type of the model (for the NULL column of a column a table lacks yet)."""
    from pyspark.sql.pandas.types import from_arrow_type

    return from_arrow_type(t).simpleString()


def result_schema(spec: ReportSpec, model: StandardModel) -> pa.Schema:
    """The schema the DuckDB engine gives `spec`'s result: the same query bound over empty, model-typed views."""
    con = duckdb.connect()
    try:
        for name in spec.silver_tables:
            empty = empty_table(model.table(name))
            con.register(f"_empty_{name}", empty)
            con.execute(f"CREATE VIEW {qi(name)} AS SELECT CAST(NULL AS VARCHAR) AS client, * "
                        f"FROM {qi('_empty_' + name)}")
        return con.sql(spec.sql).limit(0).to_arrow_table().schema
    finally:
        con.close()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Spark's result in the DuckDB engine's column types (e.g. a DECIMAL(24,2) sum becomes DECIMAL(38,2));
    a cast that would lose a value raises rather than writing a different gold table."""
    if table.column_names != schema.names:
        raise ValueError(f"Spark returned columns {table.column_names}, the report defines {schema.names}")
    return pa.Table.from_arrays([_cast(c, f.type) for c, f in zip(table.columns, schema)], schema=schema)


def _cast(column: pa.ChunkedArray, to: pa.DataType) -> pa.ChunkedArray:
    if pa.types.is_decimal(column.type) and pa.types.is_floating(to):
        # Arrow scales decimals to floats inexactly (70.32 -> 70.32000000000001); the text parses to the nearest.
        return column.cast(pa.string()).cast(to)
    return column.cast(to)


class SparkReportEngine:
    """Runs report SQL for one scope on a Spark Connect session; the same interface as `ReportEngine`.

    Pass `session` to share one (the caller closes it); otherwise one is opened to `settings.spark_remote`.
    """

    def __init__(self, settings: Settings, scope: Scope, model: StandardModel | None = None,
                 source_ts_column: str = DEFAULT_SOURCE_TS_COLUMN, session=None):
        self.settings, self.scope, self.model = settings, scope, model or settings.standard_model()
        self.source_ts_column = source_ts_column
        self._stack = ExitStack()
        self.spark = session if session is not None else self._stack.enter_context(spark_session(settings))
        self._present: dict[str, tuple[str, ...]] = {}  # table -> clients whose silver table exists
        self._newest: dict[str, int | None] = {}
        self._views: list[str] = []

    def __enter__(self) -> "SparkReportEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            for view in self._views:  # a shared session outlives this scope: leave no view of it behind
                self.spark.catalog.dropTempView(view)
        finally:
            self._stack.close()

    # ---- registration -------------------------------------------------------------------------------------

    def ensure_tables(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self._present:
                self._register(self.model.table(name))

    def _temp_view(self, name: str, frame) -> None:
        frame.createOrReplaceTempView(name)
        self._views.append(name)

    def _register(self, table: Table) -> None:
        selects, present, newest = [], [], []
        for i, client in enumerate(self.scope.clients):
            raw = f"_src_{table.name}_{i}"
            url = table_url(self.settings, "silver", client, table.name)
            dt = open_table(self.settings, url)
            if dt is None:  # never written: no rows, typed by the model
                selects.append(self._select(table, client, set(), None))
                continue
            if dt.metadata().configuration.get("delta.columnMapping.mode", "none") != "none":
                # Sail 0.7.2 reads column-mapping `name` tables as all NULLs: send DataFusion's rows instead.
                frame = self.spark.createDataFrame(pa.table(arrow_source(dt)))
            else:
                frame = self.spark.read.format("delta").option("versionAsOf", dt.version()).load(url)
            self._temp_view(raw, frame)
            columns = {f.name for f in dt.schema().fields}
            present.append(client)
            if self.source_ts_column in columns:
                value = self.spark.sql(f"SELECT max({bq(self.source_ts_column)}) FROM {bq(raw)}").collect()[0][0]
                if value is not None:
                    newest.append(int(value))
            selects.append(self._select(table, client, columns, raw))
        self._temp_view(table.name, self.spark.sql("\nUNION ALL\n".join(selects)))
        self._present[table.name] = tuple(present)
        self._newest[table.name] = max(newest) if newest else None

    @staticmethod
    def _select(table: Table, client: str, columns: set[str], raw: str | None) -> str:
        # The client name is a validated identifier-shaped name (CLIENT_NAME_RE), safe as a literal.
        cols = [f"'{client}' AS client"]
        for c in table.columns:
            cols.append(bq(c.name) if c.name in columns
                        else f"CAST(NULL AS {spark_sql_type(arrow_type(c.type))}) AS {bq(c.name)}")
        return f"SELECT {', '.join(cols)} " + (f"FROM {bq(raw)}" if raw else "WHERE 1 = 0")

    # ---- running ------------------------------------------------------------------------------------------

    def clients_with_data(self, spec: ReportSpec) -> tuple[str, ...]:
        self.ensure_tables(spec.silver_tables)
        have = {c for t in spec.silver_tables for c in self._present[t]}
        return tuple(c for c in self.scope.clients if c in have)

    def newest_source_ts_ms(self, tables: Sequence[str]) -> int | None:
        self.ensure_tables(tables)
        values = [v for t in tables if (v := self._newest.get(t)) is not None]
        return max(values) if values else None

    def query(self, sql: str) -> pa.Table:
        """Run any SQL over the registered views; returns Arrow."""
        return self.spark.sql(sql).toArrow()

    def run(self, spec: ReportSpec) -> ReportRun:
        """Compute one report for the scope. Raises NoSilverData when no client has any of its tables."""
        schema = result_schema(spec, self.model)
        return run_report(self, spec, lambda sql: conform(self.spark.sql(sql).toArrow(), schema), " on Spark")
