"""The landing writer against the session's Tansu broker: exactly-once files across a crash, idle flush, S3."""
from __future__ import annotations

import io
import multiprocessing
import os
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import boto3
import pyarrow.parquet as pq
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from dw_assets.contracts import data_topic, landing_object_key
from dw_assets.landing import FlushPolicy, LandingHooks, land_client, open_store
from dw_assets.landing.client_topics import client_topics, list_cluster_topics
from dw_assets.landing.sample_events import create_topics, envelope, produce_changes
from dw_assets.landing.watermarks import probe_partitions
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client

CRASH_EXIT = 17


def _landed_offsets(settings: Settings, client: str) -> tuple[Counter, list[str]]:
    """(topic, partition, offset) -> how many files hold it, and the object keys, for one client."""
    store = open_store(settings)
    keys = [k for k in store.list("topics/") if f".{client}." in k]
    seen: Counter = Counter()
    for k in keys:
        t = pq.read_table(io.BytesIO(store.get(k)), columns=["kafka_topic", "kafka_partition", "kafka_offset"])
        seen.update(zip(*(t.column(c).to_pylist() for c in t.column_names)))
    return seen, keys


def _expected_events(settings: Settings, client: str) -> set[tuple[str, int, int]]:
    """Every non-tombstone message of the client's topics, read back from the broker."""
    from confluent_kafka import Consumer, TopicPartition

    topics = client_topics(list_cluster_topics(AdminClient(settings.kafka.client_config())),
                           settings.kafka.topic_prefix, client)
    tps = [(t, p) for t, n in topics.items() for p in range(n)]
    ends = {tp: pr.high for tp, pr in probe_partitions(settings, {tp: 0 for tp in tps}).items()}
    c = Consumer({**settings.kafka.client_config(), "group.id": "t-read", "enable.auto.commit": False})
    c.assign([TopicPartition(t, p, 0) for t, p in tps if ends[(t, p)]])
    out: set[tuple[str, int, int]] = set()
    left = sum(ends.values())
    deadline = time.monotonic() + 30
    while left and time.monotonic() < deadline:
        for m in c.consume(10_000, 0.1):
            if m.error() is None:
                left -= 1
                if m.value() is not None:
                    out.add((m.topic(), m.partition(), m.offset()))
    c.close()
    assert not left
    return out


def _crash_after_uploads(settings: Settings, client: str, policy: FlushPolicy, uploads: int) -> None:
    """Child process: land, and die like a killed process right after the `uploads`-th upload, before its commit."""
    count = 0

    def die(_file) -> None:
        nonlocal count
        count += 1
        if count >= uploads:
            os._exit(CRASH_EXIT)

    land_client(settings, client, policy=policy, hooks=LandingHooks(after_upload=die))


def test_crash_between_upload_and_commit_lands_every_event_exactly_once(stack_settings: Settings, tmp_path: Path):
    settings = replace(stack_settings, landing_url=str(tmp_path / "landing"))
    policy = FlushPolicy(flush_records=150)
    clients = [unique_client("lw") for _ in range(3)]
    for c in clients:
        produce_changes(settings, c, ["orders", "customers"], 400)

    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_crash_after_uploads, args=(settings, clients[0], policy, 3))
    child.start()
    child.join(60)
    assert child.exitcode == CRASH_EXIT
    _, before_restart = _landed_offsets(settings, clients[0])
    assert len(before_restart) == 3  # uploaded, never committed

    reports = {c: land_client(settings, c, policy=policy) for c in clients}
    assert len(reports[clients[0]].adopted) >= 1, "the restarted writer adopts the uncommitted upload"
    for c in clients:
        seen, keys = _landed_offsets(settings, c)
        expected = _expected_events(settings, c)
        assert set(seen) == expected
        assert max(seen.values()) == 1, "an event landed in two files"
        # Names are a function of the offsets alone: a file every 150 offsets from each partition's start.
        ends = reports[c].end_offsets
        want = {landing_object_key(tp.rsplit(":", 1)[0], int(tp.rsplit(":", 1)[1]), start)
                for tp, end in ends.items() for start in range(0, end, 150)}
        assert set(keys) == want
    assert set(before_restart) <= set(_landed_offsets(settings, clients[0])[1])

    # Nothing new: nothing written.
    store = open_store(settings)
    before = {k: store.head(k) for k in store.list("topics/")}
    for c in clients:
        again = land_client(settings, c, policy=policy)
        assert again.files == [] and again.messages == 0
    assert {k: store.head(k) for k in store.list("topics/")} == before


def test_idle_flush_lands_a_single_event_within_the_idle_interval(stack_settings: Settings, tmp_path: Path):
    settings = replace(stack_settings, landing_url=str(tmp_path / "landing"))
    client = unique_client("li")
    topic = data_topic(settings.kafka.topic_prefix, client, "orders")
    create_topics(settings, [topic])
    idle = 1.5
    stop = threading.Event()
    result: dict = {}
    writer = threading.Thread(target=lambda: result.update(report=land_client(
        settings, client, bounded=False, policy=FlushPolicy(idle_seconds=idle), stop=stop)))
    writer.start()
    try:
        time.sleep(1.0)  # the writer is assigned and waiting
        p = Producer(settings.kafka.client_config())
        k, v = envelope(client, "orders", "c", 1, ts_ms=1, pos=4, gtid_seq=1)
        p.produce(topic, key=k, value=v)
        p.flush(10)
        produced = time.monotonic()
        store = open_store(settings)
        landed_after = None
        while time.monotonic() - produced < idle + 5:
            if store.list("topics/"):
                landed_after = time.monotonic() - produced
                break
            time.sleep(0.05)
        assert landed_after is not None and landed_after <= idle + 1.0, landed_after
    finally:
        stop.set()
        writer.join(30)
    report = result["report"]
    assert report.records == 1 and len(report.files) == 1
    assert sorted(v["to"] for v in report.offsets.values() if v["to"] is not None) == [1]


def test_landing_to_s3_on_the_moto_server(s3_settings: Settings):
    client = unique_client("ls")
    counts = produce_changes(s3_settings, client, ["orders"], 300)
    report = land_client(s3_settings, client)
    assert report.messages == sum(counts.values()) and report.files
    bucket, prefix = s3_settings.landing_url[len("s3://"):].split("/", 1)
    s3 = boto3.client("s3", **s3_settings.s3.boto3_kwargs())
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/topics/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"{prefix}/{f.key}" for f in report.files)
    first = report.files[0]
    head = s3.head_object(Bucket=bucket, Key=f"{prefix}/{first.key}")
    assert head["Metadata"]["dw-end-offset"] == str(first.end_offset)
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/{first.key}")["Body"].read()
    assert pq.read_table(io.BytesIO(body)).num_rows == first.records
    assert land_client(s3_settings, client).files == []
