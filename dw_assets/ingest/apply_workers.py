"""The ingest service's apply step in worker processes.

Landing (ten consumers, decoding, Parquet) keeps the service's interpreter busy; applies run in the same
interpreter waited for its GIL and fell far behind (keep-up 0.14 at 2,000 changes/s over 10 clients, apply 25%
of the samples). Each worker is its own interpreter, so the two cores work on landing and applying at once.
A worker is one micro-batch at a time; the per-client apply lock (an flock) keeps it off a client that a
Dagster run or another worker holds, and a worker orphaned by a kill -9 of the service leaves at once (what it
had half-committed is what a crash leaves, which the apply step recovers from).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Mapping

import pyarrow as pa

from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .ingest_pass import ClientOutcome, apply_one
from .worker_process import _init as _watch_init

log = logging.getLogger(__name__)
_model: StandardModel | None = None


def _init(parent: int, model: StandardModel) -> None:
    global _model
    _watch_init(parent, 0)
    _model = model


def apply_pool(workers: int, model: StandardModel) -> ProcessPoolExecutor:
    """`workers` spawned processes holding `model` (sent once, not per micro-batch)."""
    return ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init, initargs=(os.getpid(), model))


def rows_to_ipc(rows: Mapping[str, pa.Table]) -> dict[str, bytes]:
    """The handed-off rows as Arrow IPC streams, for the trip to a worker: pickling a pa.Table costs ~10x more
    (82 ms vs 8.5 ms for a second's 80 landing files of one client, round trip), in the service's GIL-bound
    feeder thread that the landing writers share."""
    out = {}
    for key, table in rows.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        out[key] = sink.getvalue().to_pybytes()
    return out


def rows_from_ipc(rows: Mapping[str, bytes] | None) -> dict[str, pa.Table] | None:
    return None if rows is None else {k: pa.ipc.open_stream(v).read_all() for k, v in rows.items()}


def apply_in_worker(settings: Settings, client: str, database: str, conformance: Any, files: Any = None,
                    rows: Mapping[str, bytes] | None = None, compact: bool = False) -> ClientOutcome:
    """`rows`: as `rows_to_ipc` made them."""
    assert _model is not None, "apply_in_worker runs only in an apply_pool worker"
    return apply_and_compact(settings, client, database, _model, conformance, files, rows_from_ipc(rows), compact)


def apply_and_compact(settings: Settings, client: str, database: str, model: StandardModel, conformance: Any,
                      files: Any, rows: Any, compact: bool) -> ClientOutcome:
    """One micro-batch, then (`compact`) the light maintenance pass over the client's tables.

    Each batch adds a file per changed bronze partition and silver table; left alone, every later batch lists
    and prunes more of them (bronze after two minutes at 2,000 changes/s over 10 clients: ~800 files a client).
    The Dagster schedule compacts every 15 minutes; the service compacts its clients itself, here, between two
    of that client's batches, so nothing of this service competes with the commit."""
    out = apply_one(settings, client, database, model, conformance=conformance, files=files, rows=rows)
    if compact and not out.error and not out.gated:
        from dw_assets.lakehouse.maintenance import COMPACT_FROM_FILES, maintain_client

        try:
            maintain_client(settings, client, model, compact_only_from=COMPACT_FROM_FILES)
        except Exception as e:  # noqa: BLE001 - a missed compaction only costs the next batches time
            log.warning("ingest: compacting %s failed (the scheduled maintenance will): %s", client, e)
    return out
