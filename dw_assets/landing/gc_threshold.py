"""Fewer cyclic-GC passes while a landing writer runs (measured: ~1.3 µs CPU per event, a sixth of landing's cost).

Every consumed confluent_kafka Message is a GC-tracked object that stays alive for its whole consume batch, so with
the default gen-0 threshold (700) the collector runs every few hundred messages, promotes live messages to older
generations and keeps re-scanning them in gen-1 and full collections. The gen-0 counter counts tracked objects
allocated minus deallocated, so a threshold above a batch's live objects means a collection only when garbage
really accumulates. The collector stays enabled (cycles are still freed), and the previous thresholds come back
when the last writer in the process leaves.
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Iterator

LANDING_GEN0_THRESHOLD = 200_000

_lock = threading.Lock()
_active = 0
_saved: tuple[int, ...] | None = None


@contextmanager
def landing_gc_threshold(gen0: int = LANDING_GEN0_THRESHOLD) -> Iterator[None]:
    global _active, _saved
    with _lock:
        if _active == 0:
            current = gc.get_threshold()
            if current[0] and current[0] < gen0:  # 0 means the caller disabled automatic collection: keep that
                _saved = current
                gc.set_threshold(gen0, *current[1:])
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                # Only restore what we set: someone who changed the thresholds meanwhile keeps theirs.
                if gc.get_threshold()[0] == gen0:
                    gc.set_threshold(*_saved)
                _saved = None
