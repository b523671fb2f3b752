"""Realistic Debezium MariaDB change events for tests and the landing benchmark, produced with confluent-kafka.

Mirrors what the CDC service emits (key = JSON of the primary key, value = envelope, a delete followed by a
tombstone), so landing can be exercised without running capture.
"""
from __future__ import annotations

import json
from typing import Iterator

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ..contracts import data_topic
from ..settings import Settings


def envelope(db: str, table: str, op: str, row_id: int, *, ts_ms: int, pos: int, gtid_seq: int,
             snapshot: str = "false") -> tuple[bytes, bytes]:
    """(key, value) of one change event on a typical order-like row."""
    row = {"id": row_id, "customer_id": row_id % 977, "status": "shipped" if row_id % 3 else "open",
           "amount": f"{(row_id * 37) % 100000 / 100:.2f}", "note": f"order {row_id} for customer {row_id % 977}",
           "updated_at": ts_ms * 1000}
    before = None if op in ("c", "r") else {**row, "status": "open"}
    after = None if op == "d" else row
    value = {
        "before": before,
        "after": after,
        "source": {"version": "2.7.0.Final", "connector": "mysql", "name": "dw", "ts_ms": ts_ms,
                   "snapshot": snapshot, "db": db, "sequence": None, "table": table, "server_id": 1,
                   "gtid": f"0-1-{gtid_seq}", "file": "dw-bin.000003", "pos": pos, "row": 0, "thread": 12,
                   "query": None},
        "op": op,
        "ts_ms": ts_ms + 3,
        "transaction": {"id": f"0-1-{gtid_seq}", "total_order": 1, "data_collection_order": 1},
    }
    return json.dumps({"id": row_id}).encode(), json.dumps(value, separators=(",", ":")).encode()


def change_stream(db: str, table: str, n: int, *, start_id: int = 1, base_ts_ms: int = 1_760_000_000_000
                  ) -> Iterator[tuple[bytes, bytes | None]]:
    """n messages: mostly creates and updates, every 10th a delete followed by its tombstone."""
    emitted = 0
    i = start_id
    while emitted < n:
        op = "d" if i % 10 == 0 else ("u" if i % 4 == 0 else "c")
        key, value = envelope(db, table, op, i, ts_ms=base_ts_ms + i, pos=4 + 120 * i, gtid_seq=i)
        yield key, value
        emitted += 1
        if op == "d" and emitted < n:
            yield key, None  # Debezium's tombstone, for log compaction
            emitted += 1
        i += 1


def create_topics(settings: Settings, topics: list[str], partitions: int | None = None) -> None:
    admin = AdminClient(settings.kafka.client_config())
    n = partitions or settings.kafka.partitions
    futures = admin.create_topics([NewTopic(t, n, settings.kafka.replication_factor) for t in topics])
    for t, f in futures.items():
        try:
            f.result(timeout=30)
        except Exception as e:  # noqa: BLE001 - re-runs of a benchmark reuse topics
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise


def producer(settings: Settings, linger_ms: int = 20) -> Producer:
    # Linger so that batches hold many messages: the case where Tansu's ListOffsets answers are wrong.
    return Producer({**settings.kafka.client_config(), "linger.ms": linger_ms, "enable.idempotence": True,
                     "acks": "all", "batch.num.messages": 10_000, "queue.buffering.max.messages": 1_000_000,
                     "compression.type": "lz4"})


def produce_changes(settings: Settings, db: str, tables: list[str], per_table: int, *,
                    start_id: int = 1, linger_ms: int = 20) -> dict[str, int]:
    """Produce `per_table` messages to each `<prefix>.<db>.<table>` (created if needed); topic -> count."""
    topics = {t: data_topic(settings.kafka.topic_prefix, db, t) for t in tables}
    create_topics(settings, list(topics.values()))
    p = producer(settings, linger_ms)
    counts: dict[str, int] = {}
    for table, topic in topics.items():
        n = 0
        for key, value in change_stream(db, table, per_table, start_id=start_id):
            while True:
                try:
                    p.produce(topic, key=key, value=value)
                    break
                except BufferError:
                    p.poll(0.05)
            n += 1
        counts[topic] = n
    left = p.flush(60)
    if left:
        raise RuntimeError(f"{left} sample events not delivered")
    return counts
