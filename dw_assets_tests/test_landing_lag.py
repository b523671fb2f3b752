"""Landing lag on Tansu with multi-message batches, and the lag sensor against the real broker."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from dw_assets.contracts import data_topic, landing_group
from dw_assets.defs.landing import (
    CLIENTS_TAG,
    INGEST_JOB,
    SHARD_TAG,
    build_landing_lag_sensor,
    ingest_batch_job,
)
from dw_assets.landing import land_client, measure_lag
from dw_assets.landing.run_planning import LagThresholds
from dw_assets.landing.sample_events import create_topics, envelope, produce_changes
from dw_assets.resources import DwSettings
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client


def _produce_batched(settings: Settings, topic: str, n: int, old_first_ms: int | None = None) -> Counter:
    """n messages with a long linger, so the broker stores batches of many messages; partition -> count."""
    p = Producer({**settings.kafka.client_config(), "linger.ms": 200, "batch.num.messages": 10_000})
    counts: Counter = Counter()

    def delivered(err, msg):
        assert err is None
        counts[msg.partition()] += 1

    for i in range(n):
        k, v = envelope("x", "orders", "c", i, ts_ms=1, pos=4, gtid_seq=i)
        ts = old_first_ms if (old_first_ms and i < settings.kafka.partitions) else None
        p.produce(topic, key=k, value=v, partition=i % settings.kafka.partitions, on_delivery=delivered,
                  **({"timestamp": ts} if ts else {}))
    p.flush(30)
    return counts


def test_lag_is_exact_on_tansu_with_multi_message_batches(stack_settings: Settings):
    client = unique_client("lg")
    topic = data_topic(stack_settings.kafka.topic_prefix, client, "orders")
    create_topics(stack_settings, [topic])
    old = int(time.time() * 1000) - 120_000
    counts = _produce_batched(stack_settings, topic, 3_000, old_first_ms=old)
    committed = {0: 250, 1: counts[1]}  # partition 2: never committed
    c = Consumer({**stack_settings.kafka.client_config(), "group.id": landing_group(client),
                  "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, p, off) for p, off in committed.items()], asynchronous=False)
    # The broker defect this guards against: its own end offsets are wrong for these batches.
    uncached = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)}
    c.close()

    lag = measure_lag(stack_settings, [client])[client]
    by_p = {p.partition: p for p in lag.partitions}
    for p in range(3):
        assert by_p[p].end_offset == counts[p], (p, by_p[p], "uncached would say", uncached[p])
        assert by_p[p].committed_offset == committed.get(p)
        assert by_p[p].lag == counts[p] - committed.get(p, 0)
    assert lag.lag == sum(counts.values()) - 250 - counts[1]
    assert by_p[1].oldest_unlanded_age_s is None  # nothing unlanded there
    assert 119 <= by_p[2].oldest_unlanded_age_s < 180  # partition 2 starts with the old event
    assert by_p[0].oldest_unlanded_age_s < 60  # offset 250 is recent


def test_sensor_requests_runs_only_for_lagging_clients_in_groups(stack_settings: Settings, tmp_path: Path):
    settings = replace(stack_settings, landing_url=str(tmp_path / "landing"))
    lagging = sorted(unique_client("sl") for _ in range(3))
    landed = sorted(unique_client("sq") for _ in range(2))
    for c in lagging + landed:
        produce_changes(settings, c, ["orders"], 20)
    for c in landed:
        land_client(settings, c)
    # The sensor loads settings through the resource: point it at the session stack's home.
    clients = {c: c for c in lagging + landed}
    sensor = build_landing_lag_sensor(client_source=lambda s: clients, thresholds=LagThresholds(records=1),
                                      max_clients_per_run=2, shards=1)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"dw": DwSettings(home=str(settings.home))}
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    runs = result.run_requests
    # One shard: one run per tick with the K=2 most urgent lagging clients; never a landed one.
    assert len(runs) == 1
    requested = runs[0].run_config["ops"]["ingest_client_batch"]["config"]["clients"]
    assert len(requested) == 2 and set(requested) <= set(lagging)
    assert runs[0].tags[SHARD_TAG] == "0" and runs[0].tags[CLIENTS_TAG] == ",".join(requested)
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == sorted(clients)

    # Same state: same run key (Dagster drops the repeat). With the run in flight the shard is left alone.
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        assert sensor(ctx).run_requests[0].run_key == runs[0].run_key
    instance.create_run_for_job(ingest_batch_job, run_config=runs[0].run_config, tags=runs[0].tags,
                                status=dg.DagsterRunStatus.STARTED)
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        busy = sensor(ctx)
    assert not busy.run_requests and "busy shards: [0]" in busy.skip_reason.skip_message

    # Several shards: every lagging client is requested, grouped, none twice.
    wide = build_landing_lag_sensor(client_source=lambda s: clients, thresholds=LagThresholds(records=1),
                                    max_clients_per_run=2, shards=64, name="wide")
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources) as ctx:
        wide_runs = wide(ctx).run_requests
    planned = [c for r in wide_runs for c in r.run_config["ops"]["ingest_client_batch"]["config"]["clients"]]
    assert sorted(planned) == lagging and all(r.job_name in (None, INGEST_JOB) for r in wide_runs)


@pytest.mark.slow
def test_sensor_tick_at_500_clients(stack_settings: Settings):
    from dw_assets.landing.bench import measure_sensor_tick

    result = measure_sensor_tick(stack_settings, clients=500)
    assert result["lagging_clients"] == 100 and result["clients_in_runs"] == 100
    assert result["tick_s"] < 20, result
