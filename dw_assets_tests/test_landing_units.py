"""Landing pieces without a broker: envelope decoding and dead letters, flush cuts, topic ownership, run planning."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from confluent_kafka import Message

from dw_assets.contracts import LANDING_SCHEMA
from dw_assets.landing.client_topics import client_topics, topics_by_client
from dw_assets.landing.envelope_rows import decode_messages
from dw_assets.landing.flush import FlushPolicy, message_sizes
from dw_assets.landing.lag import ClientLag, PartitionLag
from dw_assets.landing.landing_file import encode_landing_file, end_offset_of
from dw_assets.landing.run_planning import LagThresholds, landing_shard, plan_landing_runs
from dw_assets.landing.sample_events import envelope


def _msg(offset: int, value: bytes | None, key: bytes | None = b'{"id": 1}', topic: str = "dw.c1.orders") -> Message:
    return Message(topic=topic, partition=2, offset=offset, key=key, value=value, timestamp=(1, 1_700_000_000_000 + offset))


def test_envelopes_become_landing_rows_with_raw_json_and_source_fields():
    k, v = envelope("c1", "orders", "u", 7, ts_ms=1_760_000_000_007, pos=844, gtid_seq=7)
    rows = decode_messages([_msg(10, v, k), _msg(11, None, k)])
    assert rows.tombstones == 1 and not rows.bad
    assert rows.batch.schema == LANDING_SCHEMA
    r = rows.batch.to_pylist()[0]
    src = json.loads(v)
    assert json.loads(r["after"]) == src["after"] and json.loads(r["before"]) == src["before"]
    assert r["after"] == json.dumps(src["after"], separators=(",", ":"))  # the producer's text, not re-encoded
    assert (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"], r["kafka_timestamp_ms"]) == \
        ("dw.c1.orders", 2, 10, 1_700_000_000_010)
    assert (r["op"], r["key"], r["source_db"], r["source_table"], r["source_ts_ms"]) == \
        ("u", '{"id": 7}', "c1", "orders", 1_760_000_000_007)
    assert (r["source_gtid"], r["source_file"], r["source_pos"], r["source_row"], r["transaction_id"]) == \
        ("0-1-7", "dw-bin.000003", 844, 0, "0-1-7")


def test_bad_messages_are_separated_with_reasons_and_good_ones_kept():
    good_k, good_v = envelope("c1", "orders", "c", 1, ts_ms=1, pos=4, gtid_seq=1)
    create_without_after = json.loads(good_v)
    create_without_after["after"] = None
    msgs = [
        _msg(0, good_v, good_k),
        _msg(1, b"{not json"),
        _msg(2, json.dumps({"op": "c", "after": {"id": 1}}).encode()),  # no source
        _msg(3, b"\x00\x00\x00\x00\x01\x02avro"),  # foreign format (Confluent Avro wire format)
        _msg(4, json.dumps(create_without_after).encode()),
        _msg(5, good_v, b"\xff\xfe"),  # key is not text
        _msg(6, json.dumps({"op": "x", "source": {"ts_ms": 1, "db": "c1"}}).encode()),
    ]
    rows = decode_messages(msgs)
    assert rows.batch.column("kafka_offset").to_pylist() == [0]
    reasons = {b.message.offset(): b.error for b in rows.bad}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert "invalid JSON" in reasons[1] and "source" in reasons[2] and "without an `after`" in reasons[4]
    assert "UTF-8" in reasons[5]


def test_schema_wrapped_json_converter_messages_are_unwrapped():
    k, v = envelope("c1", "orders", "d", 3, ts_ms=1, pos=4, gtid_seq=1)
    wrapped_v = b'{"schema":{"type":"struct"},"payload":' + v + b"}"
    wrapped_k = b'{"schema":{"type":"struct"},"payload":{"id":3}}'
    rows = decode_messages([_msg(0, wrapped_v, wrapped_k)])
    assert not rows.bad
    r = rows.batch.to_pylist()[0]
    assert r["op"] == "d" and r["after"] is None and json.loads(r["before"])["id"] == 3 and r["key"] == '{"id":3}'


def test_size_cuts_fall_on_the_same_offsets_whatever_the_batches():
    policy = FlushPolicy(flush_records=5, flush_bytes=1000)
    sizes = np.array([100] * 23)

    def cuts(batch_sizes: list[int]) -> list[int]:
        out, n, b, pos = [], 0, 0, 0
        for bs in batch_sizes:
            chunk = sizes[pos:pos + bs]
            i = 0
            while i < len(chunk):
                take, full = policy.take(n, b, chunk[i:])
                n, b, i = n + take, b + int(chunk[i:i + take].sum()), i + take
                if full:
                    out.append(pos + i - 1)
                    n = b = 0
            pos += bs
        return out

    assert cuts([23]) == cuts([1] * 23) == cuts([7, 3, 13]) == [4, 9, 14, 19]
    by_bytes = FlushPolicy(flush_records=100, flush_bytes=250)
    assert by_bytes.take(0, 0, np.array([100, 100, 100, 100])) == (3, True)  # the message reaching the limit is last
    assert by_bytes.take(0, 0, np.array([100])) == (1, False)
    assert message_sizes([_msg(0, b"abc"), _msg(1, None)]).tolist() == [3, 0]


def test_landing_file_carries_its_offsets():
    k, v = envelope("c1", "orders", "c", 1, ts_ms=1, pos=4, gtid_seq=1)
    batch = decode_messages([_msg(40, v, k)]).batch
    key, data, meta, rows = encode_landing_file("dw.c1.orders", 2, 40, 44, [batch])
    assert key == "topics/dw.c1.orders/partition=2/dw.c1.orders+2+0000000040.parquet"
    assert rows == 1 and end_offset_of(meta) == 44
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    assert table.schema.remove_metadata() == LANDING_SCHEMA and table.schema.metadata[b"dw-end-offset"] == b"44"


def test_client_topics_exclude_dead_letters_and_lookalike_databases():
    topics = {"dw.c1.orders": 3, "dw.c1.orders.dlq": 1, "dw.c10.orders": 3, "dw.c1.items": 3, "other.c1.x": 1,
              "dw": 1}
    assert client_topics(topics, "dw", "c1") == {"dw.c1.items": 3, "dw.c1.orders": 3}
    assert topics_by_client(topics, "dw", {"a": "c1", "b": "c10", "z": "nope"}) == \
        {"a": {"dw.c1.items": 3, "dw.c1.orders": 3}, "b": {"dw.c10.orders": 3}, "z": {}}


def _lag(client: str, lag: int, age: float | None) -> ClientLag:
    return ClientLag(client, client, [PartitionLag(f"dw.{client}.t", 0, 100, 100 - lag, lag, None, age)])


def test_run_planning_groups_due_clients_per_shard_and_skips_busy_ones():
    lags = {f"c{i:03d}": _lag(f"c{i:03d}", lag=i % 4, age=float(i)) for i in range(200)}
    th = LagThresholds(records=3, age_seconds=150)
    due = {c for c, lag in lags.items() if lag.lag >= 3 or (lag.lag and (lag.oldest_unlanded_age_s or 0) >= 150)}
    runs = plan_landing_runs(lags, th, max_clients_per_run=10, shards=4)
    assert len(runs) == 4 and all(len(r.clients) <= 10 for r in runs)
    planned = [c for r in runs for c in r.clients]
    assert len(planned) == len(set(planned)) and set(planned) <= due
    assert all(landing_shard(c, 4) == r.shard for r in runs for c in r.clients)
    # Most urgent first within a shard.
    for r in runs:
        ages = [lags[c].oldest_unlanded_age_s for c in r.clients]
        assert ages == sorted(ages, reverse=True)
    # Same state, same keys (Dagster drops repeats); busy shards and clients are left alone.
    assert [r.run_key for r in plan_landing_runs(lags, th, max_clients_per_run=10, shards=4)] == \
        [r.run_key for r in runs]
    busy = plan_landing_runs(lags, th, max_clients_per_run=10, shards=4, busy_shards={0, 1},
                             busy_clients={runs[-1].clients[0]})
    assert {r.shard for r in busy} == {2, 3} - ({0, 1}) and runs[-1].clients[0] not in [c for r in busy for c in r.clients]
    assert plan_landing_runs(lags, th, max_runs=1, shards=4) and len(plan_landing_runs(lags, th, max_runs=1, shards=4)) == 1


def test_bulk_decoding_keeps_tombstones_empty_values_and_missing_timestamps_apart():
    k, v = envelope("c1", "orders", "c", 5, ts_ms=1, pos=4, gtid_seq=1)
    no_ts = Message(topic="dw.c1.orders", partition=2, offset=3, key=k, value=v, timestamp=(0, -1))
    rows = decode_messages([_msg(0, v, k), _msg(1, None, k), _msg(2, b"", k), no_ts, _msg(4, None, None)])
    assert rows.tombstones == 2
    assert [(b.message.offset(), "invalid JSON" in b.error) for b in rows.bad] == [(2, True)]
    assert rows.batch.column("kafka_offset").to_pylist() == [0, 3]
    assert rows.batch.column("kafka_timestamp_ms").to_pylist() == [1_700_000_000_000, None]
    assert rows.batch.schema == LANDING_SCHEMA


def test_consume_batches_are_grouped_per_partition_in_order():
    from dw_assets.landing.writer import _group_by_partition

    runs = [("dw.c1.a", 0, 3), ("dw.c1.a", 1, 2), ("dw.c1.b", 0, 2), ("dw.c1.a", 0, 2), ("dw.c1.b", 0, 1)]
    msgs, next_offset = [], {}
    for topic, partition, n in runs:
        for _ in range(n):
            off = next_offset.get((topic, partition), 0)
            next_offset[(topic, partition)] = off + 1
            msgs.append(Message(topic=topic, partition=partition, offset=off, value=b"{}"))
    by_tp: dict = {("dw.c1.b", 0): []}  # earlier messages of a partition stay first
    _group_by_partition(msgs, by_tp)
    assert list(by_tp) == [("dw.c1.b", 0), ("dw.c1.a", 0), ("dw.c1.a", 1)]
    assert {tp: [m.offset() for m in lst] for tp, lst in by_tp.items()} == \
        {("dw.c1.a", 0): [0, 1, 2, 3, 4], ("dw.c1.a", 1): [0, 1], ("dw.c1.b", 0): [0, 1, 2]}
    one = {}
    _group_by_partition(msgs[:3], one)
    assert [m.offset() for m in one[("dw.c1.a", 0)]] == [0, 1, 2]


def test_landing_raises_the_gc_threshold_only_while_writers_run():
    import gc

    from dw_assets.landing.gc_threshold import LANDING_GEN0_THRESHOLD, landing_gc_threshold

    before = gc.get_threshold()
    with landing_gc_threshold():
        with landing_gc_threshold():  # a second writer thread
            assert gc.get_threshold()[0] == max(before[0], LANDING_GEN0_THRESHOLD)
        assert gc.get_threshold()[0] == max(before[0], LANDING_GEN0_THRESHOLD)
    assert gc.get_threshold() == before
