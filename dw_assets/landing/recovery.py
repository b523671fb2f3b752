"""`dw landing recover --client X`: back to exactness after the broker lost events landing had not landed yet.

1. The client's landing files of a dead incarnation (topic re-created, partition gone, or offsets past the new log
   end) move to `<landing>/archive/<incarnation>-<time>/<key>`; nothing is overwritten or deleted, and the lake's
   manifest records the move so that files of the new incarnation under the same names are applied.
2. The landing group's offsets go to the new log start (re-created topics) or the new log end (a lost tail).
3. The events after the last one the client has landed are lost from Kafka but still in the binlog: capture is
   asked to emit that database's changes again from that position (a replay; the other clients are not
   re-emitted). Where the binlog no longer has it, the client is snapshotted again instead.
Silver ignores changes it already holds (by binlog order), so the overlap of a replay is harmless.
"""
from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from ..contracts import client_topic_prefix, landing_group
from ..identifiers import validate_client_name
from ..settings import Settings
from .client_lock import client_lock
from .client_topics import client_topics, list_cluster_topics
from .incarnation import SeenTopics, topic_ids
from .kafka_config import landing_client_config
from .lag import committed_offsets
from .store import LandingStore, open_store
from .watermarks import probe_partitions

log = logging.getLogger(__name__)
TP = tuple[str, int]


@dataclass
class RecoveryReport:
    client: str
    database: str
    archived: list[str] = field(default_factory=list)  # original keys
    archive_prefix: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)  # "topic:p" -> offset the landing group was reset to
    renamed_in_manifest: int = 0
    replay_from: str | None = None  # binlog position capture re-emits the database from
    resnapshot: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"client": self.client, "database": self.database, "archived": len(self.archived),
                "archive_prefix": self.archive_prefix, "offsets": self.offsets,
                "renamed_in_manifest": self.renamed_in_manifest, "replay_from": self.replay_from,
                "resnapshot": self.resnapshot, "notes": self.notes}


def _partition_of(key: str) -> int:
    return int(key.rsplit("/", 2)[-2].removeprefix("partition="))


def _start_of(key: str) -> int:
    return int(key.rsplit("+", 1)[-1].split(".", 1)[0])


def _last_position(store: LandingStore, key: str) -> tuple[str, int] | None:
    """The largest (binlog file, position) among a landing file's events."""
    t = pq.read_table(io.BytesIO(store.get(key)), columns=["source_file", "source_pos"])
    best = None
    for f, p in zip(t["source_file"].to_pylist(), t["source_pos"].to_pylist()):
        if f and p is not None:
            cand = (int(f.rsplit(".", 1)[-1]), int(p), f)
            best = cand if best is None or cand > best else best
    return None if best is None else (best[2], best[1])


def dead_files(store: LandingStore, keys: list[str], current: dict[str, int], ids: dict[str, str | None],
               seen: SeenTopics, ends: dict[TP, int]) -> dict[str, str]:
    """key -> the incarnation it belongs to, for every landing file the broker no longer holds the log of."""
    out: dict[str, str] = {}
    for key in keys:
        topic = key.split("/", 2)[1]
        p, start = _partition_of(key), _start_of(key)
        meta = store.head(key) or {}
        old_id = meta.get("dw-topic-id") or (seen.topics.get(topic) or {}).get("topic_id")
        label = old_id or "unknown"
        new_id = ids.get(topic)
        if topic not in current or p >= current[topic]:
            out[key] = label  # the topic or partition is gone
        elif old_id and new_id and old_id != new_id:
            out[key] = label  # re-created: a new log under the same name
        elif start >= ends.get((topic, p), 0):
            out[key] = label  # same log, but the broker lost its tail
    return out


