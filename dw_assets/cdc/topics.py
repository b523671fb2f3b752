"""Kafka topics of capture: created with explicit partition counts before the first message, and end offsets.

End offsets come from the consumer's cached watermarks after a brief fetch: Tansu's list_offsets and uncached
watermarks are wrong when a batch holds several messages (field notes).
"""
from __future__ import annotations

import logging
import time
from typing import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ..landing.outage import OUTAGE_BUDGET_S, ride_out
from ..settings import Settings

log = logging.getLogger(__name__)


class TopicRegistry:
    """Creates topics on first use; remembers the ones that exist and their partition counts."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.admin = AdminClient(settings.kafka.client_config())
        self.partitions: dict[str, int] = {}
        self.refresh()

    def refresh(self, budget_s: float = OUTAGE_BUDGET_S) -> None:
        """Read every topic's partition count again (after a broker restart the cache may be wrong); waits out
        a broker that is away (see `ride_out`)."""
        wait = min(10.0, max(budget_s, 1.0))
        md = ride_out(lambda: self.admin.list_topics(timeout=wait), "capture: listing topics", budget_s=budget_s)
        self.partitions = {name: len(t.partitions) for name, t in md.topics.items() if not t.error}

    def ensure(self, name: str, partitions: int | None = None, config: dict[str, str] | None = None) -> int:
        """Create `name` unless it exists; returns its partition count."""
        known = self.partitions.get(name)
        if known:
            return known
        n = partitions or self.settings.kafka.partitions
        topic = NewTopic(name, num_partitions=n, replication_factor=self.settings.kafka.replication_factor,
                         config=config or {})
        future = self.admin.create_topics([topic], operation_timeout=10)[name]
        try:
            future.result(timeout=15)
            log.info("created topic %s with %d partitions", name, n)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e) and "already exists" not in str(e).lower():
                raise
        # Wait until metadata shows the topic: producing to a topic the client does not know yet would make
        # librdkafka auto-create or fail it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.refresh()
            if self.partitions.get(name):
                return self.partitions[name]
            time.sleep(0.05)
        raise RuntimeError(f"topic {name} did not appear after creation")


def end_offsets(settings: Settings, topics: Iterable[str], fetch_ms: int = 300) -> dict[str, dict[int, int]]:
    """{topic: {partition: end offset}} from cached watermarks after a short fetch at the end of each partition."""
    topics = list(topics)
    if not topics:
        return {}
    conf = settings.kafka.client_config() | {
        "group.id": "dw-cdc-end-offsets",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 10,
        "enable.partition.eof": True,
    }
    consumer = Consumer(conf)
    try:
        md = consumer.list_topics(timeout=10)
        parts = [TopicPartition(t, p) for t in topics if t in md.topics for p in md.topics[t].partitions]
        # Start each partition from its (possibly too low) uncached high watermark: the fetch response then
        # carries the true high watermark into the client's cache.
        assigned = []
        for tp in parts:
            lo, hi = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            assigned.append(TopicPartition(tp.topic, tp.partition, max(lo, hi - 1, 0)))
        consumer.assign(assigned)
        deadline = time.monotonic() + fetch_ms / 1000
        while time.monotonic() < deadline:
            consumer.poll(0.05)
        out: dict[str, dict[int, int]] = {t: {} for t in topics}
        for tp in parts:
            lo, hi = consumer.get_watermark_offsets(tp, cached=True)
            if hi < 0:
                lo, hi = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            out[tp.topic][tp.partition] = hi
        return out
    finally:
        consumer.close()
