"""Landing lag: per client and topic partition, the end offset, the landing group's committed offset, the lag and
the age of the oldest event not yet landed.

Built for the sensor's scale: one metadata request, one pipelined batch of committed-offset requests (the admin API
takes one group per request, so they are all sent before any answer is awaited) and ONE consumer probing every
partition of every client at once.
"""
from __future__ import annotations

import time
from concurrent.futures import wait
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from ..contracts import landing_group
from ..settings import Settings
from .client_topics import list_cluster_topics, topics_by_client
from .kafka_config import landing_client_config
from .watermarks import probe_partitions


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    end_offset: int
    committed_offset: int | None  # None: the landing group never committed here
    lag: int
    oldest_unlanded_ms: int | None  # Kafka timestamp of the first event not landed
    oldest_unlanded_age_s: float | None
    # The committed offset is above the log end: the broker lost events landing had seen (see `dw landing recover`)
    reset: bool = False


@dataclass
class ClientLag:
    client: str
    database: str
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def reset(self) -> bool:
        return any(p.reset for p in self.partitions)

    @property
    def oldest_unlanded_age_s(self) -> float | None:
        ages = [p.oldest_unlanded_age_s for p in self.partitions if p.oldest_unlanded_age_s is not None]
        return max(ages) if ages else None

    def as_dict(self) -> dict:
        return {"client": self.client, "database": self.database, "lag": self.lag, "reset": self.reset,
                "oldest_unlanded_age_s": self.oldest_unlanded_age_s,
                "partitions": [asdict(p) for p in self.partitions]}


def _as_databases(clients: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    # By convention a client's production database carries the client's name.
    return dict(clients) if isinstance(clients, Mapping) else {c: c for c in clients}


def committed_offsets(admin: AdminClient, groups: Mapping[str, list[tuple[str, int]]],
                      timeout: float = 20.0) -> dict[str, dict[tuple[str, int], int | None]]:
    """group -> {(topic, partition): committed offset or None}, all requests in flight at once."""
    futures = {}
    for group, tps in groups.items():
        if tps:
            req = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in tps])
            futures[group] = admin.list_consumer_group_offsets([req], request_timeout=timeout)[group]
    wait(list(futures.values()), timeout=timeout)
    out: dict[str, dict[tuple[str, int], int | None]] = {}
    for group, fut in futures.items():
        res = fut.result(timeout=0)
        out[group] = {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in res.topic_partitions}
    return out


def measure_lag(settings: Settings, clients: Mapping[str, str] | Iterable[str], *,
                timeout: float = 20.0, now_ms: int | None = None) -> dict[str, ClientLag]:
    """Landing lag of every client (names, or client -> production database), in one sweep."""
    databases = _as_databases(clients)
    admin = AdminClient(landing_client_config(settings))
    topics = topics_by_client(list_cluster_topics(admin, timeout), settings.kafka.topic_prefix, databases)
    tps_by_client = {c: [(t, p) for t, n in ts.items() for p in range(n)] for c, ts in topics.items()}
    committed = committed_offsets(admin, {landing_group(c): tps for c, tps in tps_by_client.items()}, timeout)
    starts: dict[tuple[str, int], int | None] = {}
    for c, tps in tps_by_client.items():
        group = committed.get(landing_group(c), {})
        for tp in tps:
            starts[tp] = group.get(tp)
    # Topics are per client database, so a partition belongs to exactly one client here.
    probes = probe_partitions(settings, starts, timeout=timeout)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out: dict[str, ClientLag] = {}
    for c, tps in tps_by_client.items():
        cl = ClientLag(c, databases[c])
        group = committed.get(landing_group(c), {})
        for tp in tps:
            pr = probes[tp]
            off = group.get(tp)
            position = off if off is not None else pr.low
            lag = max(pr.high - max(position, pr.low), 0)
            ts = pr.first_timestamp_ms if lag else None
            age = max((now_ms - ts) / 1000.0, 0.0) if ts is not None else None
            cl.partitions.append(PartitionLag(tp[0], tp[1], pr.high, off, lag, ts, age,
                                              reset=off is not None and off > pr.high))
        out[c] = cl
    return out
