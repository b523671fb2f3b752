"""At most one landing writer per client on this machine: an advisory lock file under $DW_HOME/locks.

Dagster's tag concurrency keeps runs apart across the deployment; this lock also covers the CLI and manual runs
on one host, which matters because two writers of one client would cut overlapping files.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class LandingBusy(RuntimeError):
    """Another landing writer holds this client's lock."""


@contextmanager
def client_lock(home: Path, client: str) -> Iterator[None]:
    path = Path(home) / "locks" / f"landing.{client}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LandingBusy(f"another landing writer is running for client {client!r} (lock {path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock, also when the process dies
