"""`dw reconcile --repair` on the real pipeline (MariaDB -> CDC -> Tansu -> landing -> Delta): silver edited by hand
and events lost between the broker and the lake are repaired by key to exactly the source, the corrections sit in
bronze as such, and changes streamed after the repair's snapshot win over its corrections.
"""
from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from dw_assets import cli, db
from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.checks import repair
from dw_assets.defs import checks as check_defs
from dw_assets.identifiers import quote_qualified
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.landing_files import list_landing_files
from dw_assets.lakehouse.paths import read_delta, table_url
from dw_assets.landing import land_client
from dw_assets.model import load_model
from dw_assets.partitions import clients_partitions
from dw_assets.resources import DwSettings
from dw_assets.workload import seed_clients
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.pipeline_support import assert_silver_equals_source


def _pass(settings, client, apply: bool = True) -> None:
    """One pipeline pass: capture what the binlog has, land it, apply it."""
    CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, {client}))).run()
    land_client(settings, client)
    if apply:
        assert apply_client(settings, client).ok


def _sql(settings, statement: str, params=()) -> int:
    with db.connection(settings, autocommit=True) as conn, conn.cursor() as cur:
        return cur.execute(statement, params)


def _silver(settings, client, table) -> DeltaTable:
    return DeltaTable(table_url(settings, "silver", client, table))


def _use_env(monkeypatch, settings) -> None:
    """Point `load_settings` (CLI, Dagster resource) at this test's stack, lake and landing."""
    for k, v in {"DW_HOME": str(settings.home), "DW_LAKE_URL": settings.lake_url,
                 "DW_LANDING_URL": settings.landing_url}.items():
        monkeypatch.setenv(k, v)


def _repairs_in_bronze(settings, client, table):
    b = read_delta(settings, "bronze", client, table)
    return b.filter(pc.equal(b["source_snapshot"], "repair"))


