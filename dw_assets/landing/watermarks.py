"""End offsets and the oldest unread message of many partitions at once, correct on Kafka and on Tansu.

Tansu answers ListOffsets(latest) with (first offset of the last batch)+1 when batches hold several messages, so
end offsets come from the high watermark of real fetch responses instead: one consumer is assigned to every
partition, fetches briefly, and each partition counts as measured once it has delivered a message or reached EOF.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Mapping

from confluent_kafka import Consumer, KafkaError, TopicPartition

from ..settings import Settings
from .kafka_config import landing_client_config

TP = tuple[str, int]


class WatermarkTimeout(RuntimeError):
    """Some partitions gave no fetch response in time (broker down or overloaded)."""


@dataclass(frozen=True)
class PartitionProbe:
    low: int  # log start offset
    high: int  # end offset: the next offset to be written
    first_offset: int | None = None  # first message at or after the start position, if any
    first_timestamp_ms: int | None = None


def probe_consumer_config(settings: Settings) -> dict:
    return {
        **landing_client_config(settings),
        # Never commits: the group id only satisfies the client; unique so it never joins anyone's group.
        "group.id": f"dw-landing-probe-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        # Tansu answers a waiting fetch only after fetch.wait.max.ms: keep it tiny.
        "fetch.wait.max.ms": 10,
        # One batch per partition is enough to see the first message and the watermark. (Lowering
        # queued.min.messages instead would stall every fetch by fetch.queue.backoff.ms.)
        "max.partition.fetch.bytes": 1024,
        "session.timeout.ms": settings.kafka.session_timeout_ms,
    }


def probe_partitions(settings: Settings, starts: Mapping[TP, int | None], *,
                     timeout: float = 20.0) -> dict[TP, PartitionProbe]:
    """Fetch once from each partition at its start offset (None: from the beginning).

    Returns the fetch-response watermarks and, where the start was below the end, the first message's offset and
    timestamp (the oldest event not yet processed).
    """
    # Explicit offsets only: a logical one (beginning/end) costs a ListOffsets round that librdkafka, without
    # metadata yet, retries only after a 500 ms backoff. Offset 0 below the log start is reset to the earliest.
    plan = {tp: (off if off is not None and off >= 0 else 0) for tp, off in starts.items()}
    if not plan:
        return {}
    consumer = Consumer(probe_consumer_config(settings))
    try:
        consumer.assign([TopicPartition(t, p, off) for (t, p), off in plan.items()])
        first: dict[TP, tuple[int, int | None]] = {}
        eof: dict[TP, int] = {}
        pending = set(plan)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                sample = sorted(pending)[:5]
                raise WatermarkTimeout(f"no fetch response within {timeout}s for {len(pending)} partitions, e.g. {sample}")
            # One message at a time: a fetch brings a whole record batch (thousands of messages) per partition,
            # and a larger consume would turn all of them into Python objects only to drop them. Pausing a
            # partition discards what is still queued for it inside librdkafka, so this reads one message (or
            # the EOF) per partition.
            msgs = consumer.consume(num_messages=1, timeout=0.005)
            done: list[TopicPartition] = []
            for m in msgs:
                tp = (m.topic(), m.partition())
                if tp not in pending:
                    continue
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof[tp] = m.offset()
                    else:
                        continue
                else:
                    ts_type, ts = m.timestamp()
                    first[tp] = (m.offset(), ts if ts_type else None)
                pending.discard(tp)
                done.append(TopicPartition(*tp))
            if done:
                consumer.pause(done)  # seen enough of these: stop fetching them
        out: dict[TP, PartitionProbe] = {}
        for tp in plan:
            low, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            if high < 0 and tp in eof:
                high = eof[tp]
            f_off, f_ts = first.get(tp, (None, None))
            out[tp] = PartitionProbe(low=max(low, 0), high=max(high, 0), first_offset=f_off, first_timestamp_ms=f_ts)
        return out
    finally:
        consumer.close()
