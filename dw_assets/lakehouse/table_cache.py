"""Delta tables kept open in a process between micro-batches, so a batch reads only the tables' new commits.

Opening a table replays its log from the last checkpoint (about 18 ms with 60 commits since it, and a table is
checkpointed only every 100 commits); bringing an open one up to date reads only the commits after it (about
3 ms). An ingest service applies the same client's ~12 tables every second or so, so this is a large part of a
micro-batch's fixed cost.

A kept table is lent to one user at a time (`borrow`, then `give_back` after a successful use; a failed use
just drops it). Before a kept table is lent again, the log entry of its version is checked to be the very file it
was read from (size and modification time): a table that was removed and created again (offboarding, a purge,
a re-onboarding) is then opened afresh instead of being read on top of the old one's state.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import pyarrow.fs as pafs
from deltalake import DeltaTable

from dw_assets.settings import Settings

from .paths import filesystem, join, open_table

MAX_KEPT = 1024  # ~12 tables per client: enough for a worker serving many clients, bounded all the same


@dataclass
class _Kept:
    dt: DeltaTable
    version: int
    entry: tuple[int, float]  # size and mtime of `_delta_log/<version>.json` when kept


_lock = threading.Lock()
_kept: OrderedDict[str, _Kept] = OrderedDict()


def _log_entry(settings: Settings, url: str, version: int) -> tuple[int, float] | None:
    fs, root = filesystem(settings, join(url, "_delta_log", f"{version:020d}.json"))
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.File:
        return None
    return int(info.size or 0), info.mtime.timestamp() if info.mtime is not None else 0.0


def borrow(settings: Settings, url: str) -> DeltaTable | None:
    """The table at `url` at its latest version (None when there is none): a kept one brought up to date, or a
    new one. The caller has it alone until `give_back`."""
    with _lock:
        kept = _kept.pop(url, None)
    if kept is not None and _log_entry(settings, url, kept.version) == kept.entry:
        kept.dt.update_incremental()
        return kept.dt
    return open_table(settings, url)


def give_back(settings: Settings, url: str, dt: DeltaTable | None) -> None:
    """Keep `dt` (after a use that succeeded) for the next `borrow` of `url` in this process."""
    if dt is None:
        return
    version = dt.version()
    entry = _log_entry(settings, url, version)
    if entry is None:  # a version whose log entry is gone (log cleanup): nothing to check it by later
        return
    with _lock:
        _kept[url] = _Kept(dt, version, entry)
        _kept.move_to_end(url)
        while len(_kept) > MAX_KEPT:
            _kept.popitem(last=False)

