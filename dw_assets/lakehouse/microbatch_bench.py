"""Micro-batch benchmark: one client batch of ~200 changes over 8 tables (the ingest service's unit of work).

Reports the seconds of `apply_client` (median of several batches), the Delta commits it made, and the same
batch into silver tables of a larger size (the per-batch cost must follow the batch, not the table). The
reference is measured in the same run: a bare deltalake MERGE of 50 rows into a 10,000-row table with change
data feed, and a bare append, the fixed costs a micro-batch cannot go below.
"""
from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable, write_deltalake

from dw_assets.contracts import data_topic
from dw_assets.model import StandardModel, parse_model
from dw_assets.settings import Settings

from .apply import apply_client
from .bench import BENCH_MODEL, _events, _write, bench_client
from .evolution import StaticSourceSchema
from .paths import filesystem

TABLES = 8
SCD2 = 3  # like the shipped model: customers, products, subscriptions keep history


def micro_model() -> StandardModel:
    """8 tables of the bench column mix; 3 with SCD2 history, 7 with change data feed (the shipped model's mix)."""
    base = BENCH_MODEL["tables"][0]
    tables = [{**base, "name": f"t{i}", "options": {"change_data_feed": i != TABLES - 1, "scd2": i < SCD2}}
              for i in range(TABLES)]
    return parse_model({"version": "micro-1", "tables": tables}, source="<micro-bench>")


def delta_versions(settings: Settings, client: str) -> dict[str, int]:
    """The version of every Delta table of the client (all layers and bookkeeping), by log directory."""
    fs, root = filesystem(settings, settings.lake_url)
    out: dict[str, int] = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type != pafs.FileType.Directory or info.base_name != "_delta_log" or f"/{client}/" not in info.path:
            continue
        logs = [i.base_name for i in fs.get_file_info(pafs.FileSelector(info.path)) if i.base_name.endswith(".json")]
        if logs:
            out[info.path] = max(int(n.split(".")[0]) for n in logs)
    return out


def _batch(settings: Settings, model: StandardModel, client: str, run: int, rows: int, changes: int,
           offsets: dict[str, int], seed: int) -> int:
    """Write one landing file per table: `changes` spread over the tables (60 % updates, 20 % inserts, 20 %
    deletes); returns the number of events."""
    rng = np.random.default_rng(seed + run)
    per = changes // len(model.tables)
    n = 0
    for i, t in enumerate(model.tables):
        topic = data_topic(settings.kafka.topic_prefix, client, t.name)
        n_upd, n_ins = int(per * 0.6), int(per * 0.2)
        n_del = per - n_upd - n_ins
        base = rows + run * per  # inserts get fresh ids; updates and deletes hit loaded rows
        ids = np.concatenate([rng.integers(0, rows // 2, n_upd), np.arange(base, base + n_ins),
                              rows // 2 + run * n_del + np.arange(n_del)])
        ops = np.array(["u"] * n_upd + ["c"] * n_ins + ["d"] * n_del)
        pos0 = 10_000_000 + run * 1_000_000 + i * 100_000
        ev = _events(ids, ops, pos0, topic, offsets[topic], client, seed + run, snapshot=False, table=t.name)
        _write(settings, topic, ev, offsets[topic])
        offsets[topic] += len(ids)
        n += len(ids)
    return n


def run_size(settings: Settings, rows: int, changes: int, batches: int, seed: int = 11) -> dict[str, Any]:
    """Load `rows` per table, then apply `batches` micro-batches of `changes` each; seconds and commits."""
    model = micro_model()
    base_model, client, settings, tmp = bench_client(settings, "micro")
    del base_model
    source = StaticSourceSchema({})
    offsets: dict[str, int] = {}
    try:
        for t in model.tables:
            topic = data_topic(settings.kafka.topic_prefix, client, t.name)
            snap = _events(np.arange(rows), "r", 1_000, topic, 0, client, seed, snapshot=True, table=t.name)
            _write(settings, topic, snap, 0)
            offsets[topic] = rows
        first = apply_client(settings, client, model, source_schema=source)
        assert first.ok, first.failed
        seconds, cpu, commits, events, phases = [], [], [], 0, []
        for run in range(batches):
            events = _batch(settings, model, client, run, rows, changes, offsets, seed)
            before = delta_versions(settings, client)
            t0, c0 = time.perf_counter(), time.process_time()
            r = apply_client(settings, client, model, source_schema=source)
            seconds.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)  # CPU of every thread: less sensitive to a busy machine
            assert r.ok, r.failed
            after = delta_versions(settings, client)
            commits.append(sum(v - before.get(p, -1) for p, v in after.items()))
            phases.append(r.timings)
        return {"rows_per_table": rows, "events": events, "seconds": seconds,
                "median_s": statistics.median(seconds), "cpu_median_s": round(statistics.median(cpu), 4),
                "commits": commits,
                "phases_s": {k: round(statistics.median(p.get(k, 0.0) for p in phases), 4) for k in phases[0]}}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def reference(repeats: int = 5) -> dict[str, float]:
    """Bare deltalake: MERGE of 50 rows into a 10,000-row table with CDF, and an append of 50 rows (median s)."""
    scratch = Path(tempfile.mkdtemp(prefix="dw-micro-ref-"))
    try:
        n = 10_000
        table = pa.table({"id": np.arange(n), "v": np.arange(n) * 2, "s": [f"row {i}" for i in range(n)]})
        write_deltalake(str(scratch / "m"), table, configuration={"delta.enableChangeDataFeed": "true"})
        write_deltalake(str(scratch / "a"), table.slice(0, 50), configuration={"delta.enableChangeDataFeed": "true"})
        merge_s, append_s = [], []
        for r in range(repeats):
            src = pa.table({"id": np.arange(r * 10, r * 10 + 50), "v": np.full(50, r), "s": ["x"] * 50})
            t0 = time.perf_counter()
            (DeltaTable(str(scratch / "m")).merge(src, "t.id = s.id", source_alias="s", target_alias="t")
             .when_matched_update_all().when_not_matched_insert_all().execute())
            merge_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            write_deltalake(DeltaTable(str(scratch / "a")), src, mode="append")
            append_s.append(time.perf_counter() - t0)
        return {"merge_s": statistics.median(merge_s), "append_s": statistics.median(append_s)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_microbatch_bench(settings: Settings, changes: int = 200, batches: int = 5, rows: int = 10_000,
                         large_rows: int = 200_000) -> dict[str, Any]:
    """The micro-batch figure: `changes` over 8 tables of `rows` each, and the same into `large_rows` tables."""
    ref = reference()
    small = run_size(settings, rows, changes, batches)
    large = run_size(settings, large_rows, changes, batches) if large_rows else None
    return {"changes": small["events"], "tables": TABLES, "small": small, "large": large, "reference": ref,
            "reference_8_merges_1_append_s": round(8 * ref["merge_s"] + ref["append_s"], 4)}

