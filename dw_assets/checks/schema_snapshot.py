"""A database's structure (tables, columns, keys, indexes) read from information_schema, or built from the model.

Both sides of every schema comparison are a `SchemaSnapshot`, so the diff never cares where a schema came from.
Live snapshots use the least-privilege `cdc` role: SELECT on information_schema is all they need.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import pymysql

from dw_assets import db
from dw_assets.identifiers import quote_ident, quote_qualified
from dw_assets.model import StandardModel, TypeParseError, TypeSpec, parse_type
from dw_assets.model.ddl import TABLE_OPTIONS, column_definition, foreign_key_name, foreign_keys
from dw_assets.settings import Settings


@dataclass(frozen=True)
class ColumnSnapshot:
    name: str
    column_type: str  # as information_schema.COLUMNS.COLUMN_TYPE spells it, e.g. "decimal(12,2)", "int(11)"
    nullable: bool
    ordinal: int  # 1-based
    default: str | None = None  # SQL expression as the server renders it ("'active'", "0", "current_timestamp(6)")
    auto_increment: bool = False
    definition: str = ""  # a column definition for DDL (`name` type [NOT] NULL [DEFAULT ...])
    collation: str | None = None  # information_schema.COLUMNS.COLLATION_NAME (None: not a character column)
    on_update: str | None = None  # "current_timestamp(6)" / "current_timestamp" for ON UPDATE CURRENT_TIMESTAMP

    @property
    def type(self) -> TypeSpec | None:
        """The parsed type, or None for a type the model does not support (compared as text only)."""
        try:
            return parse_type(self.column_type)
        except TypeParseError:
            return None

    @property
    def has_null_default(self) -> bool:
        """True when existing rows would hold NULL after `ADD COLUMN` (no default, or DEFAULT NULL)."""
        return self.default is None or self.default.upper() == "NULL"


@dataclass(frozen=True)
class IndexSnapshot:
    name: str
    columns: tuple[str, ...]
    unique: bool


@dataclass(frozen=True)
class ForeignKeySnapshot:
    name: str
    column: str
    ref_table: str
    ref_column: str


@dataclass(frozen=True)
class TableSnapshot:
    name: str
    columns: tuple[ColumnSnapshot, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[IndexSnapshot, ...] = ()
    foreign_keys: tuple[ForeignKeySnapshot, ...] = ()

    def column(self, name: str) -> ColumnSnapshot | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def create_sql(self, database: str) -> str:
        """A CREATE TABLE statement that recreates this table's columns, key and indexes in `database`."""
        lines = [c.definition for c in self.columns]
        if self.primary_key:
            lines.append("PRIMARY KEY (" + ", ".join(quote_ident(n) for n in self.primary_key) + ")")
        for ix in self.indexes:
            kind = "UNIQUE KEY" if ix.unique else "KEY"
            lines.append(f"{kind} {quote_ident(ix.name)} (" + ", ".join(quote_ident(c) for c in ix.columns) + ")")
        body = ",\n  ".join(lines)
        return f"CREATE TABLE {quote_qualified(database, self.name)} (\n  {body}\n) {TABLE_OPTIONS}"


@dataclass(frozen=True)
class SchemaSnapshot:
    source: str  # "model 1.0.0" or "mariadb:<database>", for messages
    tables: tuple[TableSnapshot, ...]
    # False for a model without `foreign_keys: true`: it asserts nothing about constraints, so none are compared.
    has_foreign_keys: bool = True
    taken_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def table(self, name: str) -> TableSnapshot | None:
        return next((t for t in self.tables if t.name == name), None)

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- from the model ---------------------------------------------------------------------------------------


