"""The client's bookkeeping as an apply reads it: the manifest is read incrementally within a process (only data
files not read before), yet every committed entry shows, whoever wrote it, across a compaction and a rename, and a
manifest removed and created again is read afresh."""
from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from dw_assets.lakehouse.client_state import ClientState
from dw_assets.lakehouse.paths import meta_url
from dw_assets.lakehouse.tables import MANIFEST, ensure_client_tables, manifest_schema
from dw_assets.settings import Settings
from dw_assets_tests.lakehouse_support import tiny_model

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _entries(first: int, n: int, batch: int, table: str = "accounts") -> list[dict]:
    return [{"file": f"topics/dw.c.{table}/partition=0/dw.c.{table}+0+{i:010d}.parquet", "table": table,
             "topic": f"dw.c.{table}", "partition": 0, "start_offset": i, "rows": 1, "batch": batch}
            for i in range(first, first + n)]


def test_manifest_entries_show_whoever_wrote_them_across_compaction_and_re_creation(tmp_path: Path):
    settings = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    ensure_client_tables(settings, "c", tiny_model(tmp_path))
    url = meta_url(settings, "c", MANIFEST)
    ClientState(settings, "c").record_files(_entries(0, 3, 1), NOW)
    state = ClientState(settings, "c")
    assert state.last_batch == 1 and _entries(0, 1, 1)[0]["file"] in state.processed
    # Another writer (another process: its own table object) appends, then the table is compacted.
    other = [dict(e, applied_at=NOW) for e in _entries(3, 2, 2, "entries")]
    write_deltalake(url, pa.Table.from_pylist(other, schema=manifest_schema()), mode="append")
    DeltaTable(url).optimize.compact()
    write_deltalake(url, pa.Table.from_pylist([dict(e, applied_at=NOW) for e in _entries(5, 1, 3)],
                                              schema=manifest_schema()), mode="append")
    state = ClientState(settings, "c")
    assert state.last_batch == 3 and state.last_batch_of == {"accounts": 3, "entries": 2}
    assert all(e["file"] in state.processed for e in _entries(0, 3, 1) + _entries(3, 2, 2, "entries"))
    # Added by an apply, not committed: not in what the next apply reads.
    state.processed.add("topics/x/partition=0/x+0+0000000099.parquet")
    assert "topics/x/partition=0/x+0+0000000099.parquet" not in ClientState(settings, "c").processed
    # Recovery renamed a file (an overwrite of the manifest): its old name is free for the next incarnation.
    from dw_assets.lakehouse.client_state import rename_landing_files

    old = _entries(0, 1, 1)[0]["file"]
    assert rename_landing_files(settings, "c", {old: "archive/" + old}) == 1
    state = ClientState(settings, "c")
    assert old not in state.processed and "archive/" + old in state.processed and state.last_batch == 3
    # Removed and created again (offboarding, then onboarding again): the old entries are gone.
    shutil.rmtree(url)
    ensure_client_tables(settings, "c", tiny_model(tmp_path))
    ClientState(settings, "c").record_files(_entries(100, 1, 1), NOW)
    state = ClientState(settings, "c")
    assert state.last_batch == 1 and state.last_batch_of == {"accounts": 1}
    assert _entries(1, 1, 1)[0]["file"] not in state.processed
