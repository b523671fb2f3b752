"""A broker that loses its log: landing stops with a clear error instead of adopting old files, the recovery
command makes landing and the lake exact again; outages and a stuck flush are ridden out or bounded.

Each test runs its own Tansu broker (memory storage) so that it can restart it without touching the session's.
"""
from __future__ import annotations

import io
import re
import threading
import uuid
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from dw_assets.cdc.capture import CaptureError, CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.lakehouse.apply import apply_client
from dw_assets.landing import FlushPolicy, land_client, measure_lag, open_store
from dw_assets.landing.sample_events import produce_changes
from dw_assets.landing.incarnation import LandingReset
from dw_assets.landing.recovery import recover_client
from dw_assets.model import load_model
from dw_assets.settings import Settings
from dw_assets.stack import find_free_port
from dw_assets.stack.broker import TansuBroker
from dw_assets.stack.s3 import LOCAL_KEY, MotoServer, ensure_bucket
from dw_assets.workload import apply_batch, seed_clients
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.test_cdc_support import master_position
from dw_assets_tests.pipeline_support import assert_silver_equals_source


class Broker:
    """A private Tansu that a test may kill and start again on the same port."""

    def __init__(self, base: Path, storage_url: str = "memory://tansu/", env: dict[str, str] | None = None):
        self.tansu = TansuBroker(base, find_free_port(), storage_url, env)
        self.pid: int | None = self.tansu.start()

    def start(self) -> None:
        self.pid = self.tansu.start()

    def restart(self) -> None:
        self.stop()
        self.pid = self.tansu.start()

    def stop(self) -> None:
        self.tansu.stop(self.pid)
        self.pid = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "kafka")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def s3_broker(tmp_path: Path, moto_server: MotoServer) -> Iterator[Broker]:
    """A broker keeping its log on the local S3 endpoint: it survives a restart."""
    bucket = f"brk-{uuid.uuid4().hex[:8]}"
    ensure_bucket(bucket, endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                  aws_access_key_id=LOCAL_KEY, aws_secret_access_key=LOCAL_KEY)
    env = {"AWS_ENDPOINT": moto_server.endpoint_url, "AWS_ALLOW_HTTP": "true", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": LOCAL_KEY, "AWS_SECRET_ACCESS_KEY": LOCAL_KEY}
    b = Broker(tmp_path / "kafka-s3", f"s3://{bucket}/", env)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def settings(stack_settings: Settings, broker: Broker, tmp_path: Path) -> Settings:
    return replace(stack_settings, home=tmp_path / "home", landing_url=str(tmp_path / "landing"),
                   lake_url=str(tmp_path / "lake"), kafka=replace(stack_settings.kafka, bootstrap=broker.tansu.bootstrap))


def _capture_once(settings: Settings, client: str, **kw) -> CaptureService:
    service = CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, {client}),
                                                      heartbeat_interval_ms=200, stats_interval_s=60, **kw))
    service.run()
    return service


def _landed_keys(settings: Settings) -> dict[str, dict[str, str] | None]:
    store = open_store(settings)
    return {k: store.head(k) for k in store.list("topics/")}


