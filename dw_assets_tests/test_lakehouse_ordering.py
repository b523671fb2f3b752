"""The lake's change order on real Delta tables: exact int64 statistics (every stats-pruning reader gets every
row), SCD2 history after a redelivery, bronze once per change, and the migration of the old DECIMAL layout."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from dw_assets import cli
from dw_assets.lakehouse import bronze, migration
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.ordering import (SEQ, SEQ_END, SEQ_END_ROW, SEQ_ROW, STREAMED_ROW, ChangeOrder,
                                          CoordinateError, legacy_order, order_columns, order_of)
from dw_assets.lakehouse.paths import bronze_url, open_table, read_delta, table_url
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.lakehouse_support import KEYS, account, tiny_model

NO_SOURCE = StaticSourceSchema({})


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))


def apply(settings: Settings, client: str, model) -> None:
    r = apply_client(settings, client, model, source_schema=NO_SOURCE)
    assert r.ok, r.failed


def history_of(settings: Settings, client: str, key: int) -> list[tuple[str, bool, bool]]:
    h = read_delta(settings, "silver_history", client, "accounts").to_pylist()
    return sorted((str(r["balance"]), r["is_current"], r["valid_to"] is None) for r in h if r["account_id"] == key)


def test_order_of_events():
    """Snapshot rows rank before the streamed change at their position; files and rows order as the binlog."""
    assert order_of("r", "dw-bin.000007", 5000, 3) < order_of("c", "dw-bin.000007", 5000, 0)
    assert order_of("c", "dw-bin.000007", 5000, 1) < order_of("u", "dw-bin.000007", 5100, 0)
    assert order_of("u", "dw-bin.000007", 2**32 - 1, 9) < order_of("c", "dw-bin.000008", 4, 0)
    top = order_of("c", f"dw-bin.{2**31 - 1}", 2**32 - 1, 2**31 - 1)
    assert top.seq < 2**63 and top.row < 2**63  # the largest coordinates still fit int64 exactly
    with pytest.raises(CoordinateError, match="position 4294967296"):
        order_of("c", "dw-bin.000001", 2**32, 0)
    with pytest.raises(CoordinateError, match="file 'dw-bin.2147483648'"):
        order_of("c", "dw-bin.2147483648", 4, 0)
    # The old DECIMAL decomposes into the same pair.
    assert legacy_order(Decimal(7 * 10**24 + 5000 * 10**11 + 10**10 + 3)) == order_of("c", "dw-bin.000007", 5000, 3)
    assert legacy_order(Decimal(7 * 10**24 + 5000 * 10**11 + 3)) == order_of("r", "dw-bin.000007", 5000, 3)
    # The SQL used on landing batches agrees with the Python, and names a row that does not fit.
    land = pa.table({"op": ["c", "r", "d"], "source_file": ["dw-bin.000007", None, "mariadb-bin.000123"],
                     "source_pos": [5000, None, 4], "source_row": pa.array([3, 1, 0], pa.int32()),
                     "kafka_topic": ["t"] * 3, "kafka_partition": [0] * 3, "kafka_offset": [10, 11, 12]})
    seq, row = order_columns(duckdb.connect(), land)
    assert list(zip(seq.to_pylist(), row.to_pylist())) == [
        order_of(*r.values()) for r in land.select(["op", "source_file", "source_pos", "source_row"]).to_pylist()]
    bad = land.set_column(1, "source_file", pa.array(["dw-bin.000007", "dw-bin.x", None]))
    with pytest.raises(CoordinateError, match=r"t\[0\]@11"):
        order_columns(duckdb.connect(), bad)


def test_redelivered_create_after_delete_stays_deleted_in_silver_and_history(local_settings: Settings,
                                                                           tmp_path: Path):
    """c at 5000, d at 5200 (tombstone), then the same c again, each in its own batch: the key stays deleted,
    its one history version stays closed. Other keys' files make the history step's filtered read prune."""
    client = unique_client("ord")
    model = tiny_model(tmp_path)
    feed = LandingFeed(local_settings, client, KEYS, binlog_file=7)
    for i in range(3):  # earlier history files
        feed.write("accounts", feed.events("accounts", [("c", account(100 + 10 * i + j)) for j in range(10)]))
        apply(local_settings, client, model)
    feed.pos = 4900
    created = feed.events("accounts", [("c", account(1, "5.00"))])
    assert created[0]["source_pos"] == 5000
    feed.write("accounts", created)
    apply(local_settings, client, model)
    feed.pos = 5100
    deleted = feed.events("accounts", [("d", {"account_id": 1})])
    feed.write("accounts", deleted)
    apply(local_settings, client, model)
    assert history_of(local_settings, client, 1) == [("5.00", False, False)]
    feed.rotate()
    feed.write("accounts", feed.events("accounts", [("u", account(100, "9.00"))]))  # unrelated, later file
    feed.write("accounts", created)  # the at-least-once redelivery, in a later batch
    apply(local_settings, client, model)

    silver = read_delta(local_settings, "silver", client, "accounts")
    assert 1 not in silver["account_id"].to_pylist()
    assert history_of(local_settings, client, 1) == [("5.00", False, False)]
    bronze = read_delta(local_settings, "bronze", client, "accounts")
    # The tombstone that held the redelivery back is bronze's delete event (no tombstone table any more).
    deletes = bronze.filter(pc.equal(bronze["op"], "d")).select(["key", SEQ, SEQ_ROW]).to_pylist()
    assert deletes == [{"key": '{"account_id": 1}', SEQ: 7 * 2**32 + 5200, SEQ_ROW: STREAMED_ROW}]
    assert pc.sum(pc.equal(bronze["source_pos"], 5000)).as_py() == 1  # the redelivery is not in bronze again


def _parquet_rows(dt) -> pa.Table:
    """The table's live rows straight from its Parquet files (no Delta statistics involved)."""
    return pa.concat_tables([pq.read_table(u) for u in dt.file_uris()])