@pytest.fixture
def pipeline(stack_settings, tmp_path: Path):
    settings = stack_settings.with_overrides(lake_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    client = unique_client("rp")
    seed_clients(settings, [client], rows_per_client=300, seed=5)
    _pass(settings, client)
    model = load_model()
    assert_silver_equals_source(settings, client, model)
    return settings, client, model


@pytest.mark.slow
def test_repair_heals_manual_edits_and_lost_events_and_records_corrections(pipeline, monkeypatch, capsys):
    settings, client, model = pipeline
    # Manual edits of silver: a deleted row, a changed value, a phantom row (a copy under a key the source lacks).
    orders = _silver(settings, client, "orders")
    victim = orders.to_pyarrow_table(columns=["order_id"])["order_id"][0].as_py()
    orders.delete(f"order_id = {victim}")
    customers = _silver(settings, client, "customers")
    changed = customers.to_pyarrow_table(columns=["customer_id"])["customer_id"][0].as_py()
    customers.update({"full_name": "'edited by hand'"}, predicate=f"customer_id = {changed}")
    items = _silver(settings, client, "order_items")
    phantom = items.to_pyarrow_table().slice(0, 1)
    phantom = phantom.set_column(phantom.schema.get_field_index("line_no"), "line_no",
                                 pc.add(phantom["line_no"], 500).cast(phantom.schema.field("line_no").type))
    write_deltalake(items, phantom, mode="append")
    # Lost events: the source changes, capture and landing see them, but the landing files vanish before apply.
    changed_products = _sql(settings, f"UPDATE {quote_qualified(client, 'products')} SET unit_price = unit_price + 7 "
                                      "ORDER BY product_id LIMIT 3")
    _sql(settings, f"DELETE FROM {quote_qualified(client, 'addresses')} ORDER BY address_id DESC LIMIT 1")
    before = {f.key for f in list_landing_files(settings, client)}
    _pass(settings, client, apply=False)
    lost = [f for f in list_landing_files(settings, client) if f.key not in before]
    assert {f.table for f in lost} == {"products", "addresses"}
    for f in lost:
        Path(settings.landing_url, f.key).unlink()
    assert apply_client(settings, client).events == 0

    _use_env(monkeypatch, settings)
    assert cli.main(["reconcile", "--client", client, "--rounds", "1", "--settle", "0"]) == 1
    assert "orders" in capsys.readouterr().out
    assert cli.main(["reconcile", "--repair", "--client", client, "--rounds", "1", "--settle", "0"]) == 0
    out = capsys.readouterr().out
    assert "silver now equals the source" in out and "repair:" in out, out

    assert_silver_equals_source(settings, client, model)
    # Bronze records each correction: 'r' rows for re-read keys, 'd' for keys only silver had.
    expect = {"orders": ["r"], "customers": ["r"], "order_items": ["d"], "products": ["r"] * changed_products, "addresses": ["d"]}
    for table, ops in expect.items():
        rows = _repairs_in_bronze(settings, client, table)
        assert sorted(rows["op"].to_pylist()) == ops, table
        assert all(f.startswith("repair:") and f.endswith(f":{table}") for f in rows["_dw_landing_file"].to_pylist())
    assert _repairs_in_bronze(settings, client, "payments").num_rows == 0
    # Nothing left to do: a second repair finds silver equal and writes nothing.
    again = repair.repair_client(settings, client, model, rounds=1, settle_seconds=0)
    assert again.passed and again.corrections == 0


@pytest.mark.slow
def test_changes_streamed_after_the_snapshot_win_over_corrections(pipeline, monkeypatch):
    """A writer changes the repaired keys between the repair's snapshot and its apply: the newer changes win, whether
    they are applied before the corrections or in the same batch, and a key deleted meanwhile stays deleted."""
    settings, client, model = pipeline
    ids = sorted(_silver(settings, client, "products").to_pyarrow_table(columns=["product_id"])["product_id"]
                 .to_pylist())[:3]
    early, same_batch, deleted = ids
    _silver(settings, client, "products").update({"unit_price": "0.01"}, predicate=f"product_id IN ({early}, "
                                                                                   f"{same_batch}, {deleted})")
    products = quote_qualified(client, "products")
    real_read = repair.read_corrections

    def writer_during_repair(*args, **kwargs):
        out = real_read(*args, **kwargs)  # the snapshot is taken and read; now the writer strikes
        _sql(settings, f"UPDATE {products} SET unit_price = 111.11 WHERE product_id = %s", (early,))
        _pass(settings, client)  # applied before the corrections
        _sql(settings, f"UPDATE {products} SET unit_price = 222.22 WHERE product_id = %s", (same_batch,))
        _sql(settings, f"DELETE FROM {quote_qualified(client, 'order_items')} WHERE product_id = %s", (deleted,))
        _sql(settings, f"DELETE FROM {products} WHERE product_id = %s", (deleted,))
        _pass(settings, client, apply=False)  # landed: applied together with the corrections
        return out

    monkeypatch.setattr(repair, "read_corrections", writer_during_repair)
    res = repair.repair_client(settings, client, model, tables=["products"], rounds=1, settle_seconds=0,
                               verify=False)
    assert res.tables[0].upserts == 3
    assert_silver_equals_source(settings, client, model)
    prices = dict(zip(*(_silver(settings, client, "products").to_pyarrow_table(columns=["product_id", "unit_price"])
                        [c].to_pylist() for c in ("product_id", "unit_price"))))
    assert str(prices[early]) == "111.11" and str(prices[same_batch]) == "222.22" and deleted not in prices

    # A writer thread on the same keys while a repair runs; the stream (captured afterwards) then catches up.
    monkeypatch.undo()
    _silver(settings, client, "products").update({"unit_price": "0.02"})
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            _sql(settings, f"UPDATE {products} SET unit_price = %s WHERE product_id IN (%s, %s)",
                 (f"{i}.25", early, same_batch))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        res = repair.repair_client(settings, client, model, tables=["products"], rounds=1, settle_seconds=0,
                                   verify=False)
    finally:
        stop.set()
        thread.join()
    assert res.tables[0].upserts >= 1
    _pass(settings, client)
    assert_silver_equals_source(settings, client, model)


@dg.asset(key=["silver", "products"], partitions_def=clients_partitions)
def silver_products_stand_in() -> None:
    """Stands in for the lakehouse's silver asset (the check under test attaches to its key)."""


@pytest.mark.slow
def test_the_dagster_check_repairs_when_configured(pipeline, monkeypatch):
    settings, client, model = pipeline
    _silver(settings, client, "products").update({"unit_price": "0.01"})  # every row wrong
    _use_env(monkeypatch, settings)
    monkeypatch.setenv("DW_RECONCILE_REPAIR", "1")
    monkeypatch.setattr(check_defs, "RECONCILE_ROUNDS", 1)
    check = check_defs._silver_check_defs("products")[0]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(clients_partitions.name, [client])
        run = dg.materialize([silver_products_stand_in, check], partition_key=client, instance=instance,
                             resources={"dw": DwSettings(home=str(settings.home))})
    (ev,) = run.get_asset_check_evaluations()
    rows = _repairs_in_bronze(settings, client, "products").num_rows
    assert ev.passed and ev.metadata["repaired_keys"].value == rows == ev.metadata["found_differing"].value > 0
    assert_silver_equals_source(settings, client, model)
