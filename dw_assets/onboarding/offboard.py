"""`offboard_client`: take a client out of the pipeline. Status `offboarded` first (capture and the landing sensor
stop taking it), then its Dagster partition, Kafka topics and landing offsets go; with `drop_data` also its Delta
tables, landing files and report pages. Without it the lake and landing data stay readable where they are.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from dw_assets.cdc.checkpoint import CheckpointStore, ServiceLock, state_dir
from dw_assets.landing.client_lock import LandingBusy, client_lock
from dw_assets.settings import Settings

from . import dagster_partitions, registry
from .client_data import ClientDataLocations, drop_data as drop_client_data, existing_data
from .kafka_topics import delete_client_topics, reset_landing_group
from .run_lock import client_run_lock
from .step_log import clear_steps


@dataclass
class OffboardResult:
    client: str
    previous_status: str
    partition_removed: bool = False
    topics_deleted: list[str] = field(default_factory=list)
    landing_offsets_reset: bool = False
    dropped: ClientDataLocations = field(default_factory=ClientDataLocations)
    kept: ClientDataLocations = field(default_factory=ClientDataLocations)
    capture_released: bool = True  # False: a running capture service still listed the database at the end
    seconds: float = 0.0


@contextmanager
def _landing_paused(settings: Settings, client: str, timeout_s: float) -> Iterator[None]:
    """Hold the client's landing lock, so no writer on this host cuts a file while topics and files go."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with client_lock(settings.home, client):
                yield
            return
        except LandingBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait_capture_release(settings: Settings, database: str, timeout_s: float) -> bool:
    """A running capture service drops a non-active database at its next registry poll; wait for that."""
    if not ServiceLock(state_dir(settings)).holder_pid():
        return True  # the next capture run reads the registry before anything else
    store = CheckpointStore(state_dir(settings))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cp = store.load()
        if cp is None or database not in cp.databases:
            return True
        time.sleep(0.2)
    return False


def offboard_client(settings: Settings, client: str, drop_data: bool = False, changed_by: str = "dw",
                    capture_grace_s: float = 20.0, landing_lock_timeout_s: float = 120.0) -> OffboardResult:
    started = time.perf_counter()
    row = registry.get_client(settings, client)
    result = OffboardResult(client, row.status)
    with client_run_lock(settings, client):
        registry.set_status(settings, client, "offboarded", changed_by=changed_by)
        result.capture_released = _wait_capture_release(settings, row.production_db, capture_grace_s)
        result.partition_removed = dagster_partitions.remove_partition(settings, client)
        with _landing_paused(settings, client, landing_lock_timeout_s):
            result.topics_deleted = delete_client_topics(settings, row.production_db)
            result.landing_offsets_reset = reset_landing_group(settings, client)
            if drop_data:
                result.dropped = drop_client_data(settings, client, row.production_db)
            else:
                result.kept = existing_data(settings, client, row.production_db)
        # A later onboarding starts from the first step again.
        clear_steps(settings, client)
    result.seconds = time.perf_counter() - started
    return result
