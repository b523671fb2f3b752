"""The apply step on real Delta tables, local and on S3 (moto): exact final state under inserts, updates,
deletes, a truncate, duplicate files and out-of-order batches; bronze exactly once, also after a crash."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from dw_assets.lakehouse import client_state
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.paths import bronze_url, open_table, read_delta, storage_options, table_url
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.lakehouse_support import KEYS, account, entry, tiny_model

NO_SOURCE = StaticSourceSchema({})  # no source database: unknown columns are refused, nothing to evolve


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))


def silver_state(settings: Settings, client: str, table: str = "accounts") -> dict[int, tuple[str, str]]:
    t = read_delta(settings, "silver", client, table)
    return {r["account_id"]: (r["displayName"], str(r["balance"])) for r in t.to_pylist()}


def expected_state(feed: LandingFeed, table: str = "accounts") -> dict[int, tuple[str, str]]:
    """The feed's last image per key is the source's final state."""
    return {k[0]: (img["displayName"], img["balance"]) for (t, k), img in feed.images.items() if t == table}


def scenario(settings: Settings, tmp_path: Path) -> None:
    client = unique_client("lk")
    model = tiny_model(tmp_path)
    feed = LandingFeed(settings, client, KEYS)
    # Generated in binlog order A < B < C < D; written to the landing zone out of order.
    a = feed.events("accounts", [("c", account(i)) for i in range(1, 11)])
    b = feed.events("accounts", [("u", account(i, f"{i}.50")) for i in range(1, 6)] + [("d", {"account_id": 6}),
                                                                                         ("d", {"account_id": 7})])
    c = feed.events("accounts", [("t", None), ("c", account(100)), ("c", account(101))])
    d = feed.events("accounts", [("u", account(100, "100.01", displayName="renamed")), ("d", {"account_id": 101}),
                                 ("c", account(102, "7.00"))])

    def apply() -> None:
        r = apply_client(settings, client, model, source_schema=NO_SOURCE)
        assert r.ok, r.failed

    feed.write("accounts", b)
    apply()  # newer batch first: updates of keys silver never saw are upserts; deletes become tombstones
    assert silver_state(settings, client) == {i: (f"name {i}", f"{i}.50") for i in range(1, 6)}
    feed.write("accounts", a)
    apply()  # older batch: 1-5 are stale, 6-7 are held off by tombstones, 8-10 are new
    after_ab = {i: (f"name {i}", f"{i}.50") for i in range(1, 6)} | {i: (f"name {i}", "1.10") for i in range(8, 11)}
    assert silver_state(settings, client) == after_ab
    feed.write("accounts", a, partition=1)  # the same events again in another file (at-least-once delivery)
    apply()
    assert silver_state(settings, client) == after_ab
    apply()  # nothing new: a no-op
    feed.write("accounts", d)
    feed.write("accounts", c)  # the truncate arrives after the newer batch D
    apply()
    assert silver_state(settings, client) == expected_state(feed) == {
        100: ("renamed", "100.01"), 102: ("name 102", "7.00")}

    changes = len(a) + len(b) + len(c) + len(d)  # `a` was delivered twice: bronze holds each change once
    bronze = read_delta(settings, "bronze", client, "accounts")
    coords = {(r["source_file"], r["source_pos"], r["source_row"], r["op"])
              for r in bronze.select(["source_file", "source_pos", "source_row", "op"]).to_pylist()}
    assert bronze.num_rows == len(coords) == changes


def test_apply_final_state_local(local_settings: Settings, tmp_path: Path):
    scenario(local_settings, tmp_path)


def test_apply_final_state_s3(s3_settings: Settings, tmp_path: Path):
    scenario(s3_settings, tmp_path)


def test_typed_silver_columns_and_readers(local_settings: Settings, tmp_path: Path):
    client = unique_client("lk")
    model = tiny_model(tmp_path)
    feed = LandingFeed(local_settings, client, KEYS)
    feed.write("accounts", feed.events("accounts", [("c", account(1, "12345678.91")), ("c", account(2))]))
    feed.write("entries", feed.events("entries", [("c", entry(1, 1)), ("c", entry(1, 2, "0.01"))]))
    assert apply_client(local_settings, client, model, source_schema=NO_SOURCE).ok
    v1 = open_table(local_settings, table_url(local_settings, "silver", client, "accounts")).version()
    feed.write("accounts", feed.events("accounts", [("u", account(1, "0.00", active=0)), ("d", {"account_id": 2})]))
    assert apply_client(local_settings, client, model, source_schema=NO_SOURCE).ok

    silver = read_delta(local_settings, "silver", client, "accounts")
    types = {f.name: f.type for f in silver.schema}
    assert types["balance"] == pa.decimal128(14, 2)
    assert types["opened_at"] == pa.timestamp("us")
    assert types["updated_at"] == pa.timestamp("us", tz="UTC")
    assert types["birthday"] == pa.date32()
    assert types["active"] == pa.bool_() and types["avatar"] == pa.binary() and types["attrs"] == pa.string()
    # NOT NULL kept for typed columns; strings and binaries are nullable so Spark reads MERGE's files (interchange.py).
    assert not silver.schema.field("balance").nullable and silver.schema.field("displayName").nullable
    (row,) = silver.to_pylist()
    assert row["balance"] == Decimal("0.00") and row["active"] is False and row["avatar"] == b"hello"
    assert row["opened_at"].microsecond == 123456 and row["updated_at"].microsecond == 654321
    assert row["attrs"] == '{"a": [1, 2]}'

    url = table_url(local_settings, "silver", client, "accounts")
    # Polars reads Delta directly; DuckDB through the pyarrow dataset (its delta extension is not installable).
    assert pl.scan_delta(url).select(pl.len()).collect().item() == 1
    # Bronze is one table per client, partitioned by table.
    bronze = pl.scan_delta(bronze_url(local_settings, client))
    assert bronze.filter(pl.col("_dw_table") == "accounts").collect().height == 4
    ds = open_table(local_settings, url).to_pyarrow_dataset()
    con = duckdb.connect()
    con.register("silver", ds)
    assert con.execute("SELECT sum(balance) FROM silver").fetchall() == [(Decimal("0.00"),)]
    # Time travel: the version before the second apply still has both rows.
    old = read_delta(local_settings, "silver", client, "accounts", version=v1)
    assert sorted(old["account_id"].to_pylist()) == [1, 2]
    entries = read_delta(local_settings, "silver", client, "entries")
    assert sorted(entries["amount"].to_pylist()) == [Decimal("0.01"), Decimal("9.99")]
    # Change data feed is on (model option) and records the delete.
    cdf = open_table(local_settings, url).load_cdf(starting_version=v1 + 1).read_all()
    assert "delete" in pa.table(cdf)["_change_type"].to_pylist()
    # The model's column-mapping option is recorded, not enabled (local engines would read NULLs).
    conf = open_table(local_settings, url).metadata().configuration
    assert conf["dw.columnMapping.mode"] == "name" and "delta.columnMapping.mode" not in conf


def test_history_scd2_versions(local_settings: Settings, tmp_path: Path):
    client = unique_client("lk")
    model = tiny_model(tmp_path)
    feed = LandingFeed(local_settings, client, KEYS)
    first = feed.events("accounts", [("c", account(1)), ("c", account(2))])
    second = feed.events("accounts", [("u", account(1, "2.00")), ("d", {"account_id": 2})])
    third = feed.events("accounts", [("c", account(2, "3.00")), ("t", None), ("c", account(3))])
    for batch in (second, first, third):  # out of order, then a re-insert and a truncate
        feed.write("accounts", batch)
        assert apply_client(local_settings, client, model, source_schema=NO_SOURCE).ok
    h = read_delta(local_settings, "silver_history", client, "accounts").to_pylist()
    versions = sorted(((r["account_id"], str(r["balance"]), r["is_current"], r["valid_to"] is None) for r in h))
    assert versions == [(1, "1.10", False, False), (1, "2.00", False, False),  # ended by the truncate
                        (2, "1.10", False, False), (2, "3.00", False, False),
                        (3, "1.10", True, True)]
    assert silver_state(local_settings, client) == {3: ("name 3", "1.10")}


def test_crash_between_bronze_and_manifest_appends_once(local_settings: Settings, tmp_path: Path, monkeypatch):
    client = unique_client("lk")
    model = tiny_model(tmp_path)
    feed = LandingFeed(local_settings, client, KEYS)
    feed.write("accounts", feed.events("accounts", [("c", account(i)) for i in range(5)]))
    real = client_state.ClientState.record_files

    def crash(*a, **kw):
        raise RuntimeError("killed")

    monkeypatch.setattr(client_state.ClientState, "record_files", crash)
    with pytest.raises(RuntimeError):
        apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    monkeypatch.setattr(client_state.ClientState, "record_files", real)
    r = apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    assert r.ok and r.tables["accounts"].bronze_rows == 0  # found in bronze's commit metadata, not re-appended
    assert read_delta(local_settings, "bronze", client, "accounts").num_rows == 5
    assert len(silver_state(local_settings, client)) == 5


def test_delete_of_unknown_key_in_cdf_table_with_not_null_columns(local_settings: Settings, tmp_path: Path):
    client = unique_client("lk")
    model = tiny_model(tmp_path)
    feed = LandingFeed(local_settings, client, KEYS)
    feed.write("accounts", feed.events("accounts", [("c", account(1))]))
    assert apply_client(local_settings, client, model, source_schema=NO_SOURCE).ok
    # Keys 50-52 were never in silver; their deletes must not reach the MERGE (and must not fail it).
    feed.write("accounts", feed.events("accounts", [("d", account(k)) for k in (50, 51, 52)] + [("u", account(1, "5.00"))]))
    r = apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    assert r.ok, r.failed
    assert r.tables["accounts"].silver.updated == 1 and r.tables["accounts"].silver.deleted == 0
    assert silver_state(local_settings, client) == {1: ("name 1", "5.00")}


def test_init_is_idempotent_and_writes_model_meta(local_settings: Settings, tmp_path: Path):
    from dw_assets.lakehouse.tables import ensure_client_tables

    model = tiny_model(tmp_path)
    client = unique_client("lk")
    created = ensure_client_tables(local_settings, client, model)
    assert any(u.endswith(f"silver_history/{client}/accounts") for u in created)
    assert not any(u.endswith(f"silver_history/{client}/entries") for u in created)  # scd2 off
    assert ensure_client_tables(local_settings, client, model) == []
    meta = open_table(local_settings, str(Path(local_settings.lake_url) / "meta" / "standard_model"))
    assert meta.to_pyarrow_table().num_rows == sum(len(t.columns) for t in model.tables)
    assert storage_options(local_settings, local_settings.lake_url) is None


def test_silver_behind_bronze_catches_up(local_settings: Settings, tmp_path: Path, monkeypatch):
    """A crash after bronze + manifest but before silver: the next run merges the missed batch from bronze."""
    from dw_assets.lakehouse import apply as apply_mod

    client = unique_client("lk")
    model = tiny_model(tmp_path)
    feed = LandingFeed(local_settings, client, KEYS)
    feed.write("accounts", feed.events("accounts", [("c", account(i)) for i in range(3)]))
    real = apply_mod.merge_silver
    monkeypatch.setattr(apply_mod, "merge_silver", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    monkeypatch.setattr(apply_mod, "merge_silver", real)
    feed.write("accounts", feed.events("accounts", [("u", account(0, "9.00")), ("c", account(7))]))
    r = apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    assert r.ok and r.batch == 2 and r.tables["accounts"].events == 5  # batch 1 from bronze + batch 2
    assert silver_state(local_settings, client) == expected_state(feed)
    assert read_delta(local_settings, "bronze", client, "accounts").num_rows == 5


def test_a_process_keeps_tables_open_and_reads_a_recreated_client_afresh(local_settings: Settings, tmp_path: Path):
    """An ingest worker keeps each client's tables open between batches (`table_cache`). When the client's lake
    is dropped and created again under it (offboarding with purge, then onboarding again), the next batches
    read the new tables, not the old ones' state: silver equals the new source, history holds only its rows."""
    from dw_assets.onboarding.client_data import drop_data

    client = unique_client("lk")
    model = tiny_model(tmp_path)

    def apply() -> None:
        r = apply_client(local_settings, client, model, source_schema=NO_SOURCE)
        assert r.ok, r.failed

    old = LandingFeed(local_settings, client, KEYS)
    old.write("accounts", old.events("accounts", [("c", account(i, "5.00")) for i in range(1, 21)]))
    apply()
    old.write("accounts", old.events("accounts", [("u", account(i, "6.00")) for i in range(1, 11)]))
    apply()  # silver and history at version 2, kept open by this process
    drop_data(local_settings, client, client)

    new = LandingFeed(local_settings, client, KEYS)
    for step in range(4):  # the new tables pass the old ones' versions
        new.write("accounts", new.events("accounts", [("c", account(100 + step, f"{step}.25"))]), partition=step % 3)
        apply()
    assert silver_state(local_settings, client) == expected_state(new) == {
        100 + s: (f"name {100 + s}", f"{s}.25") for s in range(4)}
    history = read_delta(local_settings, "silver_history", client, "accounts")
    assert sorted(history["account_id"].to_pylist()) == [100, 101, 102, 103]
