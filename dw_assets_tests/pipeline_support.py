"""Test helpers for end-to-end pipeline tests: compare a client's silver tables with its source tables."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from dw_assets.db import connect
from dw_assets.identifiers import quote_ident
from dw_assets.lakehouse.paths import read_delta
from dw_assets.model import StandardModel
from dw_assets.settings import Settings


def _norm(v: Any) -> Any:
    # Silver holds TIMESTAMP as tz-aware UTC and TINYINT(1) as bool; the source session runs in UTC.
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.replace(tzinfo=None)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, Decimal):
        return v  # exact: Decimal("1.50") == Decimal("1.5") compares by value, scale checked by the type
    return v


def source_rows(settings: Settings, database: str, table, columns: list[str]) -> list[tuple]:
    with connect(settings, database=database) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT {', '.join(quote_ident(c) for c in columns)} FROM {quote_ident(table)}")
        return sorted((tuple(_norm(v) for v in r) for r in cur.fetchall()), key=repr)


def silver_rows(settings: Settings, client: str, table: str, columns: list[str]) -> list[tuple]:
    t = read_delta(settings, "silver", client, table, columns=columns)
    return sorted((tuple(_norm(r[c]) for c in columns) for r in t.to_pylist()), key=repr)


def assert_silver_equals_source(settings: Settings, client: str, model: StandardModel, database: str | None = None) -> None:
    for table in model.tables:
        cols = list(table.column_names)
        src = source_rows(settings, database or client, table.name, cols)
        silver = silver_rows(settings, client, table.name, cols)
        assert len(silver) == len(src), f"{client}.{table.name}: silver has {len(silver)} rows, source {len(src)}"
        diff = [(a, b) for a, b in zip(src, silver) if a != b]
        assert not diff, f"{client}.{table.name}: first differing rows (source, silver): {diff[:3]}"