@pytest.mark.slow  # ~50 s each: seed, snapshot, three capture passes, two applies, a broker restart
@pytest.mark.parametrize("by_itself", [False, True], ids=["recover-command", "automatic"])
def test_memory_broker_restart_stops_landing_then_recovery_makes_the_lake_exact(settings, broker, by_itself):
    client = unique_client("rst")
    model = load_model()
    seed_clients(settings, [client], rows_per_client=200, seed=3)
    _capture_once(settings, client)  # snapshot
    apply_batch(settings, client, seed=1, rows=40)
    _capture_once(settings, client)
    land_client(settings, client)
    assert apply_client(settings, client).ok
    assert_silver_equals_source(settings, client, model)

    # Captured and acknowledged, never landed: these die with the broker.
    apply_batch(settings, client, seed=2, rows=40)
    _capture_once(settings, client)
    broker.restart()
    # Capture goes on into the new, empty broker: the same offsets now hold different events.
    apply_batch(settings, client, seed=3, rows=40)
    _capture_once(settings, client)

    before = _landed_keys(settings)
    if by_itself:
        land_client(settings, client)  # sees the re-created topics, recovers, lands the new incarnation
    else:
        with pytest.raises(LandingReset) as err:
            land_client(settings, client, auto_recover=False)
        message = str(err.value)
        assert f"dw landing recover --client {client}" in message and f".{client}." in message
        assert _landed_keys(settings) == before  # nothing adopted, nothing overwritten
        report = recover_client(settings, client)
        assert report.replay_from and not report.resnapshot
        assert sorted(report.archived) == sorted(before)
    archived = open_store(settings).list("archive/")
    assert sorted(k.split("/", 2)[2] for k in archived) == sorted(before)  # moved, not deleted

    _capture_once(settings, client)  # re-emits the client's lost changes from the binlog
    land = land_client(settings, client)
    assert land.complete and not land.adopted
    result = apply_client(settings, client)
    assert result.ok, result.failed
    assert_silver_equals_source(settings, client, model)

    # Business as usual afterwards.
    apply_batch(settings, client, seed=4, rows=40)
    _capture_once(settings, client)
    land_client(settings, client)
    assert apply_client(settings, client).ok
    assert_silver_equals_source(settings, client, model)


def test_flush_against_a_dead_broker_gives_up_with_a_message_and_keeps_the_checkpoint(settings, broker):
    client = unique_client("fl")
    seed_clients(settings, [client], rows_per_client=50, seed=5)
    service = CaptureService(settings, CaptureOptions(databases=fixed_source(settings, {client}),
                                                      heartbeat_interval_ms=200, stats_interval_s=60,
                                                      flush_timeout_s=3.0))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            failure.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    checkpoint = service.store
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (checkpoint.load() and
                                               checkpoint.load().databases.get(client) == "streaming"):
        time.sleep(0.2)
    broker.stop()
    before_batch = master_position(settings)
    apply_batch(settings, client, seed=6, rows=20)
    thread.join(60)
    assert not thread.is_alive(), "capture hung waiting for the broker"
    assert failure and isinstance(failure[0], CaptureError)
    assert re.search(r"did not acknowledge \d+ messages within 3 s; the checkpoint stays at", str(failure[0]))
    saved = checkpoint.load()
    assert (int(saved.file.rsplit(".", 1)[1]), saved.pos) <= (int(before_batch[0].rsplit(".", 1)[1]), before_batch[1])


def _landed_offsets(settings: Settings) -> Counter:
    import pyarrow.parquet as pq

    store = open_store(settings)
    seen: Counter = Counter()
    for k in store.list("topics/"):
        t = pq.read_table(io.BytesIO(store.get(k)), columns=["kafka_topic", "kafka_partition", "kafka_offset"])
        seen.update(zip(*(t.column(c).to_pylist() for c in t.column_names)))
    return seen


@pytest.mark.slow  # the broker stays down for 10 s on purpose
def test_broker_down_and_restarted_on_s3_storage_landing_and_lag_resume_by_themselves(stack_settings, s3_broker,
                                                                                        tmp_path):
    settings = replace(stack_settings, home=tmp_path / "home", landing_url=str(tmp_path / "landing"),
                       kafka=replace(stack_settings.kafka, bootstrap=s3_broker.tansu.bootstrap))
    db = unique_client("out")
    first = produce_changes(settings, db, ["orders"], 300)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            land_client(settings, db, bounded=False, stop=stop, policy=FlushPolicy(idle_seconds=0.3))
        except BaseException as e:  # noqa: BLE001 - handed to the test
            failure.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(1 for v in _landed_offsets(settings).values()) < 1:
        time.sleep(0.2)
    s3_broker.stop()
    time.sleep(10)  # the writer sees the broker gone for ~10 s
    assert thread.is_alive() and not failure
    s3_broker.start()
    second = produce_changes(settings, db, ["orders"], 200, start_id=10_000)
    total = sum(first.values()) + sum(second.values())
    lag = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lag = measure_lag(settings, [db])[db]  # fetch-response watermarks from the restarted broker
        if lag.lag == 0 and sum(p.end_offset for p in lag.partitions) == total:
            break
        time.sleep(0.5)
    stop.set()
    thread.join(30)
    assert not failure, failure
    assert lag is not None and lag.lag == 0
    landed = _landed_offsets(settings)
    assert max(landed.values()) == 1  # nothing twice
    # Every non-tombstone message once: offsets per partition are dense apart from tombstones (no gap > 1).
    by_partition: dict[int, list[int]] = {}
    for (_, p, off) in landed:
        by_partition.setdefault(p, []).append(off)
    for p, offs in by_partition.items():
        offs.sort()
        assert all(b - a <= 2 for a, b in zip(offs, offs[1:])), f"partition {p} has a gap"
    assert sum(p.end_offset for p in lag.partitions) == total


