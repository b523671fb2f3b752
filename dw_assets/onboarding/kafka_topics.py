"""A client's Kafka side: its data topics created up front with the client's partition count, and removed again
(with its dead-letter topics and the landing group's offsets) on offboarding.

Creating topics before the snapshot fixes their partition count: capture would otherwise create them on the first
event with the server-wide default.
"""
from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from dw_assets.cdc.topics import TopicRegistry
from dw_assets.contracts import client_topic_prefix, data_topic, landing_group
from dw_assets.landing.client_topics import list_cluster_topics
from dw_assets.model import StandardModel
from dw_assets.settings import Settings

log = logging.getLogger(__name__)


def model_topics(settings: Settings, database: str, model: StandardModel) -> list[str]:
    return [data_topic(settings.kafka.topic_prefix, database, t.name) for t in model.tables]


def create_client_topics(settings: Settings, database: str, model: StandardModel, partitions: int
                         ) -> tuple[dict[str, int], list[str]]:
    """Ensure one topic per model table; returns (topic -> partition count, topics created by this call)."""
    registry = TopicRegistry(settings)
    existing = set(registry.partitions)
    counts = {name: registry.ensure(name, partitions) for name in model_topics(settings, database, model)}
    return counts, sorted(set(counts) - existing)


def client_topic_names(settings: Settings, database: str) -> list[str]:
    """Every topic of the client database on the cluster, dead-letter topics included."""
    prefix = client_topic_prefix(settings.kafka.topic_prefix, database)
    topics = list_cluster_topics(AdminClient(settings.kafka.client_config()))
    return sorted(t for t in topics if t.startswith(prefix))


def delete_client_topics(settings: Settings, database: str, timeout_s: float = 30.0) -> list[str]:
    """Delete the client's topics and wait until the cluster no longer lists them; returns the names deleted."""
    names = client_topic_names(settings, database)
    if not names:
        return []
    admin = AdminClient(settings.kafka.client_config())
    for name, future in admin.delete_topics(names, operation_timeout=15).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as e:
            if "UNKNOWN_TOPIC" not in str(e):
                raise
    deadline = time.monotonic() + timeout_s
    while client_topic_names(settings, database):
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics of {database} still listed {timeout_s:.0f}s after deletion")
        time.sleep(0.1)
    return names


def reset_landing_group(settings: Settings, client: str) -> bool:
    """Forget the landing group's committed offsets, so that topics created again are landed from offset 0.

    Returns False when the broker cannot delete groups; the offsets then point past the ends of the new, empty
    topics, which the landing writer would read as "nothing new" until those offsets are reached again.
    """
    admin = AdminClient(settings.kafka.client_config())
    try:
        for future in admin.delete_consumer_groups([landing_group(client)], request_timeout=15).values():
            future.result(timeout=20)
        return True
    except KafkaException as e:
        text = str(e)
        if "GROUP_ID_NOT_FOUND" in text or "group id not found" in text.lower():
            return True  # never committed anything
        log.warning("could not delete consumer group %s: %s", landing_group(client), e)
        return False
