"""Crash and resume: kill -9 of the service subprocess in a large transaction, then restart; SIGTERM stops cleanly;
a purged binlog is a clear error naming the file and the recovery."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dw_assets.cdc.capture import BinlogPurged, CaptureOptions, CaptureService
from dw_assets.cdc.checkpoint import STREAMING, Checkpoint, CheckpointStore, state_dir
from dw_assets.cdc.sources import fixed_source
from dw_assets.cdc.topics import end_offsets
from dw_assets.contracts import data_topic
from dw_assets_tests.test_cdc_support import cdc_settings, consume, master_position, new_db, sql  # noqa: F401


def _env(s) -> dict[str, str]:
    m = s.mariadb
    env = {k: v for k, v in os.environ.items() if not k.startswith("DW_")}
    env.update(DW_MARIADB_URL=f"mysql://{m.admin_user}:{m.admin_password}@{m.host}:{m.port}",
               DW_MARIADB_CDC_URL=f"mysql://{m.cdc_user}:{m.cdc_password}@{m.host}:{m.port}",
               DW_KAFKA_BOOTSTRAP=s.kafka.bootstrap, DW_TOPIC_PREFIX=s.kafka.topic_prefix)
    return env


def _service(s, db: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dw_assets.cdc", "--home", str(s.home), "cdc", "run", "--database", db,
           "--checkpoint-interval-ms", "100", "--heartbeat-interval-ms", "500", "--no-progress", *extra]
    log = open(Path(s.home).parent / "service.log", "ab")
    return subprocess.Popen(cmd, env=_env(s), stdout=log, stderr=subprocess.STDOUT)


def _checkpoint(s) -> Checkpoint | None:
    try:
        return CheckpointStore(state_dir(s)).load()
    except json.JSONDecodeError:
        return None


def _produced(s, topic: str) -> int:
    return sum(sum(p.values()) for p in end_offsets(s, [topic], fetch_ms=1).values())


def _wait(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_kill9_in_large_transaction_then_resume(cdc_settings):
    s = cdc_settings
    s.home.mkdir(parents=True)
    db = new_db(s)
    sql(s, db, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    proc = _service(s, db)
    try:
        _wait(lambda: (_checkpoint(s) or Checkpoint("x.1", 0)).databases.get(db) == STREAMING)
        for i in range(20):
            sql(s, db, ("INSERT INTO t VALUES (%s, %s)", (i, "small")))
        end = master_position(s)
        _wait(lambda: (cp := _checkpoint(s)) is not None and (cp.file, cp.pos) >= end)
        # Freeze the service, commit one 1,000-row transaction (1,000 statements), let it run briefly, kill -9.
        os.kill(proc.pid, signal.SIGSTOP)
        sql(s, db, *[("INSERT INTO t VALUES (%s, %s)", (1000 + i, "large")) for i in range(1000)], autocommit=False)
        os.kill(proc.pid, signal.SIGCONT)
        # Kill as soon as part of the transaction is on Kafka (the service produces row by row).
        topic = data_topic(s.kafka.topic_prefix, db, "t")
        _wait(lambda: _produced(s, topic) > 20, timeout=10)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    before_restart = len(consume(s, [topic]))
    sql(s, db, "INSERT INTO t VALUES (5000, 'after')")
    rc = _service(s, db, "--once").wait(60)
    assert rc == 0
    counts = Counter(m.key["id"] for m in consume(s, [topic]) if m.value is not None)
    expected = set(range(20)) | set(range(1000, 2000)) | {5000}
    assert set(counts) == expected, "a change was lost"
    duplicated = {k for k, n in counts.items() if n > 1}
    assert duplicated <= set(range(1000, 2000)), f"duplicates outside the in-flight transaction: {duplicated}"
    print(f"messages before restart {before_restart}; duplicated keys of the large transaction: {len(duplicated)}")


def test_sigterm_stops_cleanly(cdc_settings):
    s = cdc_settings
    s.home.mkdir(parents=True)
    db = new_db(s)
    sql(s, db, "CREATE TABLE t (id INT PRIMARY KEY)")
    proc = _service(s, db)
    _wait(lambda: (_checkpoint(s) or Checkpoint("x.1", 0)).databases.get(db) == STREAMING)
    sql(s, db, "INSERT INTO t VALUES (1)")
    end = master_position(s)
    _wait(lambda: (cp := _checkpoint(s)) is not None and (cp.file, cp.pos) >= end)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_purged_binlog_is_a_clear_error(cdc_settings):
    s = cdc_settings
    db = new_db(s)
    CheckpointStore(state_dir(s)).save(Checkpoint("mysql-bin.000000", 4, None, None, {db: STREAMING}))
    service = CaptureService(s, CaptureOptions(once=True, databases=fixed_source(s, {db})))
    with pytest.raises(BinlogPurged, match=r"mysql-bin\.000000.*dw cdc resnapshot"):
        service.run()