def test_filter_on_order_columns_returns_every_row(local_settings: Settings, tmp_path: Path):
    """`_dw_seq > x` over many files across binlog files 7-9: Polars scan_delta, DuckDB over the Arrow dataset
    and a pyarrow dataset filter return what a plain Parquet read returns, on silver and bronze."""
    client = unique_client("ord")
    model = tiny_model(tmp_path)
    feed = LandingFeed(local_settings, client, KEYS, binlog_file=7)
    key = 0
    for _ in range(3):
        for _ in range(3):
            feed.write("accounts", feed.events("accounts", [("c", account(key + j)) for j in range(5)]))
            key += 5
            apply(local_settings, client, model)
        feed.rotate()
    for url in (table_url(local_settings, "silver", client, "accounts"), bronze_url(local_settings, client)):
        dt = open_table(local_settings, url)
        plain = _parquet_rows(dt)
        assert len(dt.file_uris()) > 3 and plain.num_rows == key
        seqs = sorted(plain[SEQ].to_pylist())
        assert seqs[0] >> 32 == 7 and seqs[-1] >> 32 == 9
        for x in (seqs[0] - 1, seqs[len(seqs) // 2], seqs[-2]):
            want = sorted(pc.filter(plain[SEQ], pc.greater(plain[SEQ], x)).to_pylist())
            assert want, "the filter must select something"
            polars = pl.scan_delta(url).filter(pl.col(SEQ) > x).select(SEQ).collect()[SEQ].to_list()
            con = duckdb.connect()
            con.register("t", dt.to_pyarrow_dataset())
            duck = [r[0] for r in con.execute(f"SELECT {SEQ} FROM t WHERE {SEQ} > ?", [x]).fetchall()]
            arrow = dt.to_pyarrow_dataset().to_table(columns=[SEQ], filter=pads.field(SEQ) > x)[SEQ].to_pylist()
            assert sorted(polars) == sorted(duck) == sorted(arrow) == want, (url, x)


def test_repeated_delivery_leaves_bronze_one_row(local_settings: Settings, tmp_path: Path):
    """The same event twice in one batch (two files) and again in a later batch: one bronze row, one change in
    silver's change data feed, one history version. Snapshot chunks at one position numbering their rows from 0
    again are all kept; a TRUNCATE sent on every partition is kept once."""
    client = unique_client("ord")
    model = tiny_model(tmp_path)
    feed = LandingFeed(local_settings, client, KEYS, binlog_file=3)
    feed.pos = 900
    snap_pos = feed.pos + 100
    # Two snapshot chunks taken at the same binlog position: rows 0-2 each, different keys.
    chunks = [[feed.event("accounts", "r", f'{{"account_id": {k}}}', None, account(k), snap_pos, row=i)
               for i, k in enumerate(keys)] for keys in ((1, 2, 3), (4, 5, 6))]
    feed.write("accounts", chunks[0])
    feed.write("accounts", chunks[1])
    feed.pos = snap_pos
    ev = feed.events("accounts", [("c", account(7, "7.00"))])
    feed.write("accounts", ev)
    feed.write("accounts", ev, partition=1)  # the same event again in the same batch
    r = apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    assert r.ok and r.tables["accounts"].bronze_duplicates == 1
    silver_url = table_url(local_settings, "silver", client, "accounts")
    v = open_table(local_settings, silver_url).version()
    feed.write("accounts", ev)  # and again in a later batch, next to a new change
    feed.write("accounts", feed.events("accounts", [("u", account(2, "2.00"))]))
    r = apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    assert r.ok and r.tables["accounts"].bronze_duplicates == 1 and r.tables["accounts"].bronze_rows == 1
    trunc = feed.events("accounts", [("t", None)])
    for p in range(3):
        feed.write("accounts", trunc, partition=p)
    feed.write("accounts", feed.events("accounts", [("c", account(8))]))
    apply(local_settings, client, model)

    bronze = read_delta(local_settings, "bronze", client, "accounts")
    ops = pc.value_counts(bronze["op"]).to_pylist()
    assert {d["values"]: d["counts"] for d in ops} == {"r": 6, "c": 2, "u": 1, "t": 1}
    assert sorted(read_delta(local_settings, "silver", client, "accounts")["account_id"].to_pylist()) == [8]
    cdf = pa.table(open_table(local_settings, silver_url).load_cdf(starting_version=v + 1).read_all())
    assert list(zip(cdf["account_id"].to_pylist(), cdf["_change_type"].to_pylist())).count((7, "insert")) == 0
    assert history_of(local_settings, client, 7) == [("7.00", False, False)]  # ended by the truncate


def test_bronze_marks_follow_bronze_and_a_lake_without_them_still_drops_redeliveries(
        local_settings: Settings, tmp_path: Path, monkeypatch):
    """Each table's highest `_dw_seq` rides in bronze's commits (so in-order batches read nothing back); a lake
    written before the marks gets them from what it holds, and a redelivery or a late older change there and
    afterwards is still judged against bronze: one row per change, the delete holds the late create back."""
    client = unique_client("mk")
    model = tiny_model(tmp_path)
    feed = LandingFeed(local_settings, client, KEYS, binlog_file=4)

    def truth() -> dict[str, int]:
        b = read_delta(local_settings, "bronze", client, "accounts")
        return {"accounts": pc.max(b[SEQ]).as_py()}

    def marks() -> dict[str, int | None]:
        return bronze.seq_marks(open_table(local_settings, bronze_url(local_settings, client)), ["accounts"])

    first = feed.events("accounts", [("c", account(i)) for i in range(1, 4)] + [("d", {"account_id": 3})])
    with monkeypatch.context() as m:  # the previous release: no marks in bronze's commits
        m.setattr(bronze, "_advanced_marks", lambda *a: [])
        feed.write("accounts", first)
        apply(local_settings, client, model)
    assert marks() == {"accounts": None}
    late = feed.events("accounts", [("u", account(1, "1.50"))])
    feed.write("accounts", first, partition=1)  # redelivered into an unmarked bronze, next to a new change
    feed.write("accounts", late)
    r = apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    assert r.ok and r.tables["accounts"].bronze_duplicates == len(first)
    assert marks() == truth()
    feed.write("accounts", feed.events("accounts", [("c", account(4))]))  # in order, after the mark
    apply(local_settings, client, model)
    assert marks() == truth()
    feed.write("accounts", first + late, partition=2)  # once more, now that the mark is there
    r = apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    assert r.ok and r.tables["accounts"].bronze_rows == 0 and r.tables["accounts"].bronze_duplicates == 5
    assert marks() == truth()
    assert read_delta(local_settings, "bronze", client, "accounts").num_rows == len(first) + 2
    silver = {x["account_id"]: str(x["balance"]) for x in read_delta(local_settings, "silver", client,
                                                                         "accounts").to_pylist()}
    assert silver == {1: "1.50", 2: "1.10", 4: "1.10"}  # 3 stays deleted: its tombstone holds the create back


# ---- migration of the old layout ---------------------------------------------------------------------------
def _to_legacy(seq: int | None, row: int | None) -> Decimal | None:
    """The old DECIMAL(38,0) encoding: file * 10^24 + position * 10^11 + (r ? 0 : 1) * 10^10 + row."""
    if seq is None:
        return None
    return Decimal((seq >> 32) * 10**24 + (seq & 0xFFFFFFFF) * 10**11 + (row >> 40) * 10**10 + (row & (2**40 - 1)))


def write_old_layout(settings: Settings, url: str) -> None:
    """Rewrite a table the way the DECIMAL-`_dw_seq` code wrote it: one DECIMAL(38,0) per ordering value."""
    dt = open_table(settings, url)
    t = dt.to_pyarrow_table()
    fields, cols = [], []
    for f in t.schema:
        if f.name in (SEQ_ROW, SEQ_END_ROW):
            continue
        if f.name in (SEQ, SEQ_END):
            row = SEQ_ROW if f.name == SEQ else SEQ_END_ROW
            fields.append(pa.field(f.name, pa.decimal128(38, 0), nullable=f.nullable))
            cols.append(pa.array([_to_legacy(s, r) for s, r in zip(t[f.name].to_pylist(), t[row].to_pylist())],
                                 pa.decimal128(38, 0)))
        else:
            fields.append(f)
            cols.append(t[f.name])
    write_deltalake(dt, pa.Table.from_arrays(cols, schema=pa.schema(fields)), mode="overwrite",
                    schema_mode="overwrite")


def _contents(settings: Settings, url: str) -> list[tuple]:
    t = open_table(settings, url).to_pyarrow_table()
    return sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in t.to_pylist())


def test_migration_of_old_layout_keeps_rows_and_history(local_settings: Settings, tmp_path: Path, monkeypatch,
                                                         capsys):
    client = unique_client("ord")
    model = tiny_model(tmp_path)
    feed = LandingFeed(local_settings, client, KEYS, binlog_file=7)
    snapshot = feed.events("accounts", [("r", account(i)) for i in range(1, 6)])
    feed.write("accounts", snapshot)
    apply(local_settings, client, model)
    feed.write("accounts", feed.events("accounts", [("u", account(1, "1.50")), ("d", {"account_id": 2})]))
    feed.rotate()
    feed.write("accounts", feed.events("accounts", [("u", account(1, "1.75")), ("t", None), ("c", account(9))]))
    apply(local_settings, client, model)
    urls = [u for u in migration.client_table_urls(local_settings, client, model) if open_table(local_settings, u)]
    before = {u: _contents(local_settings, u) for u in urls}
    for u in urls:
        write_old_layout(local_settings, u)
    assert all(migration.needs_migration(open_table(local_settings, u).to_pyarrow_dataset().schema) for u in urls)
    old_version = open_table(local_settings, urls[1]).version()

    # Interrupted half-way: some tables new, the rest (and the marker) old; the next apply resumes.
    real, calls = migration.migrate_table, []

    def crash_after_three(settings, url):
        if len(calls) == 3:
            raise RuntimeError("killed")
        calls.append(url)
        return real(settings, url)

    migration._done.clear()
    monkeypatch.setattr(migration, "migrate_table", crash_after_three)
    with pytest.raises(RuntimeError, match="killed"):
        apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    monkeypatch.setattr(migration, "migrate_table", real)
    old = [migration.needs_migration(open_table(local_settings, u).to_pyarrow_dataset().schema) for u in urls]
    assert 0 < old.count(False) < len(urls) and old[-1]  # half done, the marker (truncations) still old
    migration._done.clear()  # a new process
    apply(local_settings, client, model)
    for u in urls:
        assert _contents(local_settings, u) == before[u], u
        assert not migration.needs_migration(open_table(local_settings, u).to_pyarrow_dataset().schema)
    # `dw lake migrate` checks every table: nothing left to do.
    monkeypatch.setenv("DW_LAKE_URL", local_settings.lake_url)
    assert cli.main(["--home", str(tmp_path), "lake", "migrate", "--client", client,
                     "--model", str(tmp_path / "model.yaml")]) == 0
    assert f"{client}: 0 table(s) migrated" in capsys.readouterr().out
    silver = open_table(local_settings, table_url(local_settings, "silver", client, "accounts"))
    assert silver.metadata().configuration["delta.enableChangeDataFeed"] == "true"
    assert open_table(local_settings, urls[1], version=old_version).to_pyarrow_table().num_rows > 0  # time travel

    # The migrated lake goes on: a redelivered old event changes nothing, new changes extend the history.
    feed.write("accounts", snapshot)
    feed.write("accounts", feed.events("accounts", [("u", account(9, "9.50")), ("c", account(2, "2.00"))]))
    r = apply_client(local_settings, client, model, source_schema=NO_SOURCE)
    assert r.ok and r.tables["accounts"].bronze_duplicates == len(snapshot)
    assert history_of(local_settings, client, 9) == [("1.10", False, False), ("9.50", True, True)]
    assert history_of(local_settings, client, 1) == [("1.10", False, False), ("1.50", False, False),
                                                     ("1.75", False, False)]
    assert sorted(read_delta(local_settings, "silver", client, "accounts")["account_id"].to_pylist()) == [2, 9]