def snapshot_from_model(model: StandardModel) -> SchemaSnapshot:
    """The structure every client database should have, in the same shape as a live snapshot."""
    tables = []
    fks: dict[str, list[ForeignKeySnapshot]] = {}
    for t, c, r in foreign_keys(model):
        fk = ForeignKeySnapshot(foreign_key_name(t.name, c.name), c.name, r.table, r.column)
        fks.setdefault(t.name, []).append(fk)
    for t in model.tables:
        cols = tuple(
            ColumnSnapshot(name=c.name, column_type=c.type.column_type(), nullable=c.nullable, ordinal=c.ordinal,
                           default=_model_default(c) if c.has_default else None, auto_increment=c.auto_increment,
                           definition=column_definition(c), collation=model_collation(c),
                           on_update=c.on_update.lower() if c.on_update else None)
            for c in t.columns
        )
        indexes = tuple(IndexSnapshot(ix.name, ix.columns, ix.unique) for ix in t.all_indexes)
        tables.append(TableSnapshot(t.name, cols, tuple(t.primary_key), indexes, tuple(fks.get(t.name, ()))))
    return SchemaSnapshot(source=f"model {model.version}", tables=tuple(tables), has_foreign_keys=model.foreign_keys)


DEFAULT_COLLATION = "utf8mb4_unicode_ci"  # TABLE_OPTIONS' collation, what a column without COLLATE gets


def model_collation(c: Any) -> str | None:
    """The COLLATION_NAME MariaDB reports for a model column (JSON is LONGTEXT with utf8mb4_bin)."""
    if c.collation:
        return c.collation
    if c.type.base == "json":
        return "utf8mb4_bin"
    return DEFAULT_COLLATION if c.type.is_text and c.type.base != "uuid" else None


def _model_default(c: Any) -> str:
    # Only "is it NULL" matters for classification; render the rest roughly as the server would.
    v = c.default
    if v is None or v == "NULL":
        return "NULL"
    return str(int(v)) if isinstance(v, bool) else str(v)


# ---- from a live database ---------------------------------------------------------------------------------

_COLUMNS_SQL = (
    # No JOIN with TABLES to keep base tables only: MariaDB then opens every table twice (5 s instead of 0.05 s
    # per 100 databases); views are dropped in Python against the TABLES result instead.
    "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_DEFAULT, IS_NULLABLE, COLUMN_TYPE, "
    "EXTRA, COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({in_list}) "
    "ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
)
_TABLES_SQL = ("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({in_list}) "
               "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME")
_INDEXES_SQL = ("SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM "
                "information_schema.STATISTICS WHERE TABLE_SCHEMA IN ({in_list}) "
                "ORDER BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX")
_FOREIGN_KEYS_SQL = ("SELECT TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, "
                     "REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
                     "WHERE TABLE_SCHEMA IN ({in_list}) AND REFERENCED_TABLE_NAME IS NOT NULL "
                     "ORDER BY TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME")
_SCHEMATA_SQL = "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({in_list})"
# MariaDB's JSON is LONGTEXT plus a json_valid() check; the model reports JSON as "longtext" too, so the check
# constraint is not needed for comparison.
SNAPSHOT_CHUNK = 100  # databases per information_schema query: a sweep of 500 clients is a few dozen queries


class SnapshotError(RuntimeError):
    """The database cannot be read (missing, or the role lacks privileges); the message names the database."""


def snapshot_database(settings: Settings, database: str, conn: pymysql.Connection | None = None) -> SchemaSnapshot:
    """Read `database`'s base tables from information_schema with the `cdc` role (or the given connection).

    A database that does not exist raises SnapshotError (an empty database gives an empty snapshot).
    """
    snap = snapshot_databases(settings, [database], conn)[database]
    if snap is None:
        raise SnapshotError(f"database {database!r} does not exist or is not visible to the cdc role")
    return snap


def snapshot_databases(settings: Settings, databases: Sequence[str], conn: pymysql.Connection | None = None,
                       chunk: int = SNAPSHOT_CHUNK) -> dict[str, SchemaSnapshot | None]:
    """Snapshots of many databases, read with four information_schema queries per `chunk` databases instead of
    four per database; None for a database that does not exist or is not visible to the cdc role."""
    if conn is None:
        with db.connection(settings, role="cdc") as own:
            return snapshot_databases(settings, databases, own, chunk)
    wanted = list(dict.fromkeys(databases))
    step = max(1, chunk)
    out: dict[str, SchemaSnapshot | None] = {}
    for i in range(0, len(wanted), step):
        part = wanted[i:i + step]
        in_list = ", ".join(["%s"] * len(part))  # values bound, never formatted in
        with conn.cursor() as cur:
            cur.execute(_SCHEMATA_SQL.format(in_list=in_list), part)
            present = {r[0] for r in cur.fetchall()}
            cur.execute(_TABLES_SQL.format(in_list=in_list), part)
            table_rows = cur.fetchall()
            cur.execute(_COLUMNS_SQL.format(in_list=in_list), part)
            col_rows = cur.fetchall()
            cur.execute(_INDEXES_SQL.format(in_list=in_list), part)
            ix_rows = cur.fetchall()
            cur.execute(_FOREIGN_KEYS_SQL.format(in_list=in_list), part)
            fk_rows = cur.fetchall()
        names, cols, ixs, fks = (_by_schema(part, rows) for rows in (table_rows, col_rows, ix_rows, fk_rows))
        for d in part:
            out[d] = _build_snapshot(d, [r[0] for r in names[d]], cols[d], ixs[d], fks[d]) if d in present else None
    return out


