"""A client's bookkeeping in small Delta tables under `<lake>/meta/<client>/`.

`landing_manifest`: landing files appended to bronze (one row per file, with its batch number);
`truncations`: the position of each table's last TRUNCATE (older late events must not come back).
The last batch each silver (and history) table applied is an application transaction in that table's own
commits (`silver.SILVER_APP`); `silver_progress`, where an older lake has it, is still read as a floor.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable, write_deltalake

from dw_assets.settings import Settings

from .commit_retry import with_commit_retry
from .landing_files import LandingFile
from .ordering import SEQ, SEQ_ROW, ChangeOrder
from .paths import meta_url, open_table, read_table
from .table_cache import borrow, give_back
from .tables import MANIFEST, PROGRESS, TRUNCATIONS, manifest_schema, truncations_schema


def _missing(client: str, name: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name} of client {client!r} is missing: run `dw lake init --client {client}`")


def _read(settings: Settings, client: str, name: str, required: bool = True) -> pa.Table | None:
    url = meta_url(settings, client, name)
    dt = borrow(settings, url)
    if dt is None:
        if not required:
            return None
        raise _missing(client, name)
    out = read_table(dt)
    give_back(settings, url, dt)
    return out


@dataclass
class _Manifest:
    """What a process has read of one client's manifest: the data files read, and what they say."""

    dt: DeltaTable
    version: int = -1
    paths: set[str] = field(default_factory=set)
    processed: set[str] = field(default_factory=set)
    last_batch: int = 0
    last_batch_of: dict[str, int] = field(default_factory=dict)


_manifests: dict[str, _Manifest] = {}
_manifests_lock = threading.Lock()


def _manifest(settings: Settings, client: str) -> _Manifest:
    """The client's manifest as far as it is committed, reading only its data files this process has not read.

    The manifest gains a row per landing file (about 8 a second per client under load) and was read whole per
    batch: 15 ms at 3,000 rows, 375 ms at 300,000 (a day of one busy client, ~0.9 s). Data files never change,
    and between appends and compactions (new files of rows already read, read once more) every row not yet
    known is in a file not yet read. Any other commit since the last read (the overwrite of
    `rename_landing_files`, which takes names out) and a table removed and created again (`borrow` gives
    another object) mean a whole read."""
    url = meta_url(settings, client, MANIFEST)
    dt = borrow(settings, url)
    if dt is None:
        raise _missing(client, MANIFEST)
    with _manifests_lock:
        m = _manifests.pop(url, None)
    if m is None or m.dt is not dt or not _only_appended(dt, m.version):
        m = _Manifest(dt)
    ds = dt.to_pyarrow_dataset()
    fragments = list(ds.get_fragments())
    new = [f for f in fragments if f.path not in m.paths]
    if new:
        rows = pads.FileSystemDataset(new, ds.schema, ds.format, ds.filesystem).to_table(
            columns=["file", "table", "batch"])
        m.processed.update(rows["file"].to_pylist())
        for t, b in zip(rows["table"].to_pylist(), rows["batch"].to_pylist()):
            if b > m.last_batch_of.get(t, 0):
                m.last_batch_of[t] = b
        m.last_batch = max(m.last_batch_of.values(), default=0)
    m.paths, m.version = {f.path for f in fragments}, dt.version()
    give_back(settings, url, dt)
    with _manifests_lock:
        _manifests[url] = m
        while len(_manifests) > 256:  # bounded like the kept tables
            _manifests.pop(next(iter(_manifests)))
    return m


def _only_appended(dt: DeltaTable, since: int) -> bool:
    """Whether every commit after version `since` only appended rows or compacted files."""
    if dt.version() <= since:
        return True
    for commit in dt.history(limit=dt.version() - since):
        op, mode = commit.get("operation"), (commit.get("operationParameters") or {}).get("mode")
        if not (op == "OPTIMIZE" or (op == "WRITE" and mode == "Append")):
            return False
    return True


class _Seen:
    """The files recorded in the manifest (shared, read-only here) plus those this apply adds."""

    def __init__(self, committed: set[str]):
        self._committed, self._added = committed, set[str]()

    def __contains__(self, key: object) -> bool:
        return key in self._added or key in self._committed

    def add(self, key: str) -> None:
        self._added.add(key)

    def update(self, keys: Iterable[str]) -> None:
        self._added.update(keys)


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
        manifest = _manifest(settings, client)
        self.processed = _Seen(manifest.processed)
        self.last_batch: int = manifest.last_batch
        # The last batch that brought files of each table: a table whose progress is below it is behind.
        self.last_batch_of: dict[str, int] = dict(manifest.last_batch_of)
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
