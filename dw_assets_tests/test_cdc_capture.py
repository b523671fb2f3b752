"""Acceptance tests of capture against the real MariaDB and Tansu: envelope, values, order, DDL, truncate, heartbeats."""
from __future__ import annotations

from collections import defaultdict

import orjson
import pytest

from dw_assets.cdc.checkpoint import CheckpointStore, state_dir
from dw_assets.contracts import data_topic, heartbeat_topic, offsets_topic, schema_change_topic
from dw_assets_tests.test_cdc_support import (  # noqa: F401 - fixtures
    apply_changes, capture_once, cdc_settings, consume, new_db, sql, table_rows,
)

ORDERS = """CREATE TABLE orders (
    id BIGINT PRIMARY KEY,
    amount DECIMAL(12,2) NOT NULL,
    status ENUM('new','paid','shipped') NOT NULL,
    attrs JSON,
    note TEXT,
    updated DATETIME(6)
)"""


def _envelope_ok(v: dict) -> None:
    assert set(v) == {"before", "after", "source", "op", "ts_ms", "transaction"}
    src = v["source"]
    for k in ("version", "connector", "name", "ts_ms", "snapshot", "db", "table", "server_id", "gtid", "file", "pos", "row"):
        assert k in src, k
    assert src["connector"] == "mariadb"


def test_changes_in_two_clients(cdc_settings):
    s = cdc_settings
    a, b = new_db(s, "cdca"), new_db(s, "cdcb")
    for db in (a, b):
        sql(s, db, ORDERS, "CREATE TABLE order_lines (order_id BIGINT, n INT, sku VARCHAR(20), PRIMARY KEY (order_id, n))")
    capture_once(s, [a, b])  # initial snapshot of the empty tables; later changes are streamed

    sql(s, a, ("INSERT INTO orders VALUES (%s,%s,%s,%s,%s,%s),(%s,%s,%s,%s,%s,%s),(%s,%s,%s,%s,%s,%s)",
               (1, "10.10", "new", '{"k": 1}', "plain", "2024-01-01 00:00:00.000001",
                2, "0.05", "new", None, None, None,
                3, "-99999.99", "paid", '{"emoji": "😀"}', "naïve ☕", "2024-12-31 23:59:59.999999")),
        ("INSERT INTO order_lines VALUES (1,1,'A'),(1,2,'B')", None), autocommit=False)
    sql(s, b, ("INSERT INTO orders VALUES (7,'1.00','new',NULL,'b',NULL),(8,'2.00','new',NULL,'b',NULL)", None),
        autocommit=False)
    sql(s, a, "UPDATE orders SET amount = amount + 0.01, status = 'shipped', attrs = '{\"k\": 2}', note = '🎉 done' WHERE id = 1",
        "DELETE FROM orders WHERE id = 2",
        "INSERT INTO orders VALUES (4, '123456789.01', 'new', '[]', '', NULL)",
        "UPDATE order_lines SET sku = 'C' WHERE order_id = 1 AND n = 2", autocommit=False)
    sql(s, b, "UPDATE orders SET status = 'paid' WHERE id = 7", "DELETE FROM orders WHERE id = 8", autocommit=False)
    sql(s, b, "TRUNCATE TABLE order_lines")
    sql(s, b, "INSERT INTO order_lines VALUES (7, 1, 'Z')")

    service = capture_once(s, [a, b])
    prefix = s.kafka.topic_prefix
    msgs = consume(s, [data_topic(prefix, db, t) for db in (a, b) for t in ("orders", "order_lines")])
    for m in msgs:
        if m.value is not None:
            _envelope_ok(m.value)

    # Every change exactly once, in commit order per key.
    per_key = defaultdict(list)
    for m in sorted(msgs, key=lambda m: (m.topic, m.partition, m.offset)):
        per_key[(m.topic, orjson.dumps(m.key))].append(m.op)
    oa = data_topic(prefix, a, "orders")
    assert per_key[(oa, b'{"id":1}')] == ["c", "u"]
    assert per_key[(oa, b'{"id":2}')] == ["c", "d", None]  # delete, then tombstone
    assert per_key[(oa, b'{"id":3}')] == ["c"]
    assert per_key[(oa, b'{"id":4}')] == ["c"]
    ob = data_topic(prefix, b, "orders")
    assert per_key[(ob, b'{"id":7}')] == ["c", "u"]
    assert per_key[(ob, b'{"id":8}')] == ["c", "d", None]
    la = data_topic(prefix, a, "order_lines")
    assert per_key[(la, b'{"order_id":1,"n":2}')] == ["c", "u"]

    # Exact values.
    by = {(m.topic, orjson.dumps(m.key), m.op): m.value for m in msgs if m.value is not None}
    u = by[(oa, b'{"id":1}', "u")]
    assert u["before"] == {"id": 1, "amount": "10.10", "status": "new", "attrs": '{"k": 1}', "note": "plain",
                           "updated": "2024-01-01T00:00:00.000001"}
    assert u["after"] == {"id": 1, "amount": "10.11", "status": "shipped", "attrs": '{"k": 2}', "note": "🎉 done",
                          "updated": "2024-01-01T00:00:00.000001"}
    assert u["source"]["db"] == a and u["source"]["table"] == "orders" and u["source"]["snapshot"] == "false"
    assert u["transaction"]["id"] == u["source"]["gtid"] and u["source"]["gtid"].count("-") == 2
    c3 = by[(oa, b'{"id":3}', "c")]["after"]
    assert c3 == {"id": 3, "amount": "-99999.99", "status": "paid", "attrs": '{"emoji": "😀"}', "note": "naïve ☕",
                  "updated": "2024-12-31T23:59:59.999999"}
    d2 = by[(oa, b'{"id":2}', "d")]
    assert d2["after"] is None and d2["before"]["amount"] == "0.05" and d2["before"]["attrs"] is None
    # One multi-statement transaction: one GTID, increasing total_order.
    tx = sorted((m.value["transaction"]["total_order"], m.value["op"]) for m in msgs
                if m.value and m.value["source"]["gtid"] == u["source"]["gtid"])
    assert [op for _, op in tx] == ["u", "d", "c", "u"]

    # Truncate: op t on every partition of the table's topic, ordered before the later insert.
    lb = data_topic(prefix, b, "order_lines")
    truncates = [m for m in msgs if m.topic == lb and m.op == "t"]
    assert len(truncates) == s.kafka.partitions and all(m.key is None for m in truncates)
    final = apply_changes(msgs)
    assert final[lb] == {b'{"order_id":7,"n":1}': {"order_id": 7, "n": 1, "sku": "Z"}}
    assert {k: v["amount"] for k, v in final[oa].items()} == {b'{"id":1}': "10.11", b'{"id":3}': "-99999.99",
                                                             b'{"id":4}': "123456789.01"}
    assert len(table_rows(s, a, "orders")) == 3

    # The truncate also reached the schema-change topic; the checkpoint moved; heartbeats were sent.
    ddl = consume(s, [schema_change_topic(prefix)])
    assert any(m.value["ddl"].startswith("TRUNCATE") and m.value["databaseName"] == b and m.value["table"] == "order_lines"
               for m in ddl)
    assert service.stats.events >= 14
    cp = CheckpointStore(state_dir(s)).load()
    assert cp is not None and cp.databases == {a: "streaming", b: "streaming"}
    assert consume(s, [heartbeat_topic(prefix)]), "no heartbeat"
    offsets = consume(s, [offsets_topic(prefix)])
    assert offsets and offsets[-1].value["pos"] == cp.pos


