"""CREATE TABLE statements from the model, and creation of a client's production and staging databases.

Reference columns are indexed; foreign keys are enforced only when the model says `foreign_keys: true` (tests
truncate and reload tables in any order, and the CDC/lake stages must tolerate orphans anyway: events of one
transaction can arrive per table). Constraints are added after every table exists (ALTER TABLE), so
reference cycles through nullable columns work; they use the default ON DELETE RESTRICT, never CASCADE
(cascaded changes would bypass the workload's rules).
"""
from __future__ import annotations

import hashlib
from typing import Iterable

import pymysql

from dw_assets.identifiers import quote_ident, quote_qualified, staging_db_for

from .model import Column, Reference, StandardModel, Table
from .types import quote_sql_string

TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"


def _default_sql(c: Column) -> str:
    v = c.default
    if v is None or v == "NULL":
        return "NULL"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str) and v.upper().startswith("CURRENT_TIMESTAMP"):
        return v.upper()  # validated by the model loader: CURRENT_TIMESTAMP or CURRENT_TIMESTAMP(n)
    return quote_sql_string(str(v))


def column_definition(c: Column) -> str:
    parts = [quote_ident(c.name), c.type.sql()]
    if c.collation:  # validated by the loader: a utf8mb4_* name
        parts.append(f"COLLATE {c.collation}")
    parts.append("NULL" if c.nullable else "NOT NULL")
    if c.auto_increment:
        parts.append("AUTO_INCREMENT")
    if c.has_default:
        parts.append(f"DEFAULT {_default_sql(c)}")
    if c.on_update:
        parts.append(f"ON UPDATE {c.on_update}")  # normalized by the loader: CURRENT_TIMESTAMP[(n)]
    return " ".join(parts)


def create_table_sql(table: Table, database: str | None = None, if_not_exists: bool = False) -> str:
    """One CREATE TABLE statement for a model table (optionally qualified with `database`)."""
    name = quote_qualified(database, table.name) if database else quote_ident(table.name)
    lines = [column_definition(c) for c in table.columns]
    lines.append("PRIMARY KEY (" + ", ".join(quote_ident(n) for n in table.primary_key) + ")")
    for ix in table.all_indexes:
        kind = "UNIQUE KEY" if ix.unique else "KEY"
        lines.append(f"{kind} {quote_ident(ix.name)} (" + ", ".join(quote_ident(n) for n in ix.columns) + ")")
    exists = "IF NOT EXISTS " if if_not_exists else ""
    body = ",\n  ".join(lines)
    return f"CREATE TABLE {exists}{name} (\n  {body}\n) {TABLE_OPTIONS}"


def foreign_key_name(table: str, column: str) -> str:
    """Constraint names are unique per database in InnoDB: table and column, hashed when over 64 characters."""
    name = f"fk_{table}_{column}"
    return name if len(name) <= 64 else name[:55] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]


def foreign_keys(model: StandardModel) -> list[tuple[Table, Column, Reference]]:
    """The constraints the model asks for (none unless `foreign_keys: true`)."""
    if not model.foreign_keys:
        return []
    return [(t, c, c.references) for t in model.tables for c in t.reference_columns]


def foreign_key_statements(model: StandardModel, database: str) -> list[str]:
    return [f"ALTER TABLE {quote_qualified(database, t.name)} "
            f"ADD CONSTRAINT {quote_ident(foreign_key_name(t.name, c.name))} FOREIGN KEY ({quote_ident(c.name)}) "
            f"REFERENCES {quote_qualified(database, r.table)} ({quote_ident(r.column)})"
            for t, c, r in foreign_keys(model)]


def create_database_statements(model: StandardModel, database: str, if_not_exists: bool = False) -> list[str]:
    """CREATE DATABASE plus one CREATE TABLE per model table, parents first."""
    exists = "IF NOT EXISTS " if if_not_exists else ""
    stmts = [f"CREATE DATABASE {exists}{quote_ident(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"]
    stmts += [create_table_sql(t, database, if_not_exists) for t in model.tables]
    if not if_not_exists:  # ADD CONSTRAINT is not idempotent; IF NOT EXISTS callers re-apply tables only
        stmts += foreign_key_statements(model, database)
    return stmts


def execute_all(conn: pymysql.Connection, statements: Iterable[str]) -> None:
    with conn.cursor() as cur:
        for s in statements:
            cur.execute(s)


def drop_database(conn: pymysql.Connection, database: str) -> None:
    execute_all(conn, [f"DROP DATABASE IF EXISTS {quote_ident(database)}"])


def database_exists(conn: pymysql.Connection, database: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,))
        return cur.fetchone() is not None


def create_client_databases(conn: pymysql.Connection, model: StandardModel, client: str,
                            production_db: str | None = None, staging_db: str | None = None,
                            replace: bool = False) -> tuple[str, str]:
    """Create a client's production and staging databases with identical schemas from the model.

    `conn` is an admin connection. Without `replace`, an existing database is an error (the server's own
    "database exists" error); with it, both are dropped first. Returns (production_db, staging_db).
    """
    prod = production_db or client
    staging = staging_db or staging_db_for(client)
    for db in (prod, staging):
        if replace:
            drop_database(conn, db)
        execute_all(conn, create_database_statements(model, db))
    return prod, staging
