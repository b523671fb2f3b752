"""Which incarnation of a topic a landing file came from, and the check that the broker still holds it.

A broker that loses its log (memory storage restarted, a topic deleted and re-created) hands out the same offsets
again for different events. Landing must then stop instead of adopting an old file or skipping offsets it
committed before. Evidence, strongest first: the topic id (a UUID per topic creation; Tansu has them), the
partition count, the landing group's committed offset against the log end, and the fingerprint of the first
message of each file (timestamp and checksums), which also works where a broker has no topic ids.
The topic ids and partition counts landing has seen per client are kept in the landing store under `_dw/`.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient

from .store import LandingStore

NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # the all-zero UUID: a broker without topic ids


class LandingReset(RuntimeError):
    """The broker no longer holds the log this client's landing files and offsets came from."""

    def __init__(self, client: str, problems: list[str], recreated: bool = False):
        # recreated: the proof is a changed topic id, so the old log is certainly gone and recovery is safe to
        # run without an operator (it archives, never deletes, and a replay only re-sends changes).
        self.client, self.problems, self.recreated = client, problems, recreated
        super().__init__(
            f"landing of client {client!r} stopped: the broker lost or re-created topics it had landed from "
            f"({'; '.join(problems)}). Events may be missing between the broker and landing. Recover with "
            f"`dw landing recover --client {client}` (archives the old incarnation's files, resets the landing "
            f"offsets and re-captures the lost events from the binlog).")


def message_fingerprint(timestamp_ms: int | None, key: bytes | None, value: bytes | None) -> str:
    """A short identity of one message: equal offsets with different fingerprints are different events."""
    return f"{timestamp_ms if timestamp_ms is not None else -1}:{zlib.crc32(key or b''):08x}:" \
           f"{zlib.crc32(value or b''):08x}"


def fingerprint_of(msg: Any) -> str:
    ts_type, ts = msg.timestamp()
    return message_fingerprint(ts if ts_type else None, msg.key(), msg.value())


def topic_ids(admin: AdminClient, topics: Iterable[str], timeout: float = 10.0) -> dict[str, str | None]:
    """topic -> its topic id (base64 UUID), None where the broker gives none."""
    names = sorted(set(topics))
    if not names:
        return {}
    out: dict[str, str | None] = {t: None for t in names}
    try:
        futures = admin.describe_topics(TopicCollection(names), request_timeout=timeout)
    except Exception:  # noqa: BLE001 - an old broker without DescribeTopics: fall back to fingerprints
        return out
    for name, fut in futures.items():
        try:
            tid = str(fut.result(timeout=timeout).topic_id or "")
        except Exception:  # noqa: BLE001 - the topic vanished meanwhile, or no ids: the other checks remain
            continue
        out[name] = tid if tid and tid != NO_TOPIC_ID else None
    return out


def record_key(client: str) -> str:
    return f"_dw/incarnations/{client}.json"


@dataclass
class SeenTopics:
    """The incarnation of each of a client's topics that its landing files and offsets belong to."""

    client: str
    topics: dict[str, dict[str, Any]] = field(default_factory=dict)  # topic -> {"topic_id", "partitions"}

    @classmethod
    def load(cls, store: LandingStore, client: str) -> "SeenTopics":
        key = record_key(client)
        if store.head(key) is None:
            return cls(client)
        return cls(client, json.loads(store.get(key))["topics"])

    def save(self, store: LandingStore) -> None:
        data = json.dumps({"client": self.client, "topics": self.topics}, indent=1, sort_keys=True).encode()
        store.put(record_key(self.client), data, {"dw-writer": "dw-landing/1"})

    def problems(self, current: Mapping[str, int], ids: Mapping[str, str | None]) -> list[str]:
        """What differs between the recorded and the current incarnation of each topic."""
        out = []
        for topic, n in sorted(current.items()):
            seen = self.topics.get(topic)
            if seen is None:
                continue
            old_id, new_id = seen.get("topic_id"), ids.get(topic)
            if old_id and new_id and old_id != new_id:
                out.append(f"{topic}: topic id {new_id}, landed from {old_id} (the topic was re-created)")
            elif seen.get("partitions") != n:
                out.append(f"{topic}: {n} partitions, landed from {seen.get('partitions')}")
        return out

    def remember(self, current: Mapping[str, int], ids: Mapping[str, str | None]) -> bool:
        """Record topics not seen before; True if anything changed."""
        changed = False
        for topic, n in current.items():
            if topic not in self.topics:
                self.topics[topic] = {"topic_id": ids.get(topic), "partitions": n}
                changed = True
        return changed
