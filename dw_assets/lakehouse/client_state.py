"""A client's bookkeeping in small Delta tables under `<lake>/meta/<client>/`.

`landing_manifest`: landing files appended to bronze (one row per file, with its batch number);
`truncations`: the position of each table's last TRUNCATE (older late events must not come back).
The last batch each silver (and history) table applied is an application transaction in that table's own
commits (`silver.SILVER_APP`); `silver_progress`, where an older lake has it, is still read as a floor.
"""
from __future__ import annotations

import threading
from datetime import datetime
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from dw_assets.settings import Settings

from .commit_retry import with_commit_retry
from .landing_files import LandingFile
from .ordering import SEQ, SEQ_ROW, ChangeOrder
from .paths import meta_url, open_table, read_table
from .tables import MANIFEST, PROGRESS, TRUNCATIONS, manifest_schema, truncations_schema


def _read(settings: Settings, client: str, name: str, required: bool = True) -> pa.Table | None:
    dt = open_table(settings, meta_url(settings, client, name))
    if dt is None:
        if not required:
            return None
        raise FileNotFoundError(f"{name} of client {client!r} is missing: run `dw lake init --client {client}`")
    return read_table(dt)


def _append(settings: Settings, client: str, name: str, rows: pa.Table) -> None:
    url = meta_url(settings, client, name)
    # Blind appends never conflict in delta-rs, but a concurrent metadata change (maintenance) could.
    with_commit_retry(lambda: write_deltalake(open_table(settings, url), rows, mode="append"),
                      f"{name} append {client}")


def manifest_entry(f: LandingFile, rows: int, batch: int) -> dict:
    """One manifest row (without `applied_at`), as bronze's sealing commit records it too."""
    return {"file": f.key, "table": f.table, "topic": f.topic, "partition": f.partition,
            "start_offset": f.start_offset, "rows": rows, "batch": batch}


class ClientState:
    """The bookkeeping of one client, read once per apply."""

    def __init__(self, settings: Settings, client: str):
        self.settings, self.client = settings, client
        self._lock = threading.Lock()  # tables record truncations from parallel threads
        manifest = _read(settings, client, MANIFEST).select(["file", "table", "batch"])
        self.processed: set[str] = set(manifest["file"].to_pylist())
        self.last_batch: int = (pc.max(manifest["batch"]).as_py() or 0) if manifest.num_rows else 0
        # The last batch that brought files of each table: a table whose progress is below it is behind.
        self.last_batch_of: dict[str, int] = {}
        for t, b in zip(manifest["table"].to_pylist(), manifest["batch"].to_pylist()):
            self.last_batch_of[t] = max(b, self.last_batch_of.get(t, 0))
        progress = _read(settings, client, PROGRESS, required=False)  # lakes before progress in silver commits
        self.applied: dict[str, int] = {}
        for t, b in (zip(progress["table"].to_pylist(), progress["batch"].to_pylist()) if progress else ()):
            self.applied[t] = max(b, self.applied.get(t, 0))
        trunc = _read(settings, client, TRUNCATIONS)
        self.truncated: dict[str, ChangeOrder] = {}
        for t, s, r in zip(trunc["table"].to_pylist(), trunc[SEQ].to_pylist(), trunc[SEQ_ROW].to_pylist()):
            o = ChangeOrder(s, r)
            self.truncated[t] = max(o, self.truncated.get(t, o))

    def record_files(self, entries: Iterable[dict], now: datetime) -> None:
        """Append manifest rows: dicts of `manifest_entry` (with their batch), in one commit."""
        rows = [dict(e, applied_at=now) for e in entries]
        if not rows:
            return
        _append(self.settings, self.client, MANIFEST, pa.Table.from_pylist(rows, schema=manifest_schema()))
        for e in rows:
            self.processed.add(e["file"])
            self.last_batch = max(self.last_batch, e["batch"])
            self.last_batch_of[e["table"]] = max(e["batch"], self.last_batch_of.get(e["table"], 0))

    def record_truncation(self, table: str, at: ChangeOrder, now: datetime) -> None:
        with self._lock:
            self._record_truncation(table, at, now)

    def _record_truncation(self, table: str, at: ChangeOrder, now: datetime) -> None:
        _append(self.settings, self.client, TRUNCATIONS, pa.Table.from_pylist(
            [{"table": table, SEQ: at.seq, SEQ_ROW: at.row, "applied_at": now}], schema=truncations_schema()))
        self.truncated[table] = max(at, self.truncated.get(table, at))



def rename_landing_files(settings: Settings, client: str, renamed: dict[str, str]) -> int:
    """Record in the client's manifest that landing files moved (recovery archived them after a broker lost the
    log they came from), so that new files of the topic's next incarnation under the old names are applied.

    The rows stay, with their batch numbers (bronze's crash safety relies on batches only growing); what the
    files brought stays in bronze and silver. Returns the number of manifest rows renamed.
    """
    url = meta_url(settings, client, MANIFEST)
    if not renamed or open_table(settings, url) is None:
        return 0

    def step() -> int:
        dt = open_table(settings, url)
        assert dt is not None
        manifest = read_table(dt)
        files = manifest["file"].to_pylist()
        n = sum(f in renamed for f in files)
        if n:
            column = pa.array([renamed.get(f, f) for f in files], pa.string())
            manifest = manifest.set_column(manifest.schema.get_field_index("file"), manifest.schema.field("file"),
                                           column)
            write_deltalake(dt, manifest, mode="overwrite")
        return n

    return with_commit_retry(step, f"manifest update {client}")
