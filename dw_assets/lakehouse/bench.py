"""Apply benchmark: change rows/s through the whole apply step (landing -> bronze -> silver) for a large table,
next to a bare deltalake MERGE of the same de-duplicated batch into the same starting table (the reference).

Uses a model of its own (one table with the usual type mix) so the figure does not depend on the shipped model.
"""
from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from dw_assets.contracts import LANDING_SCHEMA, data_topic
from dw_assets.model import StandardModel, parse_model
from dw_assets.settings import Settings

from . import changes as ch
from .apply import apply_client
from .evolution import StaticSourceSchema
from .paths import is_s3, open_table, storage_options, table_url
from .silver import dq
from .synthetic import write_landing_table
from .ordering import ORDER_COLUMNS
from .tables import SOURCE_TS, data_fields

BENCH_TABLE = "bench_items"
BENCH_MODEL = {
    "version": "bench-1",
    "tables": [{
        "name": BENCH_TABLE,
        "options": {"change_data_feed": True, "scd2": False},
        "columns": [
            {"name": "item_id", "type": "BIGINT", "primary_key": True},
            {"name": "name", "type": "VARCHAR(64)", "nullable": False},
            {"name": "amount", "type": "DECIMAL(12,2)", "nullable": False},
            {"name": "qty", "type": "INT", "nullable": False},
            {"name": "status", "type": "ENUM('new','paid','shipped')", "nullable": False},
            {"name": "created_at", "type": "DATETIME(6)", "nullable": False},
            {"name": "updated_at", "type": "TIMESTAMP(6)", "nullable": True},
        ],
    }],
}
FILE_ROWS = 100_000  # events per landing file, like a flushed sink file


def _events(ids: np.ndarray, ops: list[str] | np.ndarray, pos0: int, topic: str, offset0: int, db: str,
            seed: int, snapshot: bool, table: str = BENCH_TABLE) -> pa.Table:
    """Landing rows for `ids` with Debezium-rendered JSON images, built column-wise with Polars."""
    n = len(ids)
    rng = np.random.default_rng(seed)
    df = pl.DataFrame({"item_id": ids}).with_columns(
        name=pl.lit("item ") + pl.col("item_id").cast(pl.String),
        amount=pl.Series(rng.integers(0, 10_000_000, n)).cast(pl.String) + "."
        + pl.Series(rng.integers(0, 100, n)).cast(pl.String).str.zfill(2),
        qty=pl.Series(rng.integers(1, 100, n)),
        status=pl.Series(np.array(["new", "paid", "shipped"])[rng.integers(0, 3, n)]),
        created_at=pl.lit("2024-05-06T07:08:09.123456"),
        updated_at=pl.lit("2024-05-06T07:08:09.654321Z"),
    )
    image = df.select(pl.struct(pl.all()).struct.json_encode().alias("img"))["img"]
    ops_s = pl.Series(ops if not isinstance(ops, str) else [ops] * n, dtype=pl.String)
    key = df.select(pl.struct("item_id").struct.json_encode().alias("k"))["k"]
    out = pl.DataFrame({
        "kafka_topic": [topic] * n, "kafka_partition": pl.Series([0] * n, dtype=pl.Int32),
        "kafka_offset": pl.Series(np.arange(offset0, offset0 + n)), "kafka_timestamp_ms": [1_700_000_000_000] * n,
        "key": key, "op": ops_s,
        "before": image.zip_with(ops_s.is_in(["u", "d"]), pl.Series([None] * n, dtype=pl.String)),
        "after": image.zip_with(ops_s != "d", pl.Series([None] * n, dtype=pl.String)),
        "ts_ms": [1_700_000_000_000] * n, "source_db": [db] * n, "source_table": [table] * n,
        "source_ts_ms": pl.Series(1_700_000_000_000 + np.arange(n)), "source_snapshot": ["true" if snapshot else "false"] * n,
        "source_server_id": [1] * n, "source_gtid": pl.Series([None] * n, dtype=pl.String),
        "source_file": ["dw-bin.000001"] * n,
        # Snapshot rows share the snapshot position (row index differs); streamed changes get their own.
        "source_pos": pl.Series([pos0] * n) if snapshot else pl.Series(pos0 + np.arange(n) * 100),
        "source_row": pl.Series(np.arange(n) if snapshot else np.zeros(n, dtype=np.int64), dtype=pl.Int32),
        "transaction_id": pl.Series([None] * n, dtype=pl.String),
    })
    return out.to_arrow().cast(LANDING_SCHEMA)


def _write(settings: Settings, topic: str, table: pa.Table, offset0: int) -> None:
    for start in range(0, table.num_rows, FILE_ROWS):
        write_landing_table(settings, topic, 0, offset0 + start, table.slice(start, FILE_ROWS))


