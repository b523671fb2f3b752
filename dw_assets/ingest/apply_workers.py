"""The ingest service's apply step in worker processes.

Landing (ten consumers, decoding, Parquet) keeps the service's interpreter busy; applies run in the same
interpreter waited for its GIL and fell far behind (keep-up 0.14 at 2,000 changes/s over 10 clients, apply 25%
of the samples). Each worker is its own interpreter, so the two cores work on landing and applying at once.
A worker is one micro-batch at a time; the per-client apply lock (an flock) keeps it off a client that a
Dagster run or another worker holds, and a worker orphaned by a kill -9 of the service leaves at once (what it
had half-committed is what a crash leaves, which the apply step recovers from).
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .ingest_pass import ClientOutcome, apply_one
from .worker_process import _init as _watch_init

_model: StandardModel | None = None


def _init(parent: int, model: StandardModel) -> None:
    global _model
    _watch_init(parent, 0)
    _model = model


def apply_pool(workers: int, model: StandardModel) -> ProcessPoolExecutor:
    """`workers` spawned processes holding `model` (sent once, not per micro-batch)."""
    return ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init, initargs=(os.getpid(), model))


def apply_in_worker(settings: Settings, client: str, database: str, conformance: Any, files: Any = None,
                    rows: Any = None) -> ClientOutcome:
    assert _model is not None, "apply_in_worker runs only in an apply_pool worker"
    return apply_one(settings, client, database, _model, conformance=conformance, files=files, rows=rows)
