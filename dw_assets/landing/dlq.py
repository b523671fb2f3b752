"""Dead letters: messages landing cannot parse go to `<topic>.dlq`, unchanged, with the error and their origin.

Headers follow Kafka Connect's `errors.deadletterqueue.context.headers.enable` naming so existing tooling reads
them. Delivery is at-least-once: the writer flushes the producer before committing past a dead letter.
"""
from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ..contracts import dlq_topic
from ..settings import Settings
from .envelope_rows import BadMessage
from .kafka_config import landing_client_config

ERROR_HEADER = "__connect.errors.exception.message"


class DeadLetterPublisher:
    def __init__(self, settings: Settings, client: str):
        self._settings = settings
        self._client = client
        self._producer: Producer | None = None
        self._known: set[str] = set()
        self.published = 0
        self._unflushed = 0
        self._errors: list[str] = []

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _ensure_topic(self, topic: str) -> None:
        if topic in self._known:
            return
        admin = AdminClient(landing_client_config(self._settings))
        meta = admin.list_topics(timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            fut = admin.create_topics([NewTopic(topic, 1, self._settings.kafka.replication_factor)])[topic]
            try:
                fut.result(timeout=15)
            except KafkaException as e:
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise
        self._known.add(topic)

    def publish(self, bad: list[BadMessage]) -> None:
        if not bad:
            return
        if self._producer is None:
            self._producer = Producer({**landing_client_config(self._settings), "enable.idempotence": True,
                                       "acks": "all", "linger.ms": 5, "client.id": f"dw-landing-dlq.{self._client}"})
        for b in bad:
            m = b.message
            target = dlq_topic(m.topic())
            self._ensure_topic(target)
            ts_type, ts = m.timestamp()
            headers: list[tuple[str, Any]] = list(m.headers() or [])
            headers += [
                (ERROR_HEADER, b.error.encode()),
                ("__connect.errors.topic", m.topic().encode()),
                ("__connect.errors.partition", str(m.partition()).encode()),
                ("__connect.errors.offset", str(m.offset()).encode()),
                ("__connect.errors.timestamp", str(ts if ts_type else -1).encode()),
                ("dw.landing.client", self._client.encode()),
            ]
            self._producer.produce(target, key=m.key(), value=m.value(), headers=headers,
                                   on_delivery=self._delivered)
            self._unflushed += 1
            self.published += 1
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Make every dead letter so far durable; the caller commits offsets past them only after this."""
        if self._producer is None or not self._unflushed:
            return
        left = self._producer.flush(timeout)
        if left or self._errors:
            raise RuntimeError(f"dead letters not delivered ({left} pending): {self._errors[:3]}")
        self._unflushed = 0

    def close(self) -> None:
        self.flush()
