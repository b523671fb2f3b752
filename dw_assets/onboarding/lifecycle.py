"""Pause and resume: a paused client is neither captured nor landed (both take only `active` clients); others
are unaffected. Pausing waits until a running capture service has let go of the database.

On resume the capture service snapshots the database again (it was not captured while paused), so silver
receives the rows changed meanwhile; rows DELETED while paused stay in silver until the lake treats a
re-snapshot as a full refresh.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from dw_assets.cdc.checkpoint import CheckpointStore, ServiceLock, state_dir
from dw_assets.settings import Settings

from . import registry
from .run_lock import client_run_lock


@dataclass(frozen=True)
class LifecycleChange:
    client: registry.Client
    previous_status: str
    capture_released: bool  # pause: no running capture service still lists the database


def _capture_lists(settings: Settings, database: str) -> bool:
    if not ServiceLock(state_dir(settings)).holder_pid():
        return False  # no service: the next capture run reads the registry first
    cp = CheckpointStore(state_dir(settings)).load()
    return cp is not None and database in cp.databases


def pause_client(settings: Settings, client: str, changed_by: str, wait_s: float = 20.0) -> LifecycleChange:
    before = registry.get_client(settings, client)
    with client_run_lock(settings, client):
        after = registry.set_status(settings, client, "paused", changed_by=changed_by)
    deadline = time.monotonic() + wait_s
    while _capture_lists(settings, after.production_db) and time.monotonic() < deadline:
        time.sleep(0.2)
    return LifecycleChange(after, before.status, not _capture_lists(settings, after.production_db))


def resume_client(settings: Settings, client: str, changed_by: str) -> LifecycleChange:
    before = registry.get_client(settings, client)
    if before.status != "paused":
        raise registry.RegistryError(f"client {client!r} is {before.status}, not paused")
    with client_run_lock(settings, client):
        after = registry.set_status(settings, client, "active", changed_by=changed_by)
    return LifecycleChange(after, before.status, True)
