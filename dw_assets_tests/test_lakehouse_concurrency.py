"""Concurrent writers on one Delta table: CommitFailedError is retried with bounded backoff; maintenance
keeps files per table bounded while appliers run."""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake.exceptions import CommitFailedError

from dw_assets.lakehouse import changes
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.commit_retry import CommitRetriesExhausted, with_commit_retry
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.maintenance import lake_clients, maintain_lake
from dw_assets.lakehouse.paths import bronze_url, open_table, read_delta, table_url
from dw_assets.lakehouse.silver import merge_silver
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.lakehouse.tables import data_fields as data_fields_of, ensure_client_tables
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.lakehouse_support import KEYS, account, tiny_model


def test_retry_is_bounded():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise CommitFailedError("Transaction failed: conflict")
        return "ok"

    assert with_commit_retry(flaky, "test") == "ok" and len(calls) == 3
    with pytest.raises(CommitRetriesExhausted):
        with_commit_retry(lambda: (_ for _ in ()).throw(CommitFailedError("always")), "test", attempts=3)


def test_two_appliers_on_one_table(tmp_path: Path, caplog):
    """Two writers MERGE overlapping batches into the same silver table at once: both land, newest wins."""
    settings = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    model = tiny_model(tmp_path)
    client = unique_client("lkcc")
    ensure_client_tables(settings, client, model)
    feed = LandingFeed(settings, client, KEYS)
    columns = list(model.table("accounts").column_names)
    data_fields = data_fields_of(model.table("accounts"))
    rounds = 6
    batches = [feed.events("accounts", [("u", account(k, f"{r}.{w}")) for k in range(20)])
               for r in range(rounds) for w in range(2)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(w: int) -> None:
        con = changes.connect()
        try:
            for r in range(rounds):
                events = pa.Table.from_pylist(batches[2 * r + w])
                rows = changes.bronze_rows(con, events.append_column("_dw_landing_file", pa.array(["x"] * len(events))),
                                           1, datetime.now(timezone.utc))
                typed = changes.typed_events(con, rows, data_fields)
                barrier.wait()
                merge_silver(settings, client, "accounts", ["account_id"], typed, columns, con, datetime.now(timezone.utc))
        except BaseException as e:  # surfaced below
            errors.append(e)
            barrier.abort()
        finally:
            con.close()

    caplog.set_level("INFO", logger="dw_assets.lakehouse.commit_retry")
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    silver = read_delta(settings, "silver", client, "accounts")
    # The last batch in binlog order (round 5, writer 1) wins for every key, whichever commit came last.
    assert silver.num_rows == 20 and set(map(str, silver["balance"].to_pylist())) == {f"{rounds - 1}.10"}
    assert any("concurrent commit" in r.message for r in caplog.records), "no commit race happened"


def test_maintenance_bounds_files(tmp_path: Path):
    settings = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    model = tiny_model(tmp_path)
    client = unique_client("lkmt")
    feed = LandingFeed(settings, client, KEYS)
    for i in range(12):
        feed.write("accounts", feed.events("accounts", [("c", account(i)), ("u", account(i // 2, f"{i}.00"))]))
        assert apply_client(settings, client, model, source_schema=StaticSourceSchema({})).ok
    url = table_url(settings, "silver", client, "accounts")
    bronze = bronze_url(settings, client)
    before = len(open_table(settings, bronze).file_uris())  # one small file per append
    assert lake_clients(settings) == [client]
    (res,) = maintain_lake(settings, model=model, retention_hours=0, z_order_by_key=True)
    assert before == 12 and len(open_table(settings, url).file_uris()) == 1
    compacted = open_table(settings, bronze)
    assert len(compacted.file_uris()) == 1 and compacted.to_pyarrow_table().num_rows == 24
    state = {r["account_id"]: str(r["balance"]) for r in read_delta(settings, "silver", client, "accounts").to_pylist()}
    assert len(state) == 12
    # Vacuum with 0 h retention removed the compacted-away files from storage.
    assert sum(t.files_vacuumed for t in res.tables) > 0


def test_light_compaction_keeps_files_bounded_under_continuous_applies(tmp_path: Path):
    """16 applies (one bronze file each) with the quarter-hourly light pass: bronze is compacted once it reaches
    the threshold, nothing is lost, and silver still equals the replayed source state."""
    from dw_assets.lakehouse.files_bench import run_files_bench
    from dw_assets.lakehouse.maintenance import COMPACT_FROM_FILES

    settings = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    r = run_files_bench(settings, minutes=16, rate=5, interval_s=60, base_rows=200)
    assert r["applies"] == 16 and r["compactions"] == 1
    assert r["bronze_files_written"] >= COMPACT_FROM_FILES + 1  # one per apply plus the snapshot's
    assert r["final_live_files"]["bronze"] <= 2 < r["bronze_files_written"]
    assert r["final_live_files"]["manifest"] <= 2
    assert r["bronze_rows"] == 200 + r["changes"]  # compaction rewrote files, every event is still there once
    assert r["silver_rows"] == r["expected_silver_rows"]