@pytest.mark.slow
def test_capture_rides_out_a_memory_broker_restart_without_auto_created_partitions(settings, broker):
    client = unique_client("cap")
    seed_clients(settings, [client], rows_per_client=30, seed=8)
    service = CaptureService(settings, CaptureOptions(databases=fixed_source(settings, {client}),
                                                      heartbeat_interval_ms=200, stats_interval_s=60))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (service.store.load() and
                                               service.store.load().databases.get(client) == "streaming"):
        time.sleep(0.2)
    broker.restart()  # memory storage: every topic is gone
    apply_batch(settings, client, seed=9, rows=30)
    target = master_position(settings)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cp = service.store.load()
        if (int(cp.file.rsplit(".", 1)[1]), cp.pos) >= (int(target[0].rsplit(".", 1)[1]), target[1]):
            break
        time.sleep(0.2)
    service.stop()
    thread.join(30)
    assert not thread.is_alive()
    from confluent_kafka.admin import AdminClient

    md = AdminClient(settings.kafka.client_config()).list_topics(timeout=10)
    mine = {n: len(t.partitions) for n, t in md.topics.items() if f".{client}." in n}
    assert mine, "capture produced nothing after the restart"
    assert set(mine.values()) == {settings.kafka.partitions}  # created by capture, never auto-created (4)
    cp = service.store.load()
    assert (int(cp.file.rsplit(".", 1)[1]), cp.pos) >= (int(target[0].rsplit(".", 1)[1]), target[1])


def test_committed_offset_above_the_log_end_stops_landing_shows_in_lag_and_recover_resets_it(settings):
    from confluent_kafka import Consumer, TopicPartition

    from dw_assets.contracts import landing_group

    db = unique_client("hi")
    topics = produce_changes(settings, db, ["orders"], 60)
    land_client(settings, db)
    topic = next(iter(topics))
    end = {p.partition: p.end_offset for p in measure_lag(settings, [db])[db].partitions}
    # What a broker that lost its tail leaves behind: the group committed past what the log now holds.
    c = Consumer({**settings.kafka.client_config(), "group.id": landing_group(db), "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, end[0] + 50)], asynchronous=False)
    c.close()

    with pytest.raises(LandingReset, match=rf"{re.escape(topic)}\[0\]: committed offset {end[0] + 50} above the "
                                           rf"log end {end[0]}.*dw landing recover --client {db}"):
        land_client(settings, db)
    assert measure_lag(settings, [db])[db].reset

    report = recover_client(settings, db)
    assert report.offsets == {f"{topic}:0": end[0]} and not report.archived
    assert not measure_lag(settings, [db])[db].reset
    more = produce_changes(settings, db, ["orders"], 30, start_id=5_000)
    land_client(settings, db)
    landed = _landed_offsets(settings)
    assert max(landed.values()) == 1
    lag = measure_lag(settings, [db])[db]
    assert lag.lag == 0 and sum(p.end_offset for p in lag.partitions) == sum(topics.values()) + sum(more.values())
