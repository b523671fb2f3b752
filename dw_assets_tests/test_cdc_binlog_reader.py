"""The mysql-replication 1.0.17 defects fixed in `binlog_reader`, and the value rendering of every MariaDB type.

Each defect test fails against the unpatched library: (a) malformed GTID dump request, (b) ignored file/pos with
is_mariadb, (c) negative fractional TIME, (d) silent reconnect.
"""
from __future__ import annotations

import struct
import time

import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent

from dw_assets.cdc.binlog_reader import ROWS_EVENTS, TABLE_MAP, PatchedBinLogStreamReader, StreamDisconnected, decode_time2
from dw_assets.cdc.envelope import SnapshotColumn, text_renderer
from dw_assets.cdc.row_decoder import compile_decoder, iter_rows, specs_from_table_map
from dw_assets.cdc.snapshot import read_chunk, snapshot_connection
from dw_assets.db import connect
from dw_assets_tests.test_cdc_support import master_position, new_db, sql  # noqa: F401


def _conn_settings(s):
    m = s.mariadb
    return {"host": m.host, "port": m.port, "user": m.cdc_user, "password": m.cdc_password}


def _reader(s, **kw):
    return PatchedBinLogStreamReader(_conn_settings(s), server_id=900_000 + int(time.time() * 1000) % 100_000,
                                     is_mariadb=True, enable_logging=False, **kw)


def test_a_gtid_dump_request_length_matches_payload(stack_settings):
    r = _reader(stack_settings, auto_position="0-1-1", blocking=False)
    packet = r.dump_request()
    declared = struct.unpack("<I", packet[:4])[0] & 0xFFFFFF
    assert declared == len(packet) - 4
    # The library's own request for the same settings declares fewer bytes than it sends (the defect).
    lib = BinLogStreamReader(_conn_settings(stack_settings), server_id=1, is_mariadb=True, auto_position="0-1-1")

    class Cur:
        def execute(self, *a):
            pass

        def close(self):
            pass

    lib._stream_connection = type("C", (), {"cursor": lambda self: Cur()})()
    lib_packet = lib._BinLogStreamReader__set_mariadb_settings()
    assert struct.unpack("<I", lib_packet[:4])[0] & 0xFFFFFF != len(lib_packet) - 4


def test_a_gtid_mode_streams_from_the_gtid(stack_settings):
    s = stack_settings
    db = new_db(s)
    sql(s, db, "CREATE TABLE t (id INT PRIMARY KEY)")
    with connect(s) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@gtid_binlog_pos")
        gtid = cur.fetchone()[0]
    for i in range(50):
        sql(s, db, ("INSERT INTO t VALUES (%s)", (i,)))
    r = _reader(s, auto_position=gtid, blocking=False, only_events=[WriteRowsEvent], only_schemas=[db])
    ids = [row["values"]["id"] for ev in r for row in ev.rows]
    r.close()
    assert ids == list(range(50))


