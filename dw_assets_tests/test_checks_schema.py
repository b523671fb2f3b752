"""Schema snapshots, classified differences and reconciling DDL, against the model and real MariaDB databases."""
from __future__ import annotations

from dataclasses import replace

import pytest

from dw_assets import db
from dw_assets.checks.conformance import breaking_differences, production_conformance, staging_conformance
from dw_assets.checks.schema_diff import diff_schemas, differences_markdown, is_widening
from dw_assets.checks.schema_snapshot import snapshot_database, snapshot_from_model
from dw_assets.identifiers import quote_qualified
from dw_assets.model import load_model, parse_type
from dw_assets.model.ddl import create_client_databases
from dw_assets.onboarding.registry import register_client
from dw_assets_tests.conftest import unique_client


def make_client(settings, prefix: str = "sc") -> str:
    """A registered client whose production and staging databases follow the model (no rows)."""
    name = unique_client(prefix)
    model = load_model()
    with db.connection(settings) as conn:
        create_client_databases(conn, model, name)
    register_client(settings, name, model_version=model.version)
    return name


def execute(settings, *sql: str) -> None:
    with db.connection(settings) as conn, conn.cursor() as cur:
        for s in sql:
            cur.execute(s)


# ---- pure classification ----------------------------------------------------------------------------------


@pytest.mark.parametrize("old,new,widening", [
    ("INT", "BIGINT", True), ("VARCHAR(50)", "VARCHAR(100)", True), ("DECIMAL(10,2)", "DECIMAL(12,2)", True),
    ("INT UNSIGNED", "BIGINT", True), ("ENUM('a','b')", "ENUM('a','b','c')", True), ("TEXT", "LONGTEXT", True),
    ("FLOAT", "DOUBLE", True), ("DATETIME", "DATETIME(6)", True), ("VARCHAR(10)", "TEXT", True),
    ("BIGINT", "INT", False), ("VARCHAR(100)", "VARCHAR(50)", False), ("DECIMAL(10,2)", "DECIMAL(10,3)", False),
    ("INT UNSIGNED", "INT", False), ("TINYINT(1)", "TINYINT", False), ("ENUM('a','b')", "ENUM('b','a')", False),
    ("TEXT", "VARCHAR(100)", False), ("DATE", "DATETIME", False), ("VARCHAR(10)", "INT", False),
    ("DECIMAL(30,2)", "DECIMAL(40,2)", False),  # past 38 digits the lake stores text: a family change
])
def test_type_widening_rules(old, new, widening):
    assert is_widening(parse_type(old), parse_type(new)) is widening


def test_model_snapshot_has_no_differences_with_itself():
    snap = snapshot_from_model(load_model())
    assert diff_schemas(snap, snap) == []
    assert differences_markdown([]) == "_no differences_"


# ---- against real databases -------------------------------------------------------------------------------


def test_fresh_client_conforms_and_snapshot_reads_keys_and_indexes(stack_settings):
    client = make_client(stack_settings)
    res = production_conformance(stack_settings, client)
    assert res.differences == [] and res.conforming
    snap = snapshot_database(stack_settings, client)
    items = snap.table("order_items")
    assert items.primary_key == ("order_id", "line_no")
    assert [c.ordinal for c in items.columns] == list(range(1, len(items.columns) + 1))
    assert any(ix.unique and ix.columns == ("email",) for ix in snap.table("customers").indexes)
    assert snap.table("customers").column("status").default == "'active'"
    assert staging_conformance(stack_settings, client).differences == []


def test_column_added_in_staging_only_warns_with_ddl_that_reconciles(stack_settings):
    client = make_client(stack_settings)
    staging = f"{client}__staging"
    execute(stack_settings, f"ALTER TABLE {quote_qualified(staging, 'orders')} ADD COLUMN `channel` VARCHAR(20) NULL "
                            "AFTER `currency`")
    res = staging_conformance(stack_settings, client)
    assert [(d.kind, d.table, d.column, d.severity) for d in res.differences] == \
        [("extra_column", "orders", "channel", "additive")]
    ddl = res.differences[0].ddl
    assert ddl == (f"ALTER TABLE {quote_qualified(client, 'orders')} ADD COLUMN `channel` varchar(20) NULL "
                   "DEFAULT NULL AFTER `currency`")
    assert production_conformance(stack_settings, client).differences == []  # production still on the model
    execute(stack_settings, ddl)  # the DDL really reconciles them
    assert staging_conformance(stack_settings, client).differences == []


def test_nullable_column_in_production_is_additive(stack_settings):
    client = make_client(stack_settings)
    execute(stack_settings, f"ALTER TABLE {quote_qualified(client, 'customers')} ADD COLUMN `nickname` VARCHAR(40)")
    res = production_conformance(stack_settings, client)
    assert [(d.kind, d.column, d.severity) for d in res.differences] == [("extra_column", "nickname", "additive")]
    assert res.conforming and breaking_differences(stack_settings, client) == []


def test_new_column_with_default_for_existing_rows_is_breaking(stack_settings):
    client = make_client(stack_settings)
    execute(stack_settings, f"ALTER TABLE {quote_qualified(client, 'customers')} ADD COLUMN `tier` INT NOT NULL DEFAULT 3")
    (d,) = production_conformance(stack_settings, client).differences
    assert (d.kind, d.severity) == ("extra_column", "breaking")


