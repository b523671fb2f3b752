"""kill -9 of an apply process after each of its Delta commits, then a normal apply: silver equals the source,
bronze holds each event once, history has each version once, the manifest each landing file once. And the move
of an older lake's per-table bronze into the client's bronze table, interrupted and resumed."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
from deltalake import write_deltalake

from dw_assets.lakehouse import migration
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.paths import bronze_url, filesystem, meta_url, open_table, read_delta, table_url
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.lakehouse.tables import BRONZE_TABLE, MANIFEST
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.lakehouse_support import KEYS, account, entry, tiny_model

NO_SOURCE = StaticSourceSchema({})

# Runs one apply and SIGKILLs itself right after its N-th Delta commit (appends, MERGEs, deletes alike).
_KILLER = """
import os, signal, sys
from pathlib import Path
import deltalake.table as dtable
from dw_assets.lakehouse import bronze, client_state, quarantine, apply as ap
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.model import load_model
from dw_assets.settings import Settings

home, client, model_path, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
commits = [0]

def counted(f):
    def run(*a, **k):
        out = f(*a, **k)
        commits[0] += 1
        if commits[0] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return run

for mod in (bronze, client_state, quarantine):
    mod.write_deltalake = counted(mod.write_deltalake)
dtable.TableMerger.execute = counted(dtable.TableMerger.execute)
dtable.DeltaTable.delete = counted(dtable.DeltaTable.delete)
s = Settings(home=Path(home), landing_url=home + "/landing", lake_url=home + "/lake")
r = ap.apply_client(s, client, load_model(model_path), source_schema=StaticSourceSchema({}))
print("commits", commits[0], r.ok)
"""


def _settings(home: Path) -> Settings:
    return Settings(home=home, landing_url=str(home / "landing"), lake_url=str(home / "lake"))


def _feed_batches(feed: LandingFeed) -> list[dict]:
    """Batch 1 (applied normally); returns its account events."""
    accounts = feed.events("accounts", [("c", account(i)) for i in range(1, 9)])
    feed.write("accounts", accounts)
    feed.write("entries", feed.events("entries", [("c", entry(1, n)) for n in range(1, 5)]))
    return accounts


def _second_batch(feed: LandingFeed) -> None:
    """The batch the killed process applies: updates, deletes, inserts, a truncate of entries."""
    feed.write("accounts", feed.events("accounts", [("u", account(1, "2.00")), ("d", {"account_id": 2}),
                                                    ("c", account(20, "20.00")), ("u", account(3, "3.00"))]))
    feed.write("entries", feed.events("entries", [("t", None), ("c", entry(2, 1, "5.00")), ("c", entry(2, 2))]))


def _check(settings: Settings, client: str, feed: LandingFeed, changes: dict[str, int]) -> None:
    for table in ("accounts", "entries"):
        silver = read_delta(settings, "silver", client, table).to_pylist()
        keys = KEYS[table]
        got = {tuple(r[k] for k in keys): str(r["balance" if table == "accounts" else "amount"]) for r in silver}
        want = {k: img["balance" if table == "accounts" else "amount"] for (t, k), img in feed.images.items()
                if t == table}
        assert got == want, table
        bronze = read_delta(settings, "bronze", client, table)
        ident = set(zip(*(bronze[c].to_pylist() for c in ("source_pos", "source_row", "op"))))
        assert bronze.num_rows == len(ident) == changes[table], table  # each event once
    history = read_delta(settings, "silver_history", client, "accounts").to_pylist()
    versions = [(r["account_id"], r["_dw_seq"]) for r in history]
    assert len(versions) == len(set(versions)) == changes["accounts_versions"]  # each version once
    current = {r["account_id"]: str(r["balance"]) for r in history if r["is_current"]}
    assert current == {k[0]: img["balance"] for (t, k), img in feed.images.items() if t == "accounts"}
    files = open_table(settings, meta_url(settings, client, MANIFEST)).to_pyarrow_table()["file"].to_pylist()
    assert len(files) == len(set(files)) == changes["files"]


def _apply_second_batch_in_a_subprocess(tmp_path: Path, kill_after: int):
    """A first batch applied here, a second landed, then applied by a subprocess that SIGKILLs itself after commit
    number `kill_after` (0: it runs to the end and prints its commit count)."""
    settings = _settings(tmp_path)
    client = unique_client("kill")
    model = tiny_model(tmp_path)
    feed = LandingFeed(settings, client, KEYS)
    _feed_batches(feed)
    assert apply_client(settings, client, model, source_schema=NO_SOURCE).ok
    _second_batch(feed)
    p = subprocess.run([sys.executable, "-c", _KILLER, str(tmp_path), client, str(tmp_path / "model.yaml"),
                        str(kill_after)], capture_output=True, text=True, timeout=120)
    return settings, client, model, feed, p


@pytest.mark.parametrize("kill_after", range(1, 8))
def test_kill_apply_after_each_commit(tmp_path: Path, kill_after: int):
    settings, client, model, feed, p = _apply_second_batch_in_a_subprocess(tmp_path, kill_after)
    assert p.returncode == -signal.SIGKILL, (p.stdout, p.stderr)
    # More events land while the applier is down; the next apply takes both.
    feed.write("accounts", feed.events("accounts", [("u", account(20, "21.00")), ("c", account(2, "2.50"))]))
    r = apply_client(settings, client, model, source_schema=NO_SOURCE)
    assert r.ok, r.failed
    # 8 + 4 + 2 account events, 4 + 3 entry events; history: 8 creates, 2 updates + 1 create, then 1 + 1.
    _check(settings, client, feed, {"accounts": 14, "entries": 7, "accounts_versions": 13, "files": 5})
    assert apply_client(settings, client, model, source_schema=NO_SOURCE).new_batch is None  # nothing left


def test_every_commit_point_is_covered(tmp_path: Path):
    """The batch above makes 7 commits (bronze, manifest, silver and history of accounts, silver of entries,
    the truncate of entries and its record): the parametrized kill points cover each."""
    *_, p = _apply_second_batch_in_a_subprocess(tmp_path, 0)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:3] == ["commits", "7", "True"], p.stdout


def _to_per_table_bronze(settings: Settings, client: str, tables: list[str]) -> dict[str, int]:
    """Rewrite the lake the way the per-table-bronze code left it: `bronze/<client>/<table>`, no client table."""
    rows = {}
    for t in tables:
        part = read_delta(settings, "bronze", client, t)
        part = part.drop_columns([BRONZE_TABLE])
        write_deltalake(table_url(settings, "bronze", client, t), part, mode="overwrite")
        rows[t] = part.num_rows
    fs, path = filesystem(settings, bronze_url(settings, client))
    fs.delete_dir(path)
    return rows


def test_per_table_bronze_moves_into_the_client_table(tmp_path: Path, monkeypatch):
    settings = _settings(tmp_path)
    client = unique_client("mig")
    model = tiny_model(tmp_path)
    feed = LandingFeed(settings, client, KEYS)
    first = _feed_batches(feed)
    assert apply_client(settings, client, model, source_schema=NO_SOURCE).ok
    rows = _to_per_table_bronze(settings, client, ["accounts", "entries"])
    assert open_table(settings, bronze_url(settings, client)) is None

    # Killed after the first table's copy, before its old table is removed: the next run does not copy it again.
    fs_real = migration.filesystem

    def crash(*a, **k):
        raise RuntimeError("killed")

    migration._done.clear()
    monkeypatch.setattr(migration, "filesystem", crash)
    with pytest.raises(RuntimeError, match="killed"):
        apply_client(settings, client, model, source_schema=NO_SOURCE)
    monkeypatch.setattr(migration, "filesystem", fs_real)
    migration._done.clear()  # a new process
    _second_batch(feed)
    r = apply_client(settings, client, model, source_schema=NO_SOURCE)
    assert r.ok, r.failed
    for t in ("accounts", "entries"):
        assert open_table(settings, table_url(settings, "bronze", client, t)) is None  # moved, old table gone
    bronze = open_table(settings, bronze_url(settings, client)).to_pyarrow_table()
    counts = {d["values"]: d["counts"] for d in pc.value_counts(bronze[BRONZE_TABLE]).to_pylist()}
    assert counts == {"accounts": rows["accounts"] + 4, "entries": rows["entries"] + 3}
    silver = read_delta(settings, "silver", client, "accounts")
    assert {r["account_id"]: str(r["balance"]) for r in silver.to_pylist()} == {
        k[0]: img["balance"] for (t, k), img in feed.images.items() if t == "accounts"}
    # A redelivery of migrated events is recognised as duplicates.
    feed.write("accounts", first, partition=1)
    r = apply_client(settings, client, model, source_schema=NO_SOURCE)
    assert r.ok and r.tables["accounts"].bronze_duplicates == len(first) and r.tables["accounts"].bronze_rows == 0
