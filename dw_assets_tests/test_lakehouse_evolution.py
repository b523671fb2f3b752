"""Schema evolution against a real source database: a new column is typed from information_schema and added;
a type change fails that table only, with client, table, column, old and new type in the message."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from dw_assets import db
from dw_assets.identifiers import quote_ident
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.paths import read_delta
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.model.ddl import create_database_statements, execute_all
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.lakehouse_support import KEYS, account, entry, tiny_model


def test_new_column_added_and_type_change_refused(stack_settings: Settings, tmp_path: Path):
    settings = stack_settings.with_overrides(landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    client = unique_client("lkev")
    model = tiny_model(tmp_path)
    with db.connection(settings) as conn:
        execute_all(conn, create_database_statements(model, client))
    feed = LandingFeed(settings, client, KEYS)
    feed.write("accounts", feed.events("accounts", [("c", account(1)), ("c", account(2))]))
    feed.write("entries", feed.events("entries", [("c", entry(1, 1))]))
    r = apply_client(settings, client, model)  # default source schema: the client's information_schema
    assert r.ok, r.failed

    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {quote_ident(client)}.accounts ADD COLUMN credit_limit DECIMAL(9,3) NULL")
    feed.write("accounts", feed.events("accounts", [("c", account(3, credit_limit="12.345")),
                                                    ("u", account(1, "4.00", credit_limit="1.000"))]))
    r = apply_client(settings, client, model)
    assert r.ok, r.failed
    assert r.tables["accounts"].added_columns == ["credit_limit"]
    silver = read_delta(settings, "silver", client, "accounts")
    assert silver.schema.field("credit_limit").type == pa.decimal128(9, 3)
    limits = {row["account_id"]: row["credit_limit"] for row in silver.to_pylist()}
    assert {k: (str(v) if v is not None else None) for k, v in limits.items()} == {1: "1.000", 2: None, 3: "12.345"}
    history = read_delta(settings, "silver_history", client, "accounts")
    assert "credit_limit" in history.column_names

    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {quote_ident(client)}.accounts MODIFY COLUMN balance VARCHAR(20) NOT NULL")
    feed.write("accounts", feed.events("accounts", [("u", account(2, "abc", credit_limit=None))]))
    feed.write("entries", feed.events("entries", [("c", entry(1, 2))]))
    r = apply_client(settings, client, model)
    err = r.failed["accounts"]
    for part in (client, "accounts", "balance", "decimal128(14, 2)", "varchar(20)"):
        assert part in err, err
    assert r.tables["entries"].ok and r.tables["entries"].silver.inserted == 1  # other tables continue
    assert read_delta(settings, "bronze", client, "accounts").num_rows == 5  # events kept for a later catch-up
    # Still refused on the next run (not silently skipped), and the table's events stay in bronze.
    assert "accounts" in apply_client(settings, client, model).failed