def recover_client(settings: Settings, client: str, *, database: str | None = None,
                   store: LandingStore | None = None, request_capture: bool = True) -> RecoveryReport:
    """Archive the dead incarnation's files, reset the landing offsets and ask capture to re-emit what was lost."""
    client = validate_client_name(client)
    database = database or client
    store = store or open_store(settings)
    report = RecoveryReport(client, database)
    with client_lock(settings.home, client):
        admin = AdminClient(landing_client_config(settings))
        current = client_topics(list_cluster_topics(admin), settings.kafka.topic_prefix, database)
        ids = topic_ids(admin, current)
        tps = [(t, p) for t, n in current.items() for p in range(n)]
        probes = probe_partitions(settings, {tp: None for tp in tps})
        ends = {tp: pr.high for tp, pr in probes.items()}
        committed = committed_offsets(admin, {landing_group(client): tps}).get(landing_group(client), {})
        seen = SeenTopics.load(store, client)
        prefix = f"topics/{client_topic_prefix(settings.kafka.topic_prefix, database)}"
        keys = [k for k in store.list(prefix) if k.endswith(".parquet")]
        dead = dead_files(store, keys, current, ids, seen, ends)

        # Where capture must start again: after the last event landed, per partition of the dead files; the
        # earliest of those, so that no partition misses anything (the overlap is re-applied harmlessly).
        last_per_tp: dict[TP, str] = {}
        for key in dead:
            tp = (key.split("/", 2)[1], _partition_of(key))
            if tp not in last_per_tp or _start_of(key) > _start_of(last_per_tp[tp]):
                last_per_tp[tp] = key
        positions = [pos for k in last_per_tp.values() if (pos := _last_position(store, k)) is not None]
        since = min(positions, key=lambda fp: (int(fp[0].rsplit(".", 1)[-1]), fp[1])) if positions else None

        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        report.archive_prefix = f"archive/{stamp}"
        moved: dict[str, str] = {}
        for key, incarnation in sorted(dead.items()):
            target = f"archive/{incarnation.replace('/', '_')}-{stamp}/{key}"
            if store.head(target) is None:
                store.put(target, store.get(key), store.head(key) or {})
            store.delete(key)
            report.archived.append(key)
            moved[key] = target
        report.renamed_in_manifest = _rename_in_lake(settings, client, moved)

        # Offsets: re-created topics land from their new log start; a lost tail from the new log end.
        recreated = {k.split("/", 2)[1] for k, label in dead.items() if label != ids.get(k.split("/", 2)[1])}
        reset: dict[TP, int] = {}
        for tp in tps:
            off = committed.get(tp)
            if tp[0] in recreated:
                reset[tp] = probes[tp].low
            elif off is not None and off > ends[tp]:
                reset[tp] = ends[tp]
        if reset:
            _commit(settings, client, reset)
            report.offsets = {f"{t}:{p}": o for (t, p), o in sorted(reset.items())}
        # The record now names what the broker holds: topics not re-created yet had all their files archived.
        seen.topics = {t: {"topic_id": ids.get(t), "partitions": n} for t, n in current.items()}
        seen.save(store)

    if dead and request_capture:
        _request_capture(settings, database, since, report)
    elif not dead:
        report.notes.append("no landing file of a lost incarnation: nothing to re-capture")
    return report


def _rename_in_lake(settings: Settings, client: str, moved: dict[str, str]) -> int:
    if not moved or not settings.lake_url:
        return 0
    from ..lakehouse.apply_lock import apply_lock
    from ..lakehouse.client_state import rename_landing_files

    with apply_lock(settings.home, client):  # an apply pass reading the manifest meanwhile would miss the rename
        return rename_landing_files(settings, client, moved)


def _commit(settings: Settings, client: str, offsets: dict[TP, int]) -> None:
    consumer = Consumer({**landing_client_config(settings), "group.id": landing_group(client),
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


def _request_capture(settings: Settings, database: str, since: tuple[str, int] | None,
                     report: RecoveryReport) -> None:
    """A replay from `since` while the binlog has it, else a re-snapshot of the database."""
    from ..cdc.checkpoint import CheckpointStore, Position, state_dir
    from ..db import connect

    store = CheckpointStore(state_dir(settings))
    with connect(settings, "cdc") as conn, conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        files = {r[0] for r in cur.fetchall()}
    if since is not None and since[0] in files:
        store.request_replay(database, Position.of(*since))
        report.replay_from = f"{since[0]}:{since[1]}"
        return
    why = f"the binlog {since[0]} is purged" if since else "no landed event carries a binlog position"
    store.request_resnapshot(database)
    report.resnapshot = True
    report.notes.append(f"{why}: {database} will be snapshotted again")
