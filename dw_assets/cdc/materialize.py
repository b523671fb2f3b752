"""One client's capture as an orchestrated step: bounded catch-up, then the figures Dagster shows as metadata.

The binlog stream is per server, so the catch-up captures every active client up to now (one checkpoint, no
duplicates); when the continuous service runs, it only observes what that service has produced.
"""
from __future__ import annotations

import logging
from typing import Any

from ..contracts import client_topic_prefix
from ..settings import Settings
from .capture import CaptureOptions, CaptureService
from .checkpoint import CheckpointStore, ServiceLock, state_dir
from .envelope import now_ms
from .topics import TopicRegistry, end_offsets


def _production_db(settings: Settings, client: str) -> str:
    try:
        from ..onboarding.registry import get_client

        return get_client(settings, client).production_db
    except ImportError:
        return client


def catch_up_client(settings: Settings, client: str, log: Any = None) -> dict[str, Any]:
    log = log or logging.getLogger(__name__)
    db = _production_db(settings, client)
    running = ServiceLock(state_dir(settings)).holder_pid()
    meta: dict[str, Any] = {"database": db}
    if running:
        log.info(f"capture service pid {running} is running: observing only")
        meta["mode"] = "observed (continuous service running)"
        meta["events_captured"] = 0
    else:
        service = CaptureService(settings, CaptureOptions(once=True, stats_interval_s=60))
        stats = service.run()
        meta["mode"] = "catch-up (--once)"
        meta["events_captured"] = service.events_by_db.get(db, 0)
        meta["events_captured_all_clients"] = stats.events
    cp = CheckpointStore(state_dir(settings)).load()
    if cp is not None:
        meta["position"] = f"{cp.file}:{cp.pos}"
        meta["gtid"] = cp.gtid or ""
        meta["last_source_ts_ms"] = cp.last_event_ts_ms or 0
        meta["capture_lag_ms"] = 0 if not running else max(0, now_ms() - (cp.last_event_ts_ms or now_ms()))
        meta["snapshot_state"] = cp.databases.get(db, "not captured")
    prefix = client_topic_prefix(settings.kafka.topic_prefix, db)
    topics = sorted(t for t in TopicRegistry(settings).partitions if t.startswith(prefix))
    offsets = end_offsets(settings, topics)
    meta["topics"] = len(topics)
    meta["end_offsets"] = {t: sum(p.values()) for t, p in offsets.items()}
    meta["messages_total"] = sum(sum(p.values()) for p in offsets.values())
    return meta
