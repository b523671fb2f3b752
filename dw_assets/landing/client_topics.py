"""Which topic partitions belong to a client: every data topic named `<prefix>.<client_db>.*`, found by listing.

One metadata request serves any number of clients, so the lag sensor and the writer share this.
"""
from __future__ import annotations

from typing import Mapping

from confluent_kafka.admin import AdminClient, ClusterMetadata

from ..contracts import client_topic_prefix, dlq_topic


def list_cluster_topics(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    """topic -> partition count, for every topic the broker reports without error."""
    md: ClusterMetadata = admin.list_topics(timeout=timeout)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None and t.partitions}


def client_topics(topics: Mapping[str, int], prefix: str, database: str) -> dict[str, int]:
    """The client's data topics among `topics` (dead-letter topics excluded: they share the prefix)."""
    start = client_topic_prefix(prefix, database)
    return {t: n for t, n in sorted(topics.items())
            if t.startswith(start) and not t.endswith(dlq_topic(""))}


def topics_by_client(topics: Mapping[str, int], prefix: str,
                     databases: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """client -> its topics, for many clients in one pass (client -> production database in `databases`)."""
    by_db: dict[str, list[str]] = {}
    for client, db in databases.items():
        by_db.setdefault(client_topic_prefix(prefix, db), []).append(client)
    out: dict[str, dict[str, int]] = {c: {} for c in databases}
    skip = dlq_topic("")
    for t, n in sorted(topics.items()):
        if t.endswith(skip) or not t.startswith(prefix + "."):
            continue
        # <prefix>.<db>.<table>: the db part is what follows the prefix up to the next dot.
        db_end = t.find(".", len(prefix) + 1)
        if db_end < 0:
            continue
        for client in by_db.get(t[: db_end + 1], ()):
            out[client][t] = n
    return out