def _by_schema(schemas: list[str], rows: Sequence[tuple]) -> dict[str, list[tuple]]:
    """Rows whose first column is the schema, grouped by it (the schema column dropped)."""
    out: dict[str, list[tuple]] = {d: [] for d in schemas}
    for row in rows:
        out.setdefault(row[0], []).append(row[1:])
    return out


def _build_snapshot(database: str, names: list[str], col_rows: list[tuple], ix_rows: list[tuple],
                    fk_rows: Sequence[tuple] = ()) -> SchemaSnapshot:
    columns: dict[str, list[ColumnSnapshot]] = {n: [] for n in names}
    for table, name, ordinal, default, is_nullable, column_type, extra, collation in col_rows:
        if table not in columns:
            continue  # a view's columns
        nullable = is_nullable == "YES"
        auto_inc = "auto_increment" in (extra or "").lower()
        on_update = _on_update(extra)
        columns.setdefault(table, []).append(ColumnSnapshot(
            name=name, column_type=column_type, nullable=nullable, ordinal=int(ordinal), default=default,
            auto_increment=auto_inc, collation=collation, on_update=on_update,
            definition=_live_definition(name, column_type, nullable, default, auto_inc, collation, on_update)))
    fks: dict[str, list[ForeignKeySnapshot]] = {}
    for table, constraint, column, ref_table, ref_column in fk_rows:
        fks.setdefault(table, []).append(ForeignKeySnapshot(constraint, column, ref_table, ref_column))

    index_cols: dict[tuple[str, str], list[str]] = {}
    unique: dict[tuple[str, str], bool] = {}
    for table, index, non_unique, column in ix_rows:
        index_cols.setdefault((table, index), []).append(column)
        unique[(table, index)] = not int(non_unique)
    tables = []
    for n in names:
        pk = tuple(index_cols.get((n, "PRIMARY"), ()))
        ixs = tuple(IndexSnapshot(ix, tuple(cols), unique[(t, ix)]) for (t, ix), cols in sorted(index_cols.items())
                    if t == n and ix != "PRIMARY")
        tables.append(TableSnapshot(n, tuple(columns.get(n, ())), pk, ixs, tuple(fks.get(n, ()))))
    return SchemaSnapshot(source=f"mariadb:{database}", tables=tuple(tables))


def _on_update(extra: str | None) -> str | None:
    """EXTRA's `on update current_timestamp(6)` -> "current_timestamp(6)" (`current_timestamp()` -> without)."""
    text = (extra or "").lower()
    if "on update " not in text:
        return None
    value = text.split("on update ", 1)[1].split()[0]
    return value.removesuffix("()").removesuffix("(0)")


def _live_definition(name: str, column_type: str, nullable: bool, default: str | None, auto_inc: bool,
                     collation: str | None = None, on_update: str | None = None) -> str:
    # column_type, default, collation and on_update are SQL the server rendered itself, so they are embedded as
    # they are; the name came from information_schema too and may hold anything, so it is quoted.
    parts = [quote_ident(name), column_type]
    if collation and collation != DEFAULT_COLLATION:
        parts.append(f"COLLATE {collation}")
    parts.append("NULL" if nullable else "NOT NULL")
    if auto_inc:
        parts.append("AUTO_INCREMENT")
    if default is not None and not (default.upper() == "NULL" and not nullable):
        parts.append(f"DEFAULT {default}")
    if on_update:
        parts.append(f"ON UPDATE {on_update}")
    return " ".join(parts)
