"""Helpers for the reports tests: seeded clients with silver tables built straight from MariaDB.

Stands in for the lakehouse pipeline: each model table is read with PyMySQL, typed per the model
(`arrow_type`) and written as Delta to `<lake>/silver/<client>/<table>` with the model's table properties.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from dw_assets import db
from dw_assets.identifiers import quote_ident
from dw_assets.lakehouse.paths import storage_options, table_url
from dw_assets.model import Column, load_model
from dw_assets.model.types import arrow_type
from dw_assets.settings import Settings
from dw_assets.workload import seed_clients

from .conftest import unique_client

SOURCE_TS_COLUMN = "_dw_source_ts_ms"
# The shipped reports' billable order statuses, for the MariaDB side of a comparison: values bound as parameters
# (`source_query(..., f"... status {IN_BILLABLE}", BILLABLE)`), the markers are the only SQL text.
BILLABLE = ("paid", "shipped", "delivered")
IN_BILLABLE = "IN (" + ", ".join(["%s"] * len(BILLABLE)) + ")"


def _arrow_column(column: Column, values: list[Any]) -> pa.Array:
    t = arrow_type(column.type)
    if pa.types.is_boolean(t):  # TINYINT(1) arrives as 0/1
        values = [None if v is None else bool(v) for v in values]
    return pa.array(values, type=t)


def build_silver_from_source(settings: Settings, client: str, source_ts_ms: int | None = None) -> dict[str, int]:
    """Copy every model table of the client's production database into silver; returns rows per table."""
    model = load_model()
    ts = source_ts_ms if source_ts_ms is not None else int(time.time() * 1000)
    counts = {}
    with db.connection(settings, database=client) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")  # TIMESTAMP columns come back as UTC wall time
        for table in model.tables:
            cols = ", ".join(quote_ident(c.name) for c in table.columns)
            cur.execute(f"SELECT {cols} FROM {quote_ident(table.name)}")
            rows = cur.fetchall()
            arrays = [_arrow_column(c, [r[i] for r in rows]) for i, c in enumerate(table.columns)]
            names = list(table.column_names)
            arrays.append(pa.array([ts] * len(rows), pa.int64()))
            names.append(SOURCE_TS_COLUMN)
            url = table_url(settings, "silver", client, table.name)
            write_deltalake(url, pa.Table.from_arrays(arrays, names=names), mode="overwrite",
                            configuration=table.options.delta_properties(),
                            storage_options=storage_options(settings, url))
            counts[table.name] = len(rows)
    return counts


def source_query(settings: Settings, client: str, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
    """Rows of a query on the client's production database; values go in `params` (PyMySQL's %s markers)."""
    with db.connection(settings, database=client) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


@pytest.fixture(scope="session")
def reports_settings(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session stack with its own lake and reports directory (other tests' lakes stay untouched)."""
    root: Path = tmp_path_factory.mktemp("reports")
    return replace(stack_settings, lake_url=str(root / "lake"), reports_dir=str(root / "reports"))


@pytest.fixture(scope="session")
def seeded_clients(reports_settings: Settings) -> dict[str, int]:
    """Two seeded clients with silver built from their source; values are the source ts_ms recorded."""
    names = [unique_client("rep"), unique_client("rep")]
    seed_clients(reports_settings, names, rows_per_client=3000, seed=11)
    out = {}
    for i, name in enumerate(names):
        ts = int(time.time() * 1000) - 60_000 * (i + 1)
        build_silver_from_source(reports_settings, name, ts)
        out[name] = ts
    return out
