"""Capture throughput: binlog -> acknowledged Kafka messages, next to the raw decode rates of the same binlog.

Reference points: `mariadb-binlog -v` (the C decoder, the physical limit) and mysql-replication's bare decode
loop (the pure-Python library); `run_cdc_bench` returns all rates and their ratios.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from pymysqlreplication.row_event import WriteRowsEvent

from ..db import connect
from ..identifiers import quote_ident
from ..settings import Settings
from .binlog_reader import ROWS_EVENTS, TABLE_MAP, PatchedBinLogStreamReader
from .capture import CaptureOptions, CaptureService
from .checkpoint import STREAMING, Checkpoint, CheckpointStore, Position, state_dir
from .envelope import dumps
from .row_decoder import compile_decoder, iter_rows, specs_from_table_map
from .sources import fixed_source

TABLE_DDL = """CREATE TABLE orders (
  id BIGINT PRIMARY KEY, customer_id INT NOT NULL, amount DECIMAL(12,2) NOT NULL,
  status ENUM('new','paid','shipped','cancelled') NOT NULL, note VARCHAR(100), created DATETIME(6) NOT NULL,
  attrs JSON)"""


def _position(settings: Settings) -> Position:
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        f, p = cur.fetchone()[:2]
    return Position.of(f, int(p))


def _load(settings: Settings, db: str, rows: int, batch: int = 1000) -> tuple[Position, Position]:
    rng = random.Random(7)
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {quote_ident(db)}")
        cur.execute(f"USE {quote_ident(db)}")
        cur.execute(TABLE_DDL)
    start = _position(settings)
    with connect(settings, database=db, autocommit=False) as conn, conn.cursor() as cur:
        for lo in range(0, rows, batch):
            values = [(i, rng.randint(1, 10_000), f"{rng.randint(0, 10**8) / 100:.2f}",
                       rng.choice(("new", "paid", "shipped")), f"note {i} ☕", "2026-01-02 03:04:05.123456",
                       '{"channel": "web", "n": %d}' % i) for i in range(lo, min(lo + batch, rows))]
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s, %s)", values)
            conn.commit()
    return start, _position(settings)


def _mariadb_binlog_rate(settings: Settings, start: Position, end: Position) -> dict[str, Any]:
    exe = shutil.which("mariadb-binlog") or shutil.which("mysqlbinlog")
    if not exe or start.file != end.file:
        return {"rows_per_s": None, "note": "mariadb-binlog missing or the load spans binlog files"}
    m = settings.mariadb
    cmd = [exe, "--read-from-remote-server", f"--host={m.host}", f"--port={m.port}", f"--user={m.admin_user}",
           f"--password={m.admin_password}", "--base64-output=DECODE-ROWS", "-v",
           f"--start-position={start.pos}", f"--stop-position={end.pos}", start.file]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    rows = sum(1 for line in proc.stdout if line.startswith(b"### INSERT"))
    proc.wait()
    dt = time.perf_counter() - t0
    return {"rows": rows, "seconds": round(dt, 3), "rows_per_s": round(rows / dt)}


def _reader(settings: Settings, start: Position, **kw: Any) -> PatchedBinLogStreamReader:
    m = settings.mariadb
    return PatchedBinLogStreamReader(
        {"host": m.host, "port": m.port, "user": m.cdc_user, "password": m.cdc_password},
        server_id=random.randint(1 << 20, 1 << 30), is_mariadb=True, log_file=start.file, log_pos=start.pos,
        resume_stream=True, blocking=False, enable_logging=False, **kw)


def _library_rate(settings: Settings, db: str, start: Position, end: Position) -> dict[str, Any]:
    r = _reader(settings, start, only_events=[WriteRowsEvent], only_schemas=[db], end_log_pos=end.pos)
    t0 = time.perf_counter()
    rows = 0
    for ev in r:
        rows += len(ev.rows)
    r.close()
    dt = time.perf_counter() - t0
    return {"rows": rows, "seconds": round(dt, 3), "rows_per_s": round(rows / dt)}


def _decode_only_rate(settings: Settings, db: str, start: Position, end: Position) -> dict[str, Any]:
    """Our decoder plus JSON envelope, without Kafka: what the Python side alone can do."""
    r = _reader(settings, start, slave_heartbeat=0.5)
    t0 = time.perf_counter()
    rows, decoders = 0, {}
    for ev in r.raw_events():
        if ev.type == TABLE_MAP:
            tm = r.parse_table_map(ev)
            decoders[tm.table_id] = compile_decoder(tm.schema, tm.table, *specs_from_table_map(tm))
        elif ev.type in ROWS_EVENTS:
            dec = decoders.get(int.from_bytes(ev.data[ev.body_start:ev.body_start + 6], "little"))
            if dec is not None and dec.database == db:
                for row in iter_rows(ev.data, ev.body_start, ev.body_end, dec, False, ev.type >= 30):
                    dumps({"before": None, "after": row, "op": "c"})
                    rows += 1
        if Position.of(r.log_file or start.file, ev.next_pos or 0) >= end and ev.next_pos:
            break
    r.close()
    dt = time.perf_counter() - t0
    return {"rows": rows, "seconds": round(dt, 3), "rows_per_s": round(rows / dt)}


def _end_to_end_rate(settings: Settings, db: str, start: Position, rows: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="dw-cdc-bench-"))
    bench = replace(settings, home=home, kafka=replace(settings.kafka, topic_prefix=f"bench{uuid.uuid4().hex[:6]}"))
    # Start streaming at the load's first event with the database already captured: no snapshot in the figure.
    CheckpointStore(state_dir(bench)).save(Checkpoint(start.file, start.pos, None, None, {db: STREAMING}))
    service = CaptureService(bench, CaptureOptions(once=True, databases=fixed_source(bench, {db}),
                                                   stats_interval_s=5, heartbeat_interval_ms=5000))
    t0 = time.perf_counter()
    stats = service.run()  # returns after the final flush: every message acknowledged
    dt = time.perf_counter() - t0
    shutil.rmtree(home, ignore_errors=True)
    return {"rows": stats.events, "seconds": round(dt, 3), "rows_per_s": round(stats.events / dt),
            "expected_rows": rows, "topic_prefix": bench.kafka.topic_prefix}


def run_cdc_bench(settings: Settings, rows: int = 200_000) -> dict[str, Any]:
    """Load `rows` inserts, then time each reader over the same binlog range; returns rates and ratios."""
    db = f"cdcbench_{uuid.uuid4().hex[:8]}"
    start, end = _load(settings, db, rows)
    try:
        result: dict[str, Any] = {"rows": rows, "binlog": f"{start} .. {end}"}
        result["mariadb_binlog"] = _mariadb_binlog_rate(settings, start, end)
        result["mysql_replication"] = _library_rate(settings, db, start, end)
        result["decode_only"] = _decode_only_rate(settings, db, start, end)
        result["end_to_end"] = _end_to_end_rate(settings, db, start, rows)
        e2e = result["end_to_end"]["rows_per_s"]
        for name in ("mariadb_binlog", "mysql_replication", "decode_only"):
            ref = result[name].get("rows_per_s")
            result[f"end_to_end_vs_{name}"] = round(e2e / ref, 3) if ref else None
        result["target_rows_per_s"] = 40_000
        result["meets_target"] = e2e >= 40_000
        return result
    finally:
        with connect(settings) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)}")
