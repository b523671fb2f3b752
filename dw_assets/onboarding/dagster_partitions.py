"""The client's place in the Dagster instance (`settings.dagster_home`): its `clients` dynamic partition, and
materialization events for reports built outside a run, so the UI shows them for the new partition.

Instance calls are serialised within the process and, by a lock file in the Dagster home, across processes: the
local instance keeps its storage in SQLite, which refuses concurrent writers from parallel onboardings, and two
processes creating a fresh instance at once each stamp the schema (two Alembic heads, after which every instance
load fails in `get_current_heads()`).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import dagster as dg

from dw_assets.cdc.checkpoint import ServiceLock  # an flock, released by the kernel if the process dies
from dw_assets.partitions import CLIENTS_PARTITION_NAME
from dw_assets.settings import Settings

_instance_lock = threading.RLock()  # re-entrant: a caller holding an instance may call in again
HOME_LOCK_DIR = ".dw-instance-lock"  # in the Dagster home: one process at a time opens the instance from here
HOME_LOCK_WAIT_SECONDS = 120.0  # an instance call holds it for well under a second
_held: dict[str, int] = {}  # Dagster home -> nesting depth of this process's hold (guarded by _instance_lock)


@contextmanager
def dagster_instance(settings: Settings, instance: dg.DagsterInstance | None = None) -> Iterator[dg.DagsterInstance]:
    """The instance at `settings.dagster_home`, or `instance` as given (inside a Dagster run: the run's own)."""
    if instance is not None:
        with _instance_lock:
            yield instance
        return
    home = Path(settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    with _instance_lock, _home_lock(home):
        own = dg.DagsterInstance.from_config(str(home))
        try:
            yield own
        finally:
            own.dispose()


@contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    """Called under `_instance_lock`; a nested call of the same thread re-uses the lock it holds (a second flock
    of the same file from this process would wait for itself)."""
    key = str(home.resolve())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    lock = ServiceLock(home / HOME_LOCK_DIR)
    if not lock.acquire(timeout=HOME_LOCK_WAIT_SECONDS):
        raise RuntimeError(f"the Dagster instance at {home} is held by pid {lock.holder_pid() or 'unknown'} for more "
                           f"than {HOME_LOCK_WAIT_SECONDS:g} s (lock {lock.path})")
    _held[key] = 1
    try:
        yield
    finally:
        _held[key] = 0
        lock.release()


def has_partition(settings: Settings, client: str, instance: dg.DagsterInstance | None = None) -> bool:
    with dagster_instance(settings, instance) as inst:
        return inst.has_dynamic_partition(CLIENTS_PARTITION_NAME, client)


def add_partition(settings: Settings, client: str, instance: dg.DagsterInstance | None = None) -> bool:
    """Add the client's partition unless it exists; True if added."""
    with dagster_instance(settings, instance) as inst:
        if inst.has_dynamic_partition(CLIENTS_PARTITION_NAME, client):
            return False
        inst.add_dynamic_partitions(CLIENTS_PARTITION_NAME, [client])
        return True


def remove_partition(settings: Settings, client: str, instance: dg.DagsterInstance | None = None) -> bool:
    """Remove the client's partition if it exists; True if removed (its materialization history stays)."""
    with dagster_instance(settings, instance) as inst:
        if not inst.has_dynamic_partition(CLIENTS_PARTITION_NAME, client):
            return False
        inst.delete_dynamic_partition(CLIENTS_PARTITION_NAME, client)
        return True


def report_materializations(settings: Settings, client: str,
                            assets: Mapping[tuple[str, ...], Mapping[str, Any]],
                            instance: dg.DagsterInstance | None = None) -> int:
    """Record one runless materialization per asset key (with metadata) for the client's partition."""
    with dagster_instance(settings, instance) as inst:
        for key, metadata in assets.items():
            inst.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=dg.AssetKey(list(key)), partition=client, metadata=dict(metadata)))
    return len(assets)
