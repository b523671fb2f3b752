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


# Tansu answers a waiting fetch only after fetch.wait.max.ms, so the probe asks with a tiny wait first. A broker
# restarted on S3 storage was measured to answer no fetch with a wait below ~50 ms: partitions still unanswered
# are asked again with longer waits.
FETCH_WAITS_MS = (10, 100, 500)
FIRST_ATTEMPT_S = 2.0


def probe_consumer_config(settings: Settings, fetch_wait_ms: int = FETCH_WAITS_MS[0]) -> dict:
    return {
        **landing_client_config(settings),
        # Never commits: the group id only satisfies the client; unique so it never joins anyone's group.
        "group.id": f"dw-landing-probe-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": fetch_wait_ms,
        # One batch per partition is enough to see the first message and the watermark. (Lowering
        # queued.min.messages instead would stall every fetch by fetch.queue.backoff.ms.)
        "max.partition.fetch.bytes": 1024,
        "session.timeout.ms": settings.kafka.session_timeout_ms,
    }


def probe_partitions(settings: Settings, starts: Mapping[TP, int | None], *,
                     timeout: float = 20.0) -> dict[TP, PartitionProbe]:
    """Fetch once from each partition at its start offset (None: from the beginning).

    Returns the fetch-response watermarks and, where the start was below the end, the first message's offset and
    timestamp (the oldest event not yet processed). Partitions without an answer are asked again with a longer
    fetch wait; WatermarkTimeout after `timeout` seconds in all. A start above the log end gives that end (and
    no first message): callers compare.
    """
    # Explicit offsets only: a logical one (beginning/end) costs a ListOffsets round that librdkafka, without
    # metadata yet, retries only after a 500 ms backoff. Offset 0 below the log start is reset to the earliest.
    plan = {tp: (off if off is not None and off >= 0 else 0) for tp, off in starts.items()}
    out: dict[TP, PartitionProbe] = {}
    deadline = time.monotonic() + timeout
    for i, wait_ms in enumerate(FETCH_WAITS_MS):
        if not plan:
            break
        last = i == len(FETCH_WAITS_MS) - 1
        left = deadline - time.monotonic()
        budget = left if last else min(left, FIRST_ATTEMPT_S * (i + 1))
        out.update(_probe_once(settings, plan, wait_ms, budget))
        plan = {tp: off for tp, off in plan.items() if tp not in out}
        if plan:
            # Tansu does not answer a fetch above the log end at all (no error, no EOF): ask those partitions
            # from the beginning; a start above the end they report is out of range (a broker that lost its tail).
            left = deadline - time.monotonic()
            lows = _probe_once(settings, {tp: 0 for tp in plan}, wait_ms, min(left, FIRST_ATTEMPT_S * (i + 1)))
            for tp, pr in lows.items():
                if pr.high < plan[tp]:
                    out[tp] = PartitionProbe(low=pr.low, high=pr.high)
            plan = {tp: off for tp, off in plan.items() if tp not in out}
    if plan:
        sample = sorted(plan)[:5]
        raise WatermarkTimeout(f"no fetch response within {timeout}s for {len(plan)} partitions, e.g. {sample}")
    return out


def _probe_once(settings: Settings, plan: Mapping[TP, int], wait_ms: int, budget: float) -> dict[TP, PartitionProbe]:
    """The partitions of `plan` that answered within `budget` seconds."""
    consumer = Consumer(probe_consumer_config(settings, wait_ms))
    try:
        consumer.assign([TopicPartition(t, p, off) for (t, p), off in plan.items()])
        first: dict[TP, tuple[int, int | None]] = {}
        eof: dict[TP, int] = {}
        pending = set(plan)
        deadline = time.monotonic() + max(budget, 0.0)
        while pending and time.monotonic() < deadline:
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
            if tp in pending:
                continue
            low, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            if high < 0 and tp in eof:
                high = eof[tp]
            f_off, f_ts = first.get(tp, (None, None))
            out[tp] = PartitionProbe(low=max(low, 0), high=max(high, 0), first_offset=f_off, first_timestamp_ms=f_ts)
        return out
    finally:
        consumer.close()