def test_schema_changes_mid_stream(cdc_settings):
    s = cdc_settings
    db = new_db(s)
    sql(s, db, "CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10))")
    capture_once(s, [db])
    sql(s, db, "INSERT INTO t VALUES (1, 'x')")
    sql(s, db, "ALTER TABLE t ADD COLUMN b INT DEFAULT 5")
    sql(s, db, "INSERT INTO t VALUES (2, 'y', 6)")
    sql(s, db, "ALTER TABLE t RENAME COLUMN a TO a2")
    sql(s, db, "UPDATE t SET a2 = 'z' WHERE id = 1")
    capture_once(s, [db])
    prefix = s.kafka.topic_prefix
    rows = [m.value for m in sorted(consume(s, [data_topic(prefix, db, "t")]), key=lambda m: m.value["source"]["pos"])]
    assert [r["after"] for r in rows] == [
        {"id": 1, "a": "x"},
        {"id": 2, "a": "y", "b": 6},
        {"id": 1, "a2": "z", "b": 5},
    ]
    assert rows[2]["before"] == {"id": 1, "a2": "x", "b": 5}
    ddl = [m.value for m in consume(s, [schema_change_topic(prefix)]) if m.value["databaseName"] == db]
    texts = [d["ddl"] for d in ddl]
    assert any("ADD COLUMN b" in t for t in texts) and any("RENAME COLUMN a TO a2" in t for t in texts)
    assert all(d["table"] == "t" for d in ddl if "ALTER" in d["ddl"])


def test_table_without_primary_key_has_null_keys(cdc_settings, caplog):
    s = cdc_settings
    db = new_db(s)
    sql(s, db, "CREATE TABLE log (msg VARCHAR(20))", "INSERT INTO log VALUES ('before')")
    capture_once(s, [db])
    sql(s, db, "INSERT INTO log VALUES ('after1'), ('after2')")
    capture_once(s, [db])
    msgs = consume(s, [data_topic(s.kafka.topic_prefix, db, "log")])
    assert [(m.key, m.partition, m.op, m.value["after"]["msg"]) for m in msgs] == [
        (None, 0, "r", "before"), (None, 0, "c", "after1"), (None, 0, "c", "after2")]
    assert "has no primary key" in caplog.text


def test_never_captures_staging_or_control(cdc_settings):
    from dw_assets.cdc.sources import capturable

    assert not capturable("acme__staging", cdc_settings)
    assert not capturable(cdc_settings.control_db, cdc_settings)
    assert not capturable("mysql", cdc_settings)
    assert capturable("acme", cdc_settings)


@pytest.mark.parametrize("setting", ["binlog_row_metadata", "binlog_format"])
def test_preflight_refuses_wrong_binlog_settings(setting):
    from dw_assets.cdc.preflight import PreflightError, check_server

    good = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}
    bad = dict(good, **{setting: "MINIMAL" if setting == "binlog_row_metadata" else "MIXED"})

    class Cur:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def execute(self, *a):
            pass

        def fetchall(self):
            return list(bad.items())

    class Conn:
        def cursor(self):
            return Cur()

    with pytest.raises(PreflightError, match=setting):
        check_server(Conn())
