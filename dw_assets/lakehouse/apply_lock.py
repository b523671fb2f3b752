"""At most one apply step per client at a time on this machine: an advisory lock under $DW_HOME/locks.

Two appliers of one client would both take the next batch number and race on the manifest; the ordered MERGE
keeps silver right, but batches and progress would interleave. A second applier waits a bounded time for the
first (e.g. a reconciliation repair behind a running apply pass), then fails naming the holder. Like landing's
lock it covers one host; Dagster's per-client run concurrency keeps runs apart across a deployment.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dw_assets.cdc.checkpoint import ServiceLock  # the same flock, released by the kernel if the process dies

WAIT_SECONDS = 120.0  # a busy apply pass takes seconds; longer means something is stuck


class ApplyBusy(RuntimeError):
    """Another apply step holds this client's lock for longer than we wait."""


def lock_dir(home: Path, client: str) -> Path:
    return Path(home) / "locks" / f"apply.{client}"


@contextmanager
def apply_lock(home: Path, client: str, wait_seconds: float | None = None) -> Iterator[None]:
    wait = WAIT_SECONDS if wait_seconds is None else wait_seconds
    lock = ServiceLock(lock_dir(home, client))
    if not lock.acquire(timeout=wait):
        raise ApplyBusy(f"another apply step is running for client {client!r} (pid {lock.holder_pid() or 'unknown'}, "
                        f"lock {lock.path}); waited {wait:g} s")
    try:
        yield
    finally:
        lock.release()
