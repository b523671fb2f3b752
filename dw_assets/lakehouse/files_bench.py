"""Files per table under a continuous workload: an hour of 2,000 changes/s replayed as the applies the Kafka-lag
sensor would start (one every `interval_s`), with the light compaction pass on its schedule (every 15 minutes).

The hour is simulated (applies back to back, the clock advanced per batch) so the figure costs minutes, not an
hour; what it measures does not depend on wall time: every apply adds about one file per bronze and bookkeeping
table (bronze: one per client) and rewrites the silver files it touches, and compaction folds them. Beside it, the same applies without
maintenance (the reference: what the file count would be with no compaction).
"""
from __future__ import annotations

import shutil
import time
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from dw_assets.contracts import data_topic
from dw_assets.settings import Settings

from . import bench as apply_bench
from .apply import apply_client
from .evolution import StaticSourceSchema
from .maintenance import COMPACT_FROM_FILES, maintain_client
from .paths import bronze_url, filesystem, meta_url, open_table, table_url
from .tables import MANIFEST

COMPACTION_EVERY_S = 15 * 60  # the lake_compaction schedule's cadence


def _live_files(settings: Settings, client: str, table: str) -> dict[str, int]:
    urls = {"bronze": bronze_url(settings, client), "silver": table_url(settings, "silver", client, table),
            "manifest": meta_url(settings, client, MANIFEST)}
    out = {}
    for name, url in urls.items():
        dt = open_table(settings, url)
        out[name] = len(dt.file_uris()) if dt is not None else 0
    return out


def _files_on_disk(settings: Settings, url: str) -> int:
    """Data files under a table's directory, live or not (nothing is vacuumed within the week's retention): the
    count the table would have as live files without compaction."""
    fs, root = filesystem(settings, url)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sum(1 for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
               and "_delta_log" not in i.path)


def run_files_bench(settings: Settings, minutes: float = 60, rate: int = 2_000, interval_s: float = 15,
                    base_rows: int = 100_000, maintenance: bool = True, seed: int = 11,
                    progress: Any = None) -> dict[str, Any]:
    """Replay `minutes` of `rate` changes/s (70 % updates, 20 % inserts, 10 % deletes) over a table of `base_rows`
    as applies every `interval_s` simulated seconds; compaction every 15 simulated minutes when `maintenance`."""
    model, client, settings, tmp = apply_bench.bench_client(settings, "files")
    table = apply_bench.BENCH_TABLE
    source = StaticSourceSchema({})
    topic = data_topic(settings.kafka.topic_prefix, client, table)
    rng = np.random.default_rng(seed)
    per_batch = int(rate * interval_s)
    batches = max(1, int(minutes * 60 / interval_s))
    compact_every = max(1, int(COMPACTION_EVERY_S / interval_s))
    started = time.perf_counter()
    try:
        snap = apply_bench._events(np.arange(base_rows), "r", 1_000, topic, 0, client, seed, snapshot=True)
        apply_bench._write(settings, topic, snap, 0)
        apply_client(settings, client, model, source_schema=source)
        alive = np.ones(base_rows, dtype=bool)
        next_id, offset, pos = base_rows, base_rows, 10_000
        peak: dict[str, int] = {}
        apply_s: list[float] = []
        compactions = 0
        for b in range(1, batches + 1):
            n_upd, n_ins = int(per_batch * 0.7), int(per_batch * 0.2)
            n_del = per_batch - n_upd - n_ins
            live = np.flatnonzero(alive)
            dels = rng.choice(live, n_del, replace=False)
            alive[dels] = False
            upd = rng.choice(np.flatnonzero(alive), n_upd)
            ins = np.arange(next_id, next_id + n_ins)
            next_id += n_ins
            alive = np.concatenate([alive, np.ones(n_ins, dtype=bool)])
            ids = np.concatenate([upd, ins, dels])
            ops = np.array(["u"] * n_upd + ["c"] * n_ins + ["d"] * n_del)
            perm = rng.permutation(per_batch)
            events = apply_bench._events(ids[perm], ops[perm], pos, topic, offset, client, seed + b, snapshot=False)
            apply_bench._write(settings, topic, events, offset)
            offset += per_batch
            pos += per_batch * 100 + 1_000
            t0 = time.perf_counter()
            apply_client(settings, client, model, source_schema=source)
            apply_s.append(time.perf_counter() - t0)
            if maintenance and b % compact_every == 0:
                maintain_client(settings, client, model, compact_only_from=COMPACT_FROM_FILES)
                compactions += 1
            files = _live_files(settings, client, table)
            for k, v in files.items():
                peak[k] = max(peak.get(k, 0), v)
            if progress and b % max(1, batches // 10) == 0:
                progress(f"files bench: batch {b}/{batches}, live files {files}")
        final = _live_files(settings, client, table)
        written = _files_on_disk(settings, bronze_url(settings, client))
        silver_rows = open_table(settings, table_url(settings, "silver", client, table)).to_pyarrow_dataset().count_rows()
        bronze_rows = open_table(settings, bronze_url(settings, client)).to_pyarrow_dataset().count_rows()
        return {
            "simulated_minutes": minutes, "rate": rate, "interval_s": interval_s, "applies": batches,
            "changes": batches * per_batch, "compactions": compactions, "maintenance": maintenance,
            "final_live_files": final, "peak_live_files": peak, "silver_rows": silver_rows,
            "bronze_files_written": written, "bronze_rows": bronze_rows, "expected_silver_rows": int(alive.sum()),
            "apply_s_median": round(float(np.median(apply_s)), 3), "apply_s_max": round(max(apply_s), 3),
            "seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