def test_type_change_in_production_breaks_that_client_only(stack_settings):
    broken, other = make_client(stack_settings), make_client(stack_settings)
    execute(stack_settings,
            f"ALTER TABLE {quote_qualified(broken, 'orders')} MODIFY COLUMN `total_amount` DECIMAL(8,2) NOT NULL",
            f"ALTER TABLE {quote_qualified(broken, 'customers')} MODIFY COLUMN `phone` VARCHAR(64) NULL")
    diffs = breaking_differences(stack_settings, broken)
    assert [(d.kind, d.table, d.column, d.old, d.new) for d in diffs] == \
        [("type_changed", "orders", "total_amount", "decimal(12,2)", "decimal(8,2)")]
    assert diffs[0].ddl == (f"ALTER TABLE {quote_qualified(broken, 'orders')} MODIFY COLUMN `total_amount` "
                            "DECIMAL(12,2) NOT NULL")
    widened = [d for d in production_conformance(stack_settings, broken).differences if d.column == "phone"]
    assert [(d.kind, d.severity) for d in widened] == [("type_changed", "additive")]
    assert breaking_differences(stack_settings, other) == []


def test_dropped_table_and_column_and_key_change_are_breaking(stack_settings):
    client = make_client(stack_settings)
    execute(stack_settings, f"DROP TABLE {quote_qualified(client, 'invoices')}",
            f"ALTER TABLE {quote_qualified(client, 'payments')} DROP COLUMN `raw_response`",
            f"ALTER TABLE {quote_qualified(client, 'addresses')} DROP PRIMARY KEY, MODIFY `address_id` BIGINT NOT NULL, "
            "ADD PRIMARY KEY (`address_id`, `customer_id`)")
    kinds = {(d.kind, d.table): d for d in breaking_differences(stack_settings, client)}
    assert set(kinds) == {("missing_table", "invoices"), ("missing_column", "payments"),
                          ("primary_key_changed", "addresses")}
    assert kinds[("missing_table", "invoices")].ddl.startswith(f"CREATE TABLE {quote_qualified(client, 'invoices')}")


def test_missing_production_database_is_every_table_missing(stack_settings):
    client = unique_client("gone")
    res = production_conformance(stack_settings, client)
    assert res.missing_database and {d.kind for d in res.differences} == {"missing_table"}
    assert len(res.breaking) == len(load_model().tables)


def test_identifiers_with_backticks_quotes_and_unicode_are_handled(stack_settings):
    client = make_client(stack_settings)
    weird_table, weird_col = "we`ird \"t'able\" ☃", "c`o'l\"ü"
    execute(stack_settings,
            f"CREATE TABLE {quote_qualified(client, weird_table)} (`id` INT PRIMARY KEY, "
            f"{quote_qualified(weird_col)} VARCHAR(5) NULL)",
            f"CREATE TABLE {quote_qualified(client + '__staging', weird_table)} (`id` INT PRIMARY KEY, "
            f"{quote_qualified(weird_col)} VARCHAR(5) NULL, `more` INT NULL)")
    prod = production_conformance(stack_settings, client)
    assert [(d.kind, d.table) for d in prod.differences] == [("extra_table", weird_table)]
    assert weird_table in differences_markdown(prod.differences)
    staging = staging_conformance(stack_settings, client)
    (d,) = staging.differences
    assert (d.kind, d.table, d.column) == ("extra_column", weird_table, "more")
    execute(stack_settings, d.ddl)  # quoted correctly, so it runs
    assert staging_conformance(stack_settings, client).differences == []
    # A table only staging has gets a CREATE TABLE that recreates it, weird column name included.
    execute(stack_settings, f"DROP TABLE {quote_qualified(client, weird_table)}")
    (d,) = staging_conformance(stack_settings, client).differences
    assert d.kind == "extra_table"
    execute(stack_settings, d.ddl)
    assert staging_conformance(stack_settings, client).differences == []


def test_bulk_sweep_reads_many_databases_like_one_at_a_time_and_ignores_views(stack_settings):
    from dw_assets.checks.drift_report import drift_report
    from dw_assets.checks.schema_snapshot import snapshot_databases

    clients = [make_client(stack_settings, "bk") for _ in range(3)]
    broken = clients[1]
    table = load_model().tables[0]
    dropped = next(c.name for c in table.columns if c.name not in table.primary_key)
    execute(stack_settings,
            f"CREATE VIEW {quote_qualified(clients[0], 'v_report')} AS SELECT 1 AS x",
            f"ALTER TABLE {quote_qualified(broken, table.name)} DROP COLUMN {quote_qualified(dropped)}")
    missing = unique_client("gone")
    bulk = snapshot_databases(stack_settings, [*clients, missing], chunk=2)  # chunks of two: crosses a boundary
    assert bulk[missing] is None
    for c in clients:  # the same schema; taken_at differs when a second boundary passes between the two reads
        one = snapshot_database(stack_settings, c)
        assert one is not None and bulk[c] == replace(one, taken_at=bulk[c].taken_at)
    assert "v_report" not in {t.name for t in bulk[clients[0]].tables}
    report = {r.client: r for r in drift_report(stack_settings, clients)}
    assert {c for c, r in report.items() if not r.conforming} == {broken}
    assert [d.column for d in report[broken].production if d.is_breaking] == [dropped]
