"""CREATE TABLE statements from the model, and creation of a client's production and staging databases.

Reference columns are indexed but foreign keys are NOT enforced: the workload deletes child rows, tests
truncate and reload tables in any order, and the CDC/lake stages must tolerate orphans anyway (events of one
transaction can arrive per table); referential consistency is the generator's job and a lake check's concern.
"""
from __future__ import annotations

from typing import Iterable

import pymysql

from dw_assets.identifiers import quote_ident, quote_qualified, staging_db_for

from .model import Column, StandardModel, Table
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
    parts = [quote_ident(c.name), c.type.sql(), "NULL" if c.nullable else "NOT NULL"]
    if c.auto_increment:
        parts.append("AUTO_INCREMENT")
    if c.has_default:
        parts.append(f"DEFAULT {_default_sql(c)}")
    return " ".join(parts)


def create_table_sql(table: Table, database: str | None = None, if_not_exists: bool = False) -> str:
    """One CREATE TABLE statement for a model table (optionally qualified with `database`)."""
    name = quote_qualified(database, table.name) if database else quote_ident(table.name)
    lines = [column_definition(c) for c in table.columns]
    lines.append("PRIMARY KEY (" + ", ".join(quote_ident(n) for n in table.primary_key) + ")")
    for c in table.columns:
        if c.unique:
            lines.append(f"UNIQUE KEY {quote_ident(_index_name('ux', table, c))} ({quote_ident(c.name)})")
    for c in table.reference_columns:
        # The primary key already serves lookups by its first column.
        if table.primary_key[0] != c.name and not c.unique:
            lines.append(f"KEY {quote_ident(_index_name('ix', table, c))} ({quote_ident(c.name)})")
    exists = "IF NOT EXISTS " if if_not_exists else ""
    body = ",\n  ".join(lines)
    return f"CREATE TABLE {exists}{name} (\n  {body}\n) {TABLE_OPTIONS}"


def _index_name(prefix: str, table: Table, c: Column) -> str:
    return f"{prefix}_{c.name}"[:64]


def create_database_statements(model: StandardModel, database: str, if_not_exists: bool = False) -> list[str]:
    """CREATE DATABASE plus one CREATE TABLE per model table, parents first."""
    exists = "IF NOT EXISTS " if if_not_exists else ""
    stmts = [f"CREATE DATABASE {exists}{quote_ident(database)} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"]
    stmts += [create_table_sql(t, database, if_not_exists) for t in model.tables]
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
