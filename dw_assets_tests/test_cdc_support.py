"""Helpers for the CDC tests: per-test topic prefix and state dir on the session stack, and a plain consumer.

Tests share the session's MariaDB and broker; each uses its own databases, topic prefix and home directory.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import orjson
import pymysql
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.db import connect
from dw_assets.identifiers import quote_ident
from dw_assets.settings import Settings


@pytest.fixture
def cdc_settings(stack_settings: Settings, tmp_path: Path) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return replace(stack_settings, home=tmp_path / "home", kafka=replace(stack_settings.kafka, topic_prefix=prefix))


def new_db(settings: Settings, prefix: str = "cdc") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {quote_ident(name)} CHARACTER SET utf8mb4")
    return name


def sql(settings: Settings, database: str | None, *statements: str | tuple[str, Any], autocommit: bool = True) -> None:
    """Run statements in one session; with autocommit=False they form one transaction."""
    with connect(settings, database=database, autocommit=autocommit) as conn:
        with conn.cursor() as cur:
            for st in statements:
                if isinstance(st, tuple):
                    cur.execute(st[0], st[1])
                else:
                    cur.execute(st)
        if not autocommit:
            conn.commit()


def capture_once(settings: Settings, databases: Iterable[str], **kw: Any) -> CaptureService:
    opts = CaptureOptions(once=True, databases=fixed_source(settings, set(databases)), heartbeat_interval_ms=200,
                          stats_interval_s=30, **kw)
    service = CaptureService(settings, opts)
    service.run()
    return service


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any

    @property
    def op(self) -> str | None:
        return None if self.value is None else self.value["op"]


def consume(settings: Settings, topics: Iterable[str], timeout: float = 20.0) -> list[Msg]:
    """Every message of `topics` from the beginning, in partition order (plain confluent-kafka consumer)."""
    topics = list(topics)
    c = Consumer(settings.kafka.client_config() | {"group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False,
                                                   "enable.partition.eof": True, "fetch.wait.max.ms": 10})
    try:
        md = c.list_topics(timeout=10)
        parts = [TopicPartition(t, p, 0) for t in topics if t in md.topics for p in md.topics[t].partitions]
        if not parts:
            return []
        c.assign(parts)
        pending = {(tp.topic, tp.partition) for tp in parts}
        out: list[Msg] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard((m.topic(), m.partition()))
                    continue
                raise RuntimeError(m.error())
            out.append(Msg(m.topic(), m.partition(), m.offset(),
                           None if m.key() is None else orjson.loads(m.key()),
                           None if m.value() is None else orjson.loads(m.value())))
        assert not pending, f"no EOF from {pending}"
        return out
    finally:
        c.close()


def topic_names(settings: Settings) -> list[str]:
    from confluent_kafka.admin import AdminClient

    md = AdminClient(settings.kafka.client_config()).list_topics(timeout=10)
    return sorted(md.topics)


def apply_changes(msgs: list[Msg]) -> dict[str, dict[Any, dict]]:
    """Replay change events per topic into {topic: {key json: row}} (what a downstream merge would build)."""
    state: dict[str, dict[Any, dict]] = {}
    for m in sorted(msgs, key=lambda m: (m.topic, m.partition, m.offset)):
        if m.value is None:
            continue
        t = state.setdefault(m.topic, {})
        op = m.value["op"]
        if op == "t":
            # Truncate messages are on every partition: drop this partition's keys only.
            for k in [k for k, (p, _) in t.items() if p == m.partition]:
                del t[k]
        elif op == "d":
            t.pop(orjson.dumps(m.key), None)
        else:
            t[orjson.dumps(m.key)] = (m.partition, m.value["after"])
    return {topic: {k: row for k, (_, row) in rows.items()} for topic, rows in state.items()}


def table_rows(settings: Settings, database: str, table: str) -> list[tuple]:
    with connect(settings, database=database) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {quote_ident(table)} ORDER BY 1")
        return list(cur.fetchall())


def master_position(settings: Settings) -> tuple[str, int]:
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        f, p = cur.fetchone()[:2]
        return f, int(p)


__all__ = ["cdc_settings", "new_db", "sql", "capture_once", "consume", "apply_changes", "Msg", "topic_names",
           "table_rows", "master_position", "pymysql"]
