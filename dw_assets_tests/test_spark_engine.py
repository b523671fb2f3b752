"""DW_ENGINE=spark through the one dispatch every entry point uses: a clear error without a server; on Sail, each
batch reads only the bronze changes not yet applied, a rerun changes nothing, a crash between the silver MERGE and
the progress marker heals on the rerun, and schema evolution and the quarantine behave as on the local engine —
each checked against the local engine applying the same landing files."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from deltalake import DeltaTable

from dw_assets.engine import spark_apply
from dw_assets.engine.dispatch import apply_with_engine
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.paths import read_delta
from dw_assets.lakehouse.quarantine import open_rows
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.model import load_model
from dw_assets.settings import Settings, SettingsError
from dw_assets.stack.process import find_free_port
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.lakehouse_support import KEYS, TINY_MODEL, account, entry, tiny_model
from dw_assets_tests.test_spark_interchange import _rows

NO_SOURCE = StaticSourceSchema({})  # no source database: these tests add no column
MICROS = 1735787045123456  # epoch micros: out of range where the model says DATETIME(3) (read as millis)


def _lakes(tmp_path: Path, remote: str | None) -> tuple[Settings, Settings]:
    """The same landing store applied by the local engine and, into a lake of its own, by Spark."""
    local = Settings(home=tmp_path / "h_local", landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    spark = replace(local, home=tmp_path / "h_spark", lake_url=str(tmp_path / "lake_spark"), engine="spark",
                    spark_remote=remote)
    return local, spark


def _same_silver(local: Settings, spark: Settings, client: str, tables=("accounts", "entries")) -> None:
    for t in tables:
        a, b = read_delta(local, "silver", client, t), read_delta(spark, "silver", client, t)
        assert a.num_rows and _rows(b, a.schema) == _rows(a, a.schema), t
    a, b = read_delta(local, "silver_history", client, "accounts"), read_delta(spark, "silver_history", client,
                                                                               "accounts")
    assert _rows(b, a.schema) == _rows(a, a.schema)


def _apply_both(local: Settings, spark: Settings, client: str, model, source=NO_SOURCE):
    r_local = apply_with_engine(local, client, model, source_schema=source)
    r_spark = apply_with_engine(spark, client, model, source_schema=source)
    assert r_local.ok and r_spark.ok, (r_local.failed, r_spark.failed)
    return r_spark


def test_spark_engine_without_a_server_is_a_one_line_error(tmp_path: Path):
    local, spark = _lakes(tmp_path, None)
    model = tiny_model(tmp_path)
    for remote, says in ((None, "DW_SPARK_REMOTE is not set"), (f"sc://127.0.0.1:{find_free_port()}", "unreachable")):
        with pytest.raises(SettingsError) as e:
            apply_with_engine(replace(spark, spark_remote=remote), "c1", model)
        assert says in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "lake_spark").exists()  # nothing half-written


def test_spark_applies_only_new_changes_reruns_and_recovers_like_the_local_engine(sail, tmp_path: Path,
                                                                                  monkeypatch):
    local, spark = _lakes(tmp_path, sail)
    model, client = tiny_model(tmp_path), unique_client("spk")
    feed = LandingFeed(local, client, KEYS)
    feed.write("accounts", feed.events("accounts", [("c", account(i)) for i in range(1, 6)]))
    feed.write("entries", feed.events("entries", [("c", entry(1, 1)), ("c", entry(2, 1))]))
    r = _apply_both(local, spark, client, model)
    assert r.tables["accounts"].events == 5
    _same_silver(local, spark, client)

    # Batch 2 touches accounts only: Spark reads its 3 changes, not the 8 in bronze; entries is not read at all.
    feed.write("accounts", feed.events("accounts", [("u", account(1, "7.00")), ("d", {"account_id": 2}),
                                                    ("c", account(6))]))
    r = _apply_both(local, spark, client, model)
    assert r.tables["accounts"].events == 3 and r.tables["entries"].events == 0
    _same_silver(local, spark, client)

    # A rerun with nothing new: no table read, no commit.
    versions = {t: DeltaTable(str(tmp_path / "lake_spark" / "silver" / client / t)).version()
                for t in ("accounts", "entries")}
    r = apply_with_engine(spark, client, model, source_schema=NO_SOURCE)
    assert r.ok and all(t.events == 0 for t in r.tables.values())
    assert versions == {t: DeltaTable(str(tmp_path / "lake_spark" / "silver" / client / t)).version()
                        for t in versions}

    # Batch 3 (a late, older update of deleted key 2 and a truncate of entries) dies after the silver MERGE,
    # before the marker: the rerun re-reads the same changes and gives the local engine's silver.
    feed.write("accounts", feed.events("accounts", [("u", account(3, "3.33"))]))
    feed.write("entries", feed.events("entries", [("t", None), ("c", entry(3, 1))]))
    late = feed.event("accounts", "u", '{"account_id": 2}', None, account(2, "9.99"), 150)
    feed.write("accounts", [late], partition=1)
    real = spark_apply._record_progress

    def crash(*args, **kw):
        raise RuntimeError("killed before the marker")

    monkeypatch.setattr(spark_apply, "_record_progress", crash)
    with pytest.raises(RuntimeError, match="killed before the marker"):
        apply_with_engine(spark, client, model, source_schema=NO_SOURCE)
    monkeypatch.setattr(spark_apply, "_record_progress", real)
    assert apply_with_engine(local, client, model, source_schema=NO_SOURCE).ok
    r = apply_with_engine(spark, client, model, source_schema=NO_SOURCE)
    assert r.ok and r.tables["accounts"].events == 2 and r.tables["entries"].events == 2
    _same_silver(local, spark, client)
    silver = read_delta(spark, "silver", client, "accounts")
    assert sorted(silver["account_id"].to_pylist()) == [1, 3, 4, 5, 6]
    assert read_delta(spark, "silver", client, "entries")["account_id"].to_pylist() == [3]


def test_spark_evolves_the_schema_and_quarantines_like_the_local_engine(sail, tmp_path: Path):
    local, spark = _lakes(tmp_path, sail)
    p = tmp_path / "model.yaml"  # opened_at as DATETIME(3): an integer in micros does not convert
    p.write_text(TINY_MODEL.replace("{name: opened_at, type: DATETIME(6)", "{name: opened_at, type: DATETIME(3)"))
    model, client = load_model(p), unique_client("spq")
    columns = {t.name: {c.name: c.data_type for c in t.columns} for t in model.tables}
    source = StaticSourceSchema(columns)
    feed = LandingFeed(local, client, KEYS)
    feed.write("accounts", feed.events("accounts", [("c", account(1)), ("c", account(2, opened_at=MICROS)),
                                                    ("c", account(3))]))
    feed.write("entries", feed.events("entries", [("c", entry(1, 1))]))
    r = _apply_both(local, spark, client, model, source)
    assert (r.tables["accounts"].quarantined, r.tables["accounts"].held) == (1, 0)
    # The later update of the quarantined key is held; the other keys go on.
    feed.write("accounts", feed.events("accounts", [("u", account(2, "2.22")), ("u", account(1, "1.11"))]))
    r = _apply_both(local, spark, client, model, source)
    assert (r.tables["accounts"].quarantined, r.tables["accounts"].held) == (0, 1)
    assert sorted(read_delta(spark, "silver", client, "accounts")["account_id"].to_pylist()) == [1, 3]
    assert sorted(open_rows(spark, client, "accounts")["status"].to_pylist()) == ["failed", "held"]

    # The source gains a nullable column: silver (and history) gain it on both engines.
    source = StaticSourceSchema({**columns, "accounts": {**columns["accounts"], "credit_limit": "DECIMAL(9,3)"}})
    feed.write("accounts", feed.events("accounts", [("c", account(4, credit_limit="12.345")),
                                                    ("u", account(3, "4.00", credit_limit="1.000"))]))
    r = _apply_both(local, spark, client, model, source)
    assert r.tables["accounts"].added_columns == ["credit_limit"]
    silver = read_delta(spark, "silver", client, "accounts")
    assert {row["account_id"]: row["credit_limit"] and str(row["credit_limit"]) for row in silver.to_pylist()} == {
        1: None, 3: "1.000", 4: "12.345"}
    assert "credit_limit" in read_delta(spark, "silver_history", client, "accounts").column_names
    _same_silver(local, spark, client)
