"""Which landing runs to start now: lagging clients, grouped into runs of up to K clients per shard.

Plain Python so the lag sensor's decision is testable without Dagster. A client always falls in the same shard
(crc32 of its name), each run carries its shard as a tag, and dagster.yaml allows one run per shard value at a
time: that is what keeps two landing runs of one client apart, while one run lands many clients.
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Iterable, Mapping

from .lag import ClientLag

DEFAULT_SHARDS = 16
DEFAULT_CLIENTS_PER_RUN = 25
DEFAULT_RETRY_AFTER_S = 300  # the same work may be requested again after this long (e.g. its run failed)


@dataclass(frozen=True)
class LagThresholds:
    """A client needs landing when its lag reaches `records` or its oldest unlanded event is `age_seconds` old."""

    records: int = 10_000
    age_seconds: float = 30.0

    def due(self, lag: ClientLag) -> bool:
        if lag.lag <= 0:
            return False
        age = lag.oldest_unlanded_age_s
        return lag.lag >= self.records or (age is not None and age >= self.age_seconds)


@dataclass(frozen=True)
class PlannedRun:
    shard: int
    clients: tuple[str, ...]
    databases: dict[str, str]
    run_key: str


def landing_shard(client: str, shards: int = DEFAULT_SHARDS) -> int:
    """The fixed shard of a client. Changing `shards` moves clients: drain running landing runs first."""
    return zlib.crc32(client.encode()) % shards


def due_clients(lags: Mapping[str, ClientLag], thresholds: LagThresholds) -> list[str]:
    """Clients that need landing, most urgent first (oldest unlanded event, then largest lag)."""
    due = [c for c, lag in lags.items() if thresholds.due(lag)]
    return sorted(due, key=lambda c: (-(lags[c].oldest_unlanded_age_s or 0.0), -lags[c].lag, c))


def _run_key(shard: int, clients: Iterable[str], lags: Mapping[str, ClientLag], time_bucket: int) -> str:
    # Same clients at the same end offsets in the same retry window = the same work: Dagster drops the repeat.
    h = hashlib.sha1(f"landing|{shard}|{time_bucket}".encode())
    for c in clients:
        ends = ",".join(f"{p.topic}:{p.partition}:{p.end_offset}" for p in lags[c].partitions)
        h.update(f"|{c}={ends}".encode())
    return f"landing-s{shard}-{h.hexdigest()[:16]}"


def plan_landing_runs(lags: Mapping[str, ClientLag], thresholds: LagThresholds, *,
                      max_clients_per_run: int = DEFAULT_CLIENTS_PER_RUN, shards: int = DEFAULT_SHARDS,
                      busy_shards: Iterable[int] = (), busy_clients: Iterable[str] = (),
                      max_runs: int | None = None, now_s: float = 0.0,
                      retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> list[PlannedRun]:
    """Runs to request: per shard without a run in flight, the due clients in chunks of `max_clients_per_run`.

    At most one chunk per shard is planned per tick: the shard's next chunk follows when its run is done, which
    keeps the queue at no more than `shards` landing runs however many clients lag.
    """
    if max_clients_per_run < 1 or shards < 1:
        raise ValueError("max_clients_per_run and shards must be positive")
    busy_s, busy_c = set(busy_shards), set(busy_clients)
    by_shard: dict[int, list[str]] = {}
    for c in due_clients(lags, thresholds):
        s = landing_shard(c, shards)
        if s not in busy_s and c not in busy_c:
            by_shard.setdefault(s, []).append(c)
    bucket = int(now_s // retry_after_s) if retry_after_s > 0 else 0
    runs: list[PlannedRun] = []
    # Shards whose most urgent client waited longest go first when max_runs caps the tick.
    def urgency(item: tuple[int, list[str]]) -> tuple[float, int, int]:
        first = lags[item[1][0]]
        return -(first.oldest_unlanded_age_s or 0.0), -first.lag, item[0]

    for s, clients in sorted(by_shard.items(), key=urgency):
        chunk = tuple(clients[:max_clients_per_run])
        runs.append(PlannedRun(s, chunk, {c: lags[c].database for c in chunk}, _run_key(s, chunk, lags, bucket)))
        if max_runs is not None and len(runs) >= max_runs:
            break
    return runs
