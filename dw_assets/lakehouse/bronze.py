"""Bronze: every landed change event of a table, appended exactly once per landing file.

Each append commit carries `dw.batch` and `dw.files` in its commit metadata. The manifest is committed after
bronze, so after a crash in between the re-run (same batch number) finds its files in bronze's recent
history and skips them: exactly once without a MERGE on coordinates over the whole table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, write_deltalake

from dw_assets.settings import Settings

from .commit_retry import with_commit_retry
from .paths import open_table, read_table, table_url

HISTORY_LOOKBACK = 50  # commits; maintenance commits in between carry no dw.batch


@dataclass(frozen=True)
class BronzeAppend:
    rows: int
    skipped_files: tuple[str, ...]  # already in bronze from an interrupted run
    version: int | None


def files_in_batch(dt: DeltaTable, batch: int) -> set[str]:
    """Landing files already appended under `batch` (newest commits first, stop at an older batch)."""
    found: set[str] = set()
    for commit in dt.history(HISTORY_LOOKBACK):
        b = commit.get("dw.batch")
        if b is None:
            continue
        if int(b) < batch:
            break
        if int(b) == batch:
            found.update(json.loads(commit.get("dw.files", "[]")))
    return found


def append_bronze(settings: Settings, client: str, table: str, rows: pa.Table, batch: int) -> BronzeAppend:
    """Append the batch's events of one table, minus files an interrupted run already appended."""
    url = table_url(settings, "bronze", client, table)

    def step() -> BronzeAppend:
        dt = open_table(settings, url)
        assert dt is not None, f"bronze table missing: {url}"
        done = files_in_batch(dt, batch)
        todo = rows
        if done:
            todo = rows.filter(pc.invert(pc.is_in(rows["_dw_landing_file"], pa.array(sorted(done), pa.string()))))
        files = sorted(set(todo["_dw_landing_file"].to_pylist())) if todo.num_rows else []
        if not files:
            return BronzeAppend(0, tuple(sorted(done)), None)
        write_deltalake(dt, todo, mode="append", commit_properties=CommitProperties(
            custom_metadata={"dw.batch": str(batch), "dw.files": json.dumps(files)}))
        return BronzeAppend(todo.num_rows, tuple(sorted(done)), dt.version())

    return with_commit_retry(step, f"bronze append {client}.{table}")


def read_bronze_since(settings: Settings, client: str, table: str, after_batch: int,
                      up_to_batch: int | None = None) -> pa.Table:
    """Bronze events of batches after `after_batch` (and up to `up_to_batch`); file statistics on `_dw_batch`
    prune the rest."""
    dt = open_table(settings, table_url(settings, "bronze", client, table))
    assert dt is not None
    where = pads.field("_dw_batch") > after_batch
    if up_to_batch is not None:
        where = where & (pads.field("_dw_batch") <= up_to_batch)
    return read_table(dt, filter=where)

