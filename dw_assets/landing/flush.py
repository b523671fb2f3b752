"""When a landing file is cut: the flush rules and the per-partition buffer that applies them.

Size cuts (records or value bytes) fall at exactly the same offset whatever the consume batches looked like, so a
replay after a crash reproduces the same file; time-based cuts (idle, max age, end of a bounded run) are made
reproducible by the writer adopting the object it finds at the same start offset.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FlushPolicy:
    """flush.size and flush.bytes as in Confluent's S3 sink, plus wall-clock rules for quiet partitions.

    Under load a partition fills a file by records or bytes long before it goes idle, so files stay large; a quiet
    partition is flushed `idle_seconds` after its last message; a trickle that never goes idle is flushed once its
    oldest buffered message has waited `max_age_seconds`.
    """

    flush_records: int = 50_000
    flush_bytes: int = 64 * 1024 * 1024  # of Kafka record values; Parquet compresses that ~3-8x
    idle_seconds: float = 10.0
    max_age_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.flush_records < 1 or self.flush_bytes < 1:
            raise ValueError("flush_records and flush_bytes must be positive")

    def take(self, n_records: int, n_bytes: int, sizes: np.ndarray) -> tuple[int, bool]:
        """How many of the next messages (value sizes `sizes`) belong in the current file, and whether it is then full.

        The message that reaches a limit is the file's last one, so the cut depends only on the message sequence.
        """
        room = self.flush_records - n_records
        cum = n_bytes + np.cumsum(sizes, dtype=np.int64)
        by_bytes = int(np.searchsorted(cum, self.flush_bytes, side="left")) + 1  # index of first cum >= limit, +1
        take = min(room, by_bytes, len(sizes))
        return take, take == room or take == by_bytes


@dataclass
class PartitionBuffer:
    """Messages of one topic partition waiting to become a landing file covering [start_offset, last_offset].

    They are kept as consumed and decoded once, when the file is cut: decoding per consume batch (often a message
    or two per partition under a steady trickle) cost the ingest service most of its CPU in fixed overhead."""

    topic: str
    partition: int
    start_offset: int = -1
    last_offset: int = -1
    n_records: int = 0  # messages consumed, including tombstones and dead letters (they advance the offset too)
    n_bytes: int = 0
    messages: list[Any] = field(default_factory=list)  # confluent_kafka.Message
    first_seen: float = 0.0  # monotonic time the oldest buffered message arrived
    last_seen: float = 0.0

    @property
    def empty(self) -> bool:
        return self.n_records == 0

    def add(self, first_offset: int, last_offset: int, n_bytes: int, messages: list[Any],
            now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.empty:
            self.start_offset = first_offset
            self.first_seen = now
        self.last_offset = last_offset
        self.n_records += len(messages)
        self.n_bytes += n_bytes
        self.messages.extend(messages)
        self.last_seen = now

    def due(self, policy: FlushPolicy, now: float) -> str | None:
        """The time rule that wants this buffer flushed now, if any."""
        if self.empty:
            return None
        if now - self.last_seen >= policy.idle_seconds:
            return "idle"
        if now - self.first_seen >= policy.max_age_seconds:
            return "max-age"
        return None

    def drain(self) -> tuple[int, int, list[Any]]:
        """(start offset, last offset, messages) and reset for the next file."""
        out = (self.start_offset, self.last_offset, self.messages)
        self.start_offset = self.last_offset = -1
        self.n_records = self.n_bytes = 0
        self.messages = []
        return out


def message_sizes(messages: list[Any]) -> np.ndarray:
    """Value sizes in bytes (len() of a confluent_kafka.Message is its value's length; 0 for a tombstone)."""
    return np.fromiter(map(len, messages), dtype=np.int64, count=len(messages))
