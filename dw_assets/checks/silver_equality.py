"""Exact equality of a client's silver tables with its source tables, row for row (DECIMAL and DATETIME(6)
exactly): the end-to-end test's assertion and `dw demo`'s exit condition.

Unlike `reconciliation` (checksums, tolerant of changes in flight) this reads every row: use it once the
source is quiet and the pipeline has caught up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from dw_assets.db import connect
from dw_assets.identifiers import quote_ident
from dw_assets.lakehouse.paths import read_delta
from dw_assets.model import StandardModel
from dw_assets.model.geometry import to_internal
from dw_assets.settings import Settings


def _norm(v: Any) -> Any:
    # Silver holds TIMESTAMP as tz-aware UTC and TINYINT(1) as bool; the source session runs in UTC.
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.replace(tzinfo=None)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, Decimal):
        return v  # exact: Decimal("1.50") == Decimal("1.5") compares by value, scale checked by the type
    if isinstance(v, dict) and "wkb" in v:  # silver's geometry struct -> the bytes MariaDB stores (SRID + WKB)
        return to_internal(v["wkb"], v["srid"])
    return v


def source_rows(settings: Settings, database: str, table: str, columns: list[str]) -> list[tuple]:
    with connect(settings, database=database) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT {', '.join(quote_ident(c) for c in columns)} FROM {quote_ident(table)}")
        return sorted((tuple(_norm(v) for v in r) for r in cur.fetchall()), key=repr)


def silver_rows(settings: Settings, client: str, table: str, columns: list[str]) -> list[tuple]:
    t = read_delta(settings, "silver", client, table, columns=columns)
    return sorted((tuple(_norm(r[c]) for c in columns) for r in t.to_pylist()), key=repr)


@dataclass
class TableEquality:
    table: str
    source_rows: int
    silver_rows: int
    differing: list[tuple[tuple, tuple]] = field(default_factory=list)  # first few (source, silver) pairs
    error: str | None = None

    @property
    def equal(self) -> bool:
        return self.error is None and self.source_rows == self.silver_rows and not self.differing

    def describe(self, client: str) -> str:
        if self.error:
            return f"{client}.{self.table}: {self.error}"
        if self.source_rows != self.silver_rows:
            return f"{client}.{self.table}: silver has {self.silver_rows} rows, source {self.source_rows}"
        if self.differing:
            return f"{client}.{self.table}: first differing rows (source, silver): {self.differing[:3]}"
        return f"{client}.{self.table}: equal ({self.source_rows} rows)"


def compare_silver_with_source(settings: Settings, client: str, model: StandardModel,
                               database: str | None = None) -> list[TableEquality]:
    """One result per model table; a missing silver table is an `error`, not an exception."""
    out = []
    for table in model.tables:
        cols = list(table.column_names)
        src = source_rows(settings, database or client, table.name, cols)
        try:
            silver = silver_rows(settings, client, table.name, cols)
        except FileNotFoundError as e:
            out.append(TableEquality(table.name, len(src), 0, error=str(e)))
            continue
        diff = [(a, b) for a, b in zip(src, silver) if a != b] if len(src) == len(silver) else []
        out.append(TableEquality(table.name, len(src), len(silver), diff[:3]))
    return out
