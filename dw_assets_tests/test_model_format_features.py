"""The model format's less common features on real services, with `models/format_features.yaml`: spatial columns,
a store <-> manager reference cycle, collations, ON UPDATE CURRENT_TIMESTAMP, composite unique keys, secondary
indexes and foreign keys — from the DDL and the seed through capture, landing and apply to silver, and the drift
checks that compare them (production vs model, staging vs production).

One seeded client and one pipeline run are shared by the module (the expensive part); each test asserts one outcome.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from dw_assets import db
from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.checks.conformance import production_conformance, staging_conformance
from dw_assets.checks.reconciliation import reconcile
from dw_assets.identifiers import quote_qualified
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.paths import read_delta
from dw_assets.landing import land_client
from dw_assets.model import load_model
from dw_assets.model.geometry import register_wkt, wkt
from dw_assets.workload import apply_batch, seed_clients
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.pipeline_support import assert_silver_equals_source

MODEL_PATH = Path(__file__).with_name("models") / "format_features.yaml"


@pytest.fixture(scope="module")
def features(stack_settings, tmp_path_factory):
    """(settings, client, model): one client seeded from the features model, captured, landed and applied."""
    tmp = tmp_path_factory.mktemp("features")
    settings = replace(stack_settings, lake_url=str(tmp / "lake"), landing_url=str(tmp / "landing"),
                       home=tmp / "home", model_path=str(MODEL_PATH))
    model = load_model(MODEL_PATH)
    client = unique_client("feat")
    seed_clients(settings, [client], rows_per_client=300, seed=5)

    def capture() -> None:
        CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, {client}))).run()

    capture()  # snapshot path
    for i in range(4):  # binlog path: inserts (with geometries), updates (ON UPDATE fires), deletes
        apply_batch(settings, client, seed=i, rows=40)
    capture()
    land_client(settings, client)
    result = apply_client(settings, client)
    assert result.ok, result.failed
    return settings, client, model


def query(settings, sql: str, params=()) -> list[tuple]:
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def test_silver_equals_source_including_geometry(features):
    settings, client, model = features
    assert_silver_equals_source(settings, client, model)
    assert reconcile(settings, client, model, rounds=1, settle_seconds=0).passed


def test_geometry_in_the_lake_is_wkb_with_srid_and_renders_as_wkt(features):
    settings, client, _ = features
    stores = read_delta(settings, "silver", client, "stores", columns=["store_id", "location"]).to_pylist()
    source = dict(query(settings, f"SELECT store_id, ST_AsText(location) FROM {quote_qualified(client, 'stores')}"))
    assert stores and all(r["location"]["srid"] == 4326 for r in stores)
    assert {r["store_id"]: wkt(r["location"]) for r in stores} == source
    # SCD2 history (stores keeps it) carries the geometry struct too: every current version matches silver.
    history = read_delta(settings, "silver_history", client, "stores").to_pylist()
    current = {r["store_id"]: r["location"] for r in history if r["is_current"]}
    assert current == {r["store_id"]: r["location"] for r in stores}
    # The same as a DuckDB function over the lake (no spatial extension needed).
    con = duckdb.connect()
    register_wkt(con)
    con.register("d", read_delta(settings, "silver", client, "deliveries", columns=["delivery_id", "anything"]))
    lake = dict(con.execute("SELECT delivery_id, st_astext(anything.wkb) FROM d WHERE anything IS NOT NULL").fetchall())
    src = dict(query(settings, f"SELECT delivery_id, ST_AsText(anything) FROM {quote_qualified(client, 'deliveries')} "
                               "WHERE anything IS NOT NULL"))
    assert lake and lake == src


def test_back_references_are_filled_after_the_inserts(features):
    settings, client, _ = features
    t = quote_qualified(client, "stores")
    s = quote_qualified(client, "staff")
    (managed, total) = query(settings, f"SELECT COUNT(manager_id), COUNT(*) FROM {t}")[0]
    assert managed >= total // 2  # most stores got a manager in the second pass (p_null 0.1)
    # A store's manager works at that store, and the enforced foreign keys held throughout.
    assert query(settings, f"SELECT COUNT(*) FROM {t} JOIN {s} ON staff_id = manager_id "
                           f"WHERE {s}.store_id <> {t}.store_id") == [(0,)]
    assert query(settings, f"SELECT COUNT(mentor_id) FROM {s}")[0][0] > 0


def test_fresh_client_conforms_to_the_model_with_indexes_collations_and_foreign_keys(features):
    settings, client, _ = features
    assert production_conformance(settings, client).differences == []
    assert staging_conformance(settings, client).differences == []
    fks = query(settings, "SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s",
                (client,))
    assert fks == [(5,)]


def test_drift_checks_see_index_collation_on_update_and_foreign_key_changes(features):
    settings, client, _ = features
    staging = f"{client}__staging"
    st = quote_qualified(staging, "stores")
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {st} DROP INDEX ux_region_code, ADD INDEX ix_opened (opened_on), "
                    "MODIFY COLUMN region VARCHAR(40) COLLATE utf8mb4_unicode_ci NOT NULL, "
                    "MODIFY COLUMN updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), "
                    "DROP FOREIGN KEY fk_stores_manager_id")
    found = {(d.kind, d.column, d.old, d.new) for d in staging_conformance(settings, client).differences}
    assert found >= {
        ("missing_index", None, "UNIQUE (region,code)", None),
        ("extra_index", None, None, "(opened_on)"),
        ("collation_changed", "region", "utf8mb4_bin", "utf8mb4_unicode_ci"),
        ("on_update_changed", "updated_at", "current_timestamp(6)", None),
        ("missing_foreign_key", "manager_id", "manager_id -> staff.staff_id", None),
    }
    # Production against the model: the same changes, with DDL that puts them back.
    pt = quote_qualified(client, "staff")
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {pt} ADD INDEX ix_store (store_id)")  # the foreign key needs an index first
        cur.execute(f"ALTER TABLE {pt} DROP INDEX ux_store_id_login")
    diffs = [d for d in production_conformance(settings, client).differences if d.table == "staff"]
    assert [(d.kind, d.old, d.new) for d in diffs] == [("missing_index", "UNIQUE (store_id,login)", None),
                                                        ("extra_index", None, "(store_id)")]
    assert all(not d.is_breaking for d in diffs)
    with db.connection(settings) as conn, conn.cursor() as cur:
        for d in diffs:
            cur.execute(d.ddl)
    assert production_conformance(settings, client).differences == []