def test_b_explicit_position_is_honoured_with_is_mariadb(stack_settings):
    s = stack_settings
    db = new_db(s)
    sql(s, db, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    file, pos = master_position(s)
    sql(s, db, "INSERT INTO t VALUES (2)")
    r = _reader(s, log_file=file, log_pos=pos, resume_stream=True, blocking=False,
                only_events=[WriteRowsEvent], only_schemas=[db])
    ids = [row["values"]["id"] for ev in r for row in ev.rows]
    r.close()
    assert ids == [2]  # unpatched: starts at the oldest binlog and also returns 1


@pytest.mark.parametrize(("text", "fsp"), [("-00:00:01.250", 3), ("-838:59:59.000000", 6), ("-00:00:00.5", 1),
                                          ("12:34:56.000001", 6), ("-01:02:03", 0)])
def test_c_negative_fractional_time(stack_settings, text, fsp):
    s = stack_settings
    db = new_db(s)
    sql(s, db, f"CREATE TABLE t (id INT PRIMARY KEY, v TIME({int(fsp)}))")  # a type's precision
    file, pos = master_position(s)
    sql(s, db, ("INSERT INTO t VALUES (1, %s)", (text,)))
    r = _reader(s, log_file=file, log_pos=pos, resume_stream=True, blocking=False, only_events=[WriteRowsEvent],
                only_schemas=[db])
    value = [row["values"]["v"] for ev in r for row in ev.rows][0]
    r.close()
    sign = -1 if text.startswith("-") else 1
    h, m, sec = text.lstrip("-").split(":")
    expected = sign * (int(h) * 3600 + int(m) * 60 + float(sec))
    assert value.total_seconds() == pytest.approx(expected, abs=1e-6)
    assert decode_time2(bytes.fromhex("7ffffe"), 0).total_seconds() == -2  # the raw codec on its own


def test_d_no_silent_reconnect(stack_settings):
    s = stack_settings
    file, pos = master_position(s)
    r = _reader(s, log_file=file, log_pos=pos, resume_stream=True, blocking=True, slave_heartbeat=0.2)
    events = r.raw_events()
    next(events)  # connected: the fake rotate event
    thread_id = r._stream_connection.thread_id()
    with connect(s) as conn, conn.cursor() as cur:
        cur.execute("KILL %s", (thread_id,))
    with pytest.raises(StreamDisconnected):
        for _ in events:
            pass
    # The library path (fetchone) must not reconnect behind our back either.
    r2 = _reader(s, log_file=file, log_pos=pos, resume_stream=True, blocking=True, slave_heartbeat=0.2)
    r2.fetchone()
    with connect(s) as conn, conn.cursor() as cur:
        cur.execute("KILL %s", (r2._stream_connection.thread_id(),))
    with pytest.raises(StreamDisconnected):
        while True:
            r2.fetchone()


ALL_TYPES = """CREATE TABLE ty (id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT,
 miu MEDIUMINT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED, d DECIMAL(10,2), d2 DECIMAL(30,12), d3 DECIMAL(5,0), f FLOAT,
 db DOUBLE, dt DATETIME, dt6 DATETIME(6), dt3 DATETIME(3), ts TIMESTAMP(6) NULL, dte DATE, tm TIME, tm3 TIME(3),
 tm6 TIME(6), y YEAR, e ENUM('a','b','c'), st SET('x','y','z'), b1 BIT(1), b10 BIT(10), bl BLOB, tx TEXT, j JSON,
 vc VARCHAR(300), ch CHAR(5), vb VARBINARY(10), nn INT NOT NULL DEFAULT 0)"""
ROW1 = (1, -5, 250, -30000, -8000000, 16000000, -9000000000000000000, 18000000000000000000, "-12345678.91",
        "123456789012345678.123456789012", "-99999", 3.14159265, 0.1 + 0.2, "2024-02-29 23:59:59",
        "2024-01-01 00:00:00.123456", "1999-12-31 12:00:00.5", "2024-06-01 12:00:00.000001", "2024-03-01",
        "-838:59:59", "-00:00:01.250", "12:34:56.000001", 2024, "b", "x,z", 1, 0b1010000001, b"\x00\xff\x10",
        "héllo 🎉", '{"a": [1, 2.5, "x"]}', "v" * 300, "ab", b"\x01\x02", 7)
ROW2 = (2, None, None, None, None, None, None, None, "0.50", "-0.000000000001", "0", None, None, None, None, None,
        None, None, "00:00:00", None, "-00:00:00.000001", None, None, "", 0, 0, b"", "", None, "", "", b"", 0)
EXPECTED1 = {"id": 1, "ti": -5, "tu": 250, "si": -30000, "mi": -8000000, "miu": 16000000, "bi": -9000000000000000000,
             "biu": 18000000000000000000, "d": "-12345678.91", "d2": "123456789012345678.123456789012", "d3": "-99999",
             "f": 3.1415927, "db": 0.30000000000000004, "dt": "2024-02-29T23:59:59",
             "dt6": "2024-01-01T00:00:00.123456", "dt3": "1999-12-31T12:00:00.500000",
             "ts": "2024-06-01T12:00:00.000001Z", "dte": "2024-03-01", "tm": "-838:59:59",
             "tm3": "-00:00:01.250000", "tm6": "12:34:56.000001", "y": 2024, "e": "b", "st": "x,z", "b1": True,
             "b10": "gQI=", "bl": "AP8Q", "tx": "héllo 🎉", "j": '{"a": [1, 2.5, "x"]}', "vc": "v" * 300, "ch": "ab",
             "vb": "AQI=", "nn": 7}


def _streamed_and_snapshot(s, db: str, table: str, *statements) -> tuple[list[dict], list[dict]]:
    """Run `statements` in `db`, then decode their row events from the binlog and read `table` by snapshot."""
    file, pos = master_position(s)
    sql(s, db, "SET time_zone = '+00:00'", *statements)
    end_file, end_pos = master_position(s)
    r = _reader(s, log_file=file, log_pos=pos, resume_stream=True, blocking=False, slave_heartbeat=0.2)
    decoders, streamed = {}, []
    for ev in r.raw_events():
        if ev.type == TABLE_MAP:
            tm = r.parse_table_map(ev)
            decoders[tm.table_id] = compile_decoder(tm.schema, tm.table, *specs_from_table_map(tm))
        elif ev.type in ROWS_EVENTS:
            dec = decoders.get(int.from_bytes(ev.data[ev.body_start:ev.body_start + 6], "little"))
            if dec is not None and dec.database == db:
                streamed.extend(iter_rows(ev.data, ev.body_start, ev.body_end, dec, False, ev.type >= 30))
        if (ev.next_pos >= end_pos and r.log_file == end_file) or ev.next_pos >= end_pos:
            break
    r.close()
    conn = snapshot_connection(s)
    try:
        _, _, layout, raw = read_chunk(conn, db, table, None, 100)
    finally:
        conn.close()
    names = [c.name for c in layout.columns]
    snap = [{n: (None if v is None else f(v)) for n, f, v in zip(names, layout.renderers, row)} for row in raw]
    return streamed, snap


def test_every_type_renders_the_same_from_binlog_and_snapshot(stack_settings):
    s = stack_settings
    db = new_db(s)
    sql(s, db, ALL_TYPES)
    streamed, snap = _streamed_and_snapshot(
        s, db, "ty", ("INSERT INTO ty VALUES (" + ",".join(["%s"] * 33) + ")", ROW1),
        ("INSERT INTO ty VALUES (" + ",".join(["%s"] * 33) + ")", ROW2))
    assert streamed[0] == EXPECTED1
    assert snap == streamed


GEOMETRIES = {  # column type -> WKT inserted
    "POINT": "POINT(13.4 52.52)", "LINESTRING": "LINESTRING(0 0,1 1,2 0.5)",
    "POLYGON": "POLYGON((0 0,4 0,4 4,0 4,0 0),(1 1,2 1,2 2,1 1))", "MULTIPOINT": "MULTIPOINT(0 0,1 2)",
    "MULTILINESTRING": "MULTILINESTRING((0 0,1 1),(2 2,3 3))", "MULTIPOLYGON": "MULTIPOLYGON(((0 0,1 0,1 1,0 0)))",
    "GEOMETRYCOLLECTION": "GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,1.5 1))", "GEOMETRY": "POINT(-0.5 1e-7)",
}


def test_spatial_types_render_as_debezium_geometry_from_binlog_and_snapshot(stack_settings):
    """Every spatial type: {"wkb": base64 WKB, "srid": SRID or null}, identical on both paths, and the WKB is
    exactly what MariaDB's ST_AsWKB gives (WKT round-trips through model.geometry.wkt)."""
    from base64 import b64decode

    from dw_assets.model.geometry import wkt

    s = stack_settings
    db = new_db(s)
    cols = list(GEOMETRIES)
    sql(s, db, "CREATE TABLE geo (id INT PRIMARY KEY, " + ", ".join(f"g_{t.lower()} {t} NULL" for t in cols) + ")")
    srids = (4326, 0, 3857, 0, 0, 4326, 0, 0)
    values = ", ".join("ST_GeomFromText(%s, %s)" for _ in srids)
    streamed, snap = _streamed_and_snapshot(
        s, db, "geo", (f"INSERT INTO geo VALUES (1, {values})", [v for pair in zip(GEOMETRIES.values(), srids) for v in pair]),
        "INSERT INTO geo (id) VALUES (2)")
    assert snap == streamed
    row, empty = streamed
    assert row["g_point"]["srid"] == 4326 and row["g_linestring"]["srid"] is None
    assert all(empty[f"g_{t.lower()}"] is None for t in cols)
    with connect(s, database=db) as conn, conn.cursor() as cur:
        cur.execute("SELECT " + ", ".join(f"ST_AsWKB(g_{t.lower()}), ST_AsText(g_{t.lower()})" for t in cols)
                    + " FROM geo WHERE id = 1")
        server = cur.fetchone()
    for i, t in enumerate(cols):
        wkb = b64decode(row[f"g_{t.lower()}"]["wkb"])
        assert wkb == server[2 * i], t
        assert wkt({"wkb": wkb, "srid": None}) == server[2 * i + 1], t


def test_zero_dates_render_null():
    col = SnapshotColumn("d", "datetime", "datetime", 0, False)
    assert text_renderer(col)("0000-00-00 00:00:00") is None
