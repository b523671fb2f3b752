"""Snapshots while a workload writes to the same table: snapshot + stream must equal the final table exactly;
a client activated in the registry while the service runs is picked up and snapshotted without a restart."""
from __future__ import annotations

import random
import threading
import time

import orjson
import pytest

from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.checkpoint import STREAMING, CheckpointStore, state_dir
from dw_assets.cdc.sources import fixed_source
from dw_assets.contracts import data_topic
from dw_assets.db import connect
from dw_assets_tests.test_cdc_support import apply_changes, capture_once, cdc_settings, consume, new_db, sql  # noqa: F401


def _seed(s, db: str, rows: int) -> None:
    sql(s, db, "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(30))")
    with connect(s, database=db, autocommit=False) as conn, conn.cursor() as cur:
        for lo in range(0, rows, 5000):
            cur.executemany("INSERT INTO t VALUES (%s, %s, %s)",
                            [(i, 0, f"row {i}") for i in range(lo, min(lo + 5000, rows))])
        conn.commit()


def _workload(s, db: str, rows: int, stop: threading.Event, counter: list[int]) -> None:
    rng = random.Random(1)
    next_id = rows
    with connect(s, database=db, autocommit=False) as conn, conn.cursor() as cur:
        while not stop.is_set():
            for _ in range(rng.randint(1, 5)):
                op = rng.random()
                k = rng.randrange(next_id)
                if op < 0.6:
                    cur.execute("UPDATE t SET v = v + 1, s = %s WHERE id = %s", (f"upd {rng.random():.6f}", k))
                elif op < 0.8:
                    cur.execute("DELETE FROM t WHERE id = %s", (k,))
                else:
                    cur.execute("INSERT INTO t VALUES (%s, 1, 'new')", (next_id,))
                    next_id += 1
            conn.commit()
            counter[0] += 1


def _snapshot_under_workload(s, rows: int, chunk: int) -> None:
    db = new_db(s)
    _seed(s, db, rows)
    stop, counter = threading.Event(), [0]
    writer = threading.Thread(target=_workload, args=(s, db, rows, stop, counter), daemon=True)
    writer.start()
    try:
        time.sleep(0.3)
        capture_once(s, [db], snapshot_chunk_rows=chunk)  # snapshot while the writer runs
    finally:
        stop.set()
        writer.join(30)
    assert counter[0] > 10, "the workload did not run during the snapshot"
    capture_once(s, [db])  # the rest of the stream
    msgs = consume(s, [data_topic(s.kafka.topic_prefix, db, "t")], timeout=60)
    got = apply_changes(msgs)[data_topic(s.kafka.topic_prefix, db, "t")]
    with connect(s, database=db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v, s FROM t")
        want = {orjson.dumps({"id": i}): {"id": i, "v": v, "s": t} for i, v, t in cur.fetchall()}
    assert got == want
    assert sum(1 for m in msgs if m.op == "r") > 0
    assert CheckpointStore(state_dir(s)).load().databases[db] == STREAMING


def test_snapshot_under_workload_small(cdc_settings):
    _snapshot_under_workload(cdc_settings, rows=5000, chunk=500)


@pytest.mark.slow
def test_snapshot_under_workload_100k(cdc_settings):
    _snapshot_under_workload(cdc_settings, rows=100_000, chunk=10_000)


def test_client_activated_while_running_is_picked_up(cdc_settings):
    s = cdc_settings
    first, second = new_db(s), new_db(s)
    for db in (first, second):
        _seed(s, db, 50)
    wanted = {first}
    service = CaptureService(s, CaptureOptions(databases=lambda: set(wanted), registry_poll_s=0.2,
                                               heartbeat_interval_ms=500))
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while service.databases.get(first) != STREAMING and time.monotonic() < deadline:
            time.sleep(0.05)
        sql(s, first, "UPDATE t SET v = 7 WHERE id = 1")
        wanted.add(second)  # activated while running
        sql(s, second, "UPDATE t SET v = 9 WHERE id = 2")
        while service.databases.get(second) != STREAMING and time.monotonic() < deadline:
            time.sleep(0.05)
        sql(s, second, "UPDATE t SET v = 10 WHERE id = 3")
        time.sleep(1.0)
    finally:
        service.stop()
        runner.join(30)
    for db, changed in ((first, {1: 7}), (second, {2: 9, 3: 10})):
        topic = data_topic(s.kafka.topic_prefix, db, "t")
        got = apply_changes(consume(s, [topic]))[topic]
        assert len(got) == 50
        for k, v in changed.items():
            assert got[orjson.dumps({"id": k})]["v"] == v
