"""A one-process pool for the ingest service's side work (report builds, Dagster event writes): its own
interpreter, so that work never holds the service's GIL, and gone with the service, also after kill -9.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor


def _watch_parent(parent: int) -> None:
    # A spawned worker outlives a SIGKILLed parent (it waits on its task queue forever): leave once orphaned.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _init(parent: int, niceness: int) -> None:
    if niceness:
        os.nice(niceness)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def worker_pool(niceness: int = 0) -> ProcessPoolExecutor:
    """spawn, not fork: forking a process with running threads copies locks other threads hold."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init, initargs=(os.getpid(), niceness))
