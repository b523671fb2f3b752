"""The client's place in the Dagster instance (`settings.dagster_home`): its `clients` dynamic partition, and
materialization events for reports built outside a run, so the UI shows them for the new partition.

Instance calls are serialised within the process: the local instance keeps its storage in SQLite, which refuses
concurrent writers from parallel onboardings.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import dagster as dg

from dw_assets.partitions import CLIENTS_PARTITION_NAME
from dw_assets.settings import Settings

_instance_lock = threading.RLock()  # re-entrant: a caller holding an instance may call in again


@contextmanager
def dagster_instance(settings: Settings, instance: dg.DagsterInstance | None = None) -> Iterator[dg.DagsterInstance]:
    """The instance at `settings.dagster_home`, or `instance` as given (inside a Dagster run: the run's own)."""
    if instance is not None:
        with _instance_lock:
            yield instance
        return
    home = Path(settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    with _instance_lock:
        own = dg.DagsterInstance.from_config(str(home))
        try:
            yield own
        finally:
            own.dispose()


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
