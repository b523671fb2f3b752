"""Schema evolution: add new source columns to silver (and history), refuse type changes and dropped columns.

Row images are JSON, so an event alone cannot say a new column's type. The type comes from the SOURCE:
`information_schema.COLUMNS` of the client's database (cdc role, one query per apply), mapped with the model's
own `parse_type`/`arrow_type`, so an added column gets exactly the type the model would have given it. The
same lookup detects a changed type or a dropped column: that table's apply fails with a `SchemaChangeError`
naming client, table, column, old and new type, and the client's other tables go on. Without a reachable
source schema, unknown columns in events are refused rather than guessed. Bronze keeps the JSON envelope, so
it never needs a schema change. Columns are added with ALTER (`add_columns`), not MERGE's merge_schema:
deltalake 1.6.6's merge_schema nulls NOT NULL columns of copied rows and fails "rows failed validation check".
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Mapping, Protocol

import pyarrow as pa
from deltalake import Field

from dw_assets import db
from dw_assets.model import TypeParseError, arrow_type, parse_type
from dw_assets.settings import Settings

from .commit_retry import with_commit_retry
from .paths import open_table, table_url
from .tables import DW_PREFIX

log = logging.getLogger(__name__)


class SchemaChangeError(ValueError):
    """A source schema change the lake does not apply silently (type change, dropped or untyped column)."""

    def __init__(self, client: str, table: str, column: str, old: str, new: str, reason: str):
        self.client, self.table, self.column, self.old, self.new = client, table, column, old, new
        super().__init__(f"client {client!r}, table {table!r}, column {column!r}: {reason} "
                         f"(old type {old}, new type {new}); not applied: change the model/lake deliberately")


@dataclass(frozen=True)
class SourceColumn:
    name: str
    column_type: str  # as information_schema.COLUMNS.COLUMN_TYPE reports it, e.g. "decimal(12,2)"
    nullable: bool


class SourceSchema(Protocol):
    def columns(self, table: str) -> Mapping[str, SourceColumn] | None:
        """The source table's columns, or None when unknown (database unreachable or table absent)."""


class StaticSourceSchema:
    """A source schema given as data (tests, benchmarks, replays without the source database)."""

    def __init__(self, tables: Mapping[str, Mapping[str, str]]):
        self._tables = {t: {c: SourceColumn(c, ty, True) for c, ty in cols.items()} for t, cols in tables.items()}

    def columns(self, table: str) -> Mapping[str, SourceColumn] | None:
        return self._tables.get(table)


class InformationSchemaSource:
    """Column types of the client's source database, read once (lazily) per apply with the cdc role."""

    def __init__(self, settings: Settings, database: str):
        self.settings, self.database = settings, database
        self._tables: dict[str, dict[str, SourceColumn]] | None = None
        self._lock = threading.Lock()  # tables are applied in parallel threads

    def _load(self) -> dict[str, dict[str, SourceColumn]]:
        with self._lock:
            if self._tables is None:
                self._tables = self._read()
        return self._tables

    def _read(self) -> dict[str, dict[str, SourceColumn]]:
        tables: dict[str, dict[str, SourceColumn]] = {}
        try:
            with db.connection(self.settings, "cdc") as conn, conn.cursor() as cur:
                cur.execute("SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
                            "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION", (self.database,))
                for t, c, ty, nullable in cur.fetchall():
                    tables.setdefault(t, {})[c] = SourceColumn(c, ty, nullable == "YES")
        except Exception as e:  # unreachable source: evolution falls back to refusing unknown columns
            log.warning("source schema of %s unavailable: %s", self.database, e)
        return tables

    def columns(self, table: str) -> Mapping[str, SourceColumn] | None:
        return self._load().get(table)


def source_arrow_type(col: SourceColumn) -> pa.DataType:
    return arrow_type(parse_type(col.column_type))


def plan_new_columns(client: str, table: str, lake_schema: pa.Schema, image_columns: set[str],
                     source: SourceSchema | None) -> list[pa.Field]:
    """Fields to add to silver for this batch; raises SchemaChangeError for changes not applied silently."""
    lake = {f.name: f for f in lake_schema if not f.name.startswith(DW_PREFIX)}
    src = source.columns(table) if source is not None else None
    if src is None:
        for name in sorted(image_columns - lake.keys()):
            raise SchemaChangeError(client, table, name, "absent", "unknown",
                                    "new column in events but the source schema is unavailable to type it")
        for name in sorted(lake.keys() - image_columns) if image_columns else ():
            raise SchemaChangeError(client, table, name, str(lake[name].type), "dropped", "column missing from events")
        return []
    for name, f in lake.items():
        if name not in src:
            raise SchemaChangeError(client, table, name, str(f.type), "dropped", "column dropped in the source")
        try:
            new = source_arrow_type(src[name])
        except TypeParseError:
            new = None
        if new != f.type:
            raise SchemaChangeError(client, table, name, str(f.type), f"{src[name].column_type} -> {new}",
                                    "column type changed in the source")
    for name in sorted(image_columns - lake.keys() - src.keys()):
        raise SchemaChangeError(client, table, name, "absent", "absent in source",
                                "column in events is neither in the lake nor in the source")
    added = []
    for name, col in src.items():
        if name not in lake:
            try:
                # Nullable in the lake whatever the source says: rows written before the column have no value.
                added.append(pa.field(name, source_arrow_type(col), nullable=True))
            except TypeParseError as e:
                raise SchemaChangeError(client, table, name, "absent", col.column_type, f"unsupported type: {e}") from None
    return added


def add_columns(settings: Settings, client: str, table: str, fields: list[pa.Field], layers: tuple[str, ...]) -> None:
    """ALTER TABLE ADD COLUMNS on the given layers (skipping columns a previous, interrupted run added)."""
    for layer in layers:
        url = table_url(settings, layer, client, table)  # type: ignore[arg-type]

        def step(url: str = url) -> None:
            dt = open_table(settings, url)
            if dt is None:
                return
            have = set(pa.schema(dt.schema().to_arrow()).names)
            todo = [Field.from_arrow(f) for f in fields if f.name not in have]
            if todo:
                dt.alter.add_columns(todo)

        with_commit_retry(step, f"add columns {client}.{table} ({layer})")
