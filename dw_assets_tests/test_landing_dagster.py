"""The landing asset and job through Dagster: poison messages to the DLQ, counted in the materialization."""
from __future__ import annotations

import json

import dagster as dg
from confluent_kafka import Consumer, Producer, TopicPartition

from dw_assets.contracts import data_topic, dlq_topic
from dw_assets.defs.landing import LANDING_FILES, ingest_batch_job, landing_files
from dw_assets.landing import measure_lag, open_store
from dw_assets.landing.sample_events import create_topics, envelope
from dw_assets.partitions import clients_partitions
from dw_assets.resources import DwSettings
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client

POISON = [b"{truncated", b'{"payload": "not an envelope"}', b"\x00\x00\x00\x00\x07avro-bytes",
          json.dumps({"op": "c", "before": None, "after": None, "source": {"ts_ms": 1, "db": "x"}}).encode()]


def _produce_with_poison(settings: Settings, client: str) -> str:
    topic = data_topic(settings.kafka.topic_prefix, client, "orders")
    create_topics(settings, [topic], partitions=1)
    p = Producer(settings.kafka.client_config())
    for i in range(10):
        k, v = envelope(client, "orders", "c", i, ts_ms=1, pos=4, gtid_seq=i)
        p.produce(topic, key=k, value=v)
        if i % 3 == 0:
            p.produce(topic, key=b'{"id": 99}', value=POISON[i // 3])
    p.produce(topic, key=b'{"id": 1}', value=None)  # a tombstone: skipped, not a dead letter
    p.flush(10)
    return topic


def _read_dlq(settings: Settings, topic: str, n: int) -> list:
    c = Consumer({**settings.kafka.client_config(), "group.id": "t-dlq", "enable.auto.commit": False})
    c.assign([TopicPartition(dlq_topic(topic), 0, 0)])
    out: list = []
    for _ in range(50):
        out += [m for m in c.consume(100, 0.1) if m.error() is None]
        if len(out) >= n:
            break
    c.close()
    return out


def test_poison_messages_go_to_the_dlq_and_the_asset_counts_them(stack_settings: Settings):
    client = unique_client("ld")
    topic = _produce_with_poison(stack_settings, client)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(clients_partitions.name, [client])
    result = dg.materialize([landing_files], partition_key=client, instance=instance,
                            resources={"dw": DwSettings(home=str(stack_settings.home))})
    assert result.success
    md = result.asset_materializations_for_node("landing__landing_files")[0].metadata
    assert md["dead_letters"].value == 4 and md["tombstones_skipped"].value == 1
    assert md["records"].value == 10 and md["files_written"].value == 1 and md["lag_records"].value == 0

    dead = _read_dlq(stack_settings, topic, 4)
    assert sorted(m.value() for m in dead) == sorted(POISON)
    headers = dict(dead[0].headers())
    assert headers["__connect.errors.topic"] == topic.encode()
    assert int(headers["__connect.errors.offset"]) >= 0 and headers["__connect.errors.exception.message"]
    assert measure_lag(stack_settings, [client])[client].lag == 0  # landing went on past the poison


def test_batch_job_lands_several_clients_and_records_partition_materializations(stack_settings: Settings):
    from dw_assets.landing.sample_events import produce_changes

    clients = sorted(unique_client("lb") for _ in range(2))
    for c in clients:
        produce_changes(stack_settings, c, ["orders"], 50)
    instance = dg.DagsterInstance.ephemeral()
    result = ingest_batch_job.execute_in_process(
        run_config={"ops": {"ingest_client_batch": {"config": {"clients": clients, "apply": False}}}}, instance=instance,
        resources={"dw": DwSettings(home=str(stack_settings.home))})
    assert result.success
    events = instance.fetch_materializations(LANDING_FILES, limit=10).records
    assert sorted(e.partition_key for e in events) == clients
    assert all(e.asset_materialization.metadata["lag_records"].value == 0 for e in events)
    store = open_store(stack_settings)
    assert all(any(f".{c}." in k for k in store.list("topics/")) for c in clients)