def bench_client(settings: Settings, prefix: str) -> tuple[StandardModel, str, Settings, str | None]:
    """The bench model, a fresh client name, and settings whose local lake and landing live in a temporary
    directory (returned, for removal; None on S3, where the fresh client name is the fresh prefix)."""
    model = parse_model(BENCH_MODEL, source="<bench>")
    client = f"{prefix}_{uuid.uuid4().hex[:8]}"
    tmp = None
    if not is_s3(settings.lake_url):
        tmp = tempfile.mkdtemp(prefix=f"dw-{prefix}-bench-")
        settings = replace(settings, lake_url=f"{tmp}/lake", landing_url=f"{tmp}/landing")
    return model, client, settings, tmp


def run_apply_bench(settings: Settings, rows: int = 1_000_000, changes: int = 100_000, seed: int = 7) -> dict[str, Any]:
    """Load `rows` snapshot rows, then time the apply of `changes` change events (70 % updates with repeated
    keys, 20 % inserts, 10 % deletes) and a bare MERGE of the same de-duplicated batch. Local lakes are put in a
    temporary directory and removed afterwards; on S3 a fresh prefix is used."""
    model, client, settings, tmp = bench_client(settings, "bench")
    source = StaticSourceSchema({})
    topic = data_topic(settings.kafka.topic_prefix, client, BENCH_TABLE)
    rng = np.random.default_rng(seed)
    try:
        t0 = time.perf_counter()
        snap = _events(np.arange(rows), "r", 1_000, topic, 0, client, seed, snapshot=True)
        _write(settings, topic, snap, 0)
        generate_s = time.perf_counter() - t0
        first = apply_client(settings, client, model, source_schema=source)
        silver_url = table_url(settings, "silver", client, BENCH_TABLE)
        v0 = open_table(settings, silver_url).version()

        n_upd, n_ins = int(changes * 0.7), int(changes * 0.2)
        n_del = changes - n_upd - n_ins
        upd_ids = rng.integers(0, rows, n_upd)  # with repeats: several changes per key in one batch
        ins_ids = np.arange(rows, rows + n_ins)
        del_ids = rng.choice(rows, n_del, replace=False)
        ids = np.concatenate([upd_ids, ins_ids, del_ids])
        ops = np.array(["u"] * n_upd + ["c"] * n_ins + ["d"] * n_del)
        perm = rng.permutation(changes)
        batch = _events(ids[perm], ops[perm], 10_000, topic, rows, client, seed + 1, snapshot=False)
        _write(settings, topic, batch, rows)

        t0 = time.perf_counter()
        result = apply_client(settings, client, model, source_schema=source)
        apply_s = time.perf_counter() - t0
        tr = result.tables[BENCH_TABLE]

        ref = _reference_merge(settings, model, client, silver_url, v0, batch)
        return {
            "rows": rows, "changes": changes, "deduplicated_changes": ref["deduplicated"],
            "initial_load_s": round(first.seconds, 3), "initial_load_rows_per_s": round(rows / first.seconds),
            "apply_s": round(apply_s, 3), "changes_per_s": round(changes / apply_s),
            "apply_phases_s": {k: round(v, 3) for k, v in result.timings.items()},
            "silver_inserted": tr.silver.inserted, "silver_updated": tr.silver.updated,
            "silver_deleted": tr.silver.deleted,
            "reference": "bare deltalake MERGE of the same de-duplicated batch into the same 1-version table",
            "reference_merge_s": round(ref["seconds"], 3),
            "reference_changes_per_s": round(changes / ref["seconds"]),
            "ratio_apply_to_reference": round(ref["seconds"] / apply_s, 3),
            "generate_landing_s": round(generate_s, 3),
            "target_changes_per_s": 200_000,
        }
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _reference_merge(settings: Settings, model, client: str, silver_url: str, v0: int, batch: pa.Table) -> dict:
    """Copy silver at v0 to a scratch table and time deltalake's MERGE of the de-duplicated batch into it."""
    t = model.table(BENCH_TABLE)
    con = ch.connect()
    try:
        rows = ch.bronze_rows(con, batch.append_column("_dw_landing_file", pa.array(["x"] * batch.num_rows)), 1,
                              datetime.now(timezone.utc))
        typed = ch.typed_events(con, rows, data_fields(t))
        latest = ch.latest_per_key(typed, list(t.primary_key))
    finally:
        con.close()
    start = DeltaTable(silver_url, version=v0, storage_options=storage_options(settings, silver_url))
    scratch = tempfile.mkdtemp(prefix="dw-merge-ref-")
    try:
        write_deltalake(f"{scratch}/t", start.to_pyarrow_table(), configuration={"delta.enableChangeDataFeed": "true"})
        dt = DeltaTable(f"{scratch}/t")
        cols = [c.name for c in t.columns] + [*ORDER_COLUMNS, SOURCE_TS]
        values = {dq(c): f"s.{dq(c)}" for c in cols}
        pred = " AND ".join(f"t.{dq(k)} = s.{dq(k)}" for k in t.primary_key)
        t0 = time.perf_counter()
        (dt.merge(latest, pred, source_alias="s", target_alias="t")
         .when_matched_delete("s._dw_op = 'd'").when_matched_update(values, "s._dw_op <> 'd'")
         .when_not_matched_insert(values, "s._dw_op <> 'd'").execute())
        return {"seconds": time.perf_counter() - t0, "deduplicated": latest.num_rows}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
