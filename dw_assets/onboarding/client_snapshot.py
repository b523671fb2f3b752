"""The initial snapshot of a client by the capture service: the client becomes `active`, which is how the
capture service learns to capture (and first snapshot) a database; this module makes sure that happens and waits.

With a continuous service running (it holds the service lock) the service takes it within its registry poll and
we wait for its checkpoint to show the database streaming; otherwise a bounded capture (`--once`) runs here. A
checkpoint still listing the database from an earlier life gets a re-snapshot request, so an old streaming state
is never mistaken for a new snapshot.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.checkpoint import STREAMING, CheckpointStore, ServiceLock, state_dir
from dw_assets.settings import Settings

log = logging.getLogger(__name__)

# Bounded captures in this process one at a time: the binlog stream is per server, one run captures every active
# client, so a parallel onboarding waiting here often finds its client already snapshotted by the previous run.
_capture_lock = threading.Lock()


class SnapshotTimeout(RuntimeError):
    """The capture service did not finish the client's snapshot in time."""


@dataclass(frozen=True)
class SnapshotOutcome:
    database: str
    mode: str  # "bounded capture" | "continuous service pid N" | "already snapshotted"
    events: int  # events the bounded capture produced for this database (0 when observed only)
    seconds: float


def _state(store: CheckpointStore, database: str) -> str | None:
    cp = store.load()
    return cp.databases.get(database) if cp else None


def _snapshotted(store: CheckpointStore, database: str) -> bool:
    return _state(store, database) == STREAMING and database not in store.pending_resnapshots()


def is_snapshotted(settings: Settings, database: str) -> bool:
    """The checkpoint shows the database streaming (its snapshot complete) and no re-snapshot is pending."""
    return _snapshotted(CheckpointStore(state_dir(settings)), database)


def prepare_snapshot(settings: Settings, database: str, active: bool, service_grace_s: float = 15.0) -> bool:
    """Make sure the next capture of `database` starts with a snapshot; True if a re-snapshot was requested.

    Call before activating the client (`active` False), or on a resumed attempt where it is active already.
    """
    store = CheckpointStore(state_dir(settings))
    if _state(store, database) != STREAMING:
        return False  # not captured (a snapshot follows activation) or a snapshot is in progress already
    if not active and ServiceLock(state_dir(settings)).holder_pid():
        # A running service drops an inactive database at its next registry poll: wait for that.
        deadline = time.monotonic() + service_grace_s
        while _state(store, database) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if _state(store, database) is None:
            return False
    store.request_resnapshot(database)
    return True


def await_snapshot(settings: Settings, database: str, timeout_s: float = 900.0, poll_s: float = 0.25
                   ) -> SnapshotOutcome:
    """Have the (now active) client's database snapshotted: by the running service, or by a bounded capture."""
    started = time.monotonic()
    store = CheckpointStore(state_dir(settings))
    lock = ServiceLock(state_dir(settings))
    deadline = started + timeout_s
    while True:
        pid = lock.holder_pid()
        if pid:
            if _snapshotted(store, database):
                return SnapshotOutcome(database, f"continuous service pid {pid}", 0, time.monotonic() - started)
        else:
            with _capture_lock:
                if _snapshotted(store, database):
                    return SnapshotOutcome(database, "already snapshotted", 0, time.monotonic() - started)
                if not lock.holder_pid():
                    service = CaptureService(settings, CaptureOptions(once=True, stats_interval_s=60))
                    service.run()
                    if not _snapshotted(store, database):
                        raise RuntimeError(f"a bounded capture ran but {database} is not snapshotted (state "
                                           f"{_state(store, database)!r}): is the client active?")
                    return SnapshotOutcome(database, "bounded capture", service.events_by_db.get(database, 0),
                                           time.monotonic() - started)
        if time.monotonic() > deadline:
            raise SnapshotTimeout(f"snapshot of {database} not finished after {timeout_s:.0f}s "
                                  f"(state {_state(store, database)!r})")
        time.sleep(poll_s)
