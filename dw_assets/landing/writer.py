"""The landing writer: one client's CDC topics -> Parquet files in the landing store, exactly once per file.

Reads with the client's landing group (`dw-landing.<client>`) through assign() and explicitly fetched committed
offsets, so no group rebalance is ever waited for; commits a partition only after its file is uploaded. A
restarted writer that finds the object of the file it is about to start already uploaded (crash before commit)
adopts it: it skips that object's offsets and commits, so nothing is landed twice and names stay deterministic.
It adopts only a file of the topic incarnation the broker holds now: a re-created topic, a changed partition
count or a committed offset above the log end stops the client with `LandingReset` (see `incarnation`), and a
broker, coordinator or S3 outage is waited out (see `outage`).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from itertools import compress, count, repeat
from operator import is_not
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from ..contracts import landing_group, landing_object_key
from ..identifiers import validate_client_name
from ..settings import Settings
from .client_lock import client_lock
from .client_topics import client_topics, list_cluster_topics
from .dlq import DeadLetterPublisher
from .envelope_rows import decode_messages
from .flush import FlushPolicy, PartitionBuffer, message_sizes
from .gc_threshold import landing_gc_threshold
from .incarnation import LandingReset, SeenTopics, fingerprint_of, topic_ids
from .kafka_config import landing_client_config
from .landing_file import LandedFile, encode_landing_file, end_offset_of
from .outage import kafka_transient, ride_out
from .store import LandingStore, open_store
from .watermarks import probe_partitions

log = logging.getLogger(__name__)

TP = tuple[str, int]
TOPIC_REFRESH_SECONDS = 30.0  # a continuous writer picks up new tables' topics this often


@dataclass
class LandingHooks:
    """`after_upload` runs after a file is uploaded and before its offsets are committed (a test seam, and how
    the ingest service learns of new files); `uploaded_rows` then gets the file's rows as uploaded."""

    after_upload: Callable[[LandedFile], None] | None = None
    uploaded_rows: Callable[[LandedFile, pa.Table], None] | None = None


@dataclass
class LandingReport:
    client: str
    database: str
    files: list[LandedFile] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)  # objects found uploaded-but-uncommitted and committed past
    messages: int = 0  # consumed, including tombstones and dead letters
    records: int = 0  # rows written
    bytes: int = 0  # Parquet bytes written
    dead_letters: int = 0
    tombstones: int = 0
    offsets: dict[str, dict[str, int | None]] = field(default_factory=dict)  # "topic:p" -> committed before/after
    end_offsets: dict[str, int] = field(default_factory=dict)  # bounded runs: the ends captured at start
    complete: bool = True  # bounded runs: everything up to the captured ends was landed
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {"client": self.client, "files": len(self.files), "records": self.records, "bytes": self.bytes,
                "messages": self.messages, "dead_letters": self.dead_letters, "tombstones": self.tombstones,
                "adopted": len(self.adopted), "complete": self.complete, "seconds": round(self.seconds, 3),
                "events_per_second": round(self.events_per_second, 1)}


@dataclass
class _PartitionState:
    tp: TP
    buffer: PartitionBuffer
    committed: int | None
    end: int | None = None  # bounded runs: stop before this offset
    skip_through: int = -1  # offsets up to here are in an adopted object
    first_message: str | None = None  # fingerprint of the buffer's first message (the file's incarnation)
    pending_commit: int | None = None
    done: bool = False


_error, _topic, _partition = Message.error, Message.topic, Message.partition


def _group_by_partition(msgs: list[Any], by_tp: dict[TP, list[Any]]) -> None:
    """Append messages (no errors) to their partition's list in `by_tp`, keeping each partition's order.

    A consume batch holds long runs of one partition (a fetch response each): the run boundaries are found with
    numpy instead of a Python step per message.
    """
    n = len(msgs)
    topics = list(map(_topic, msgs))
    partitions = np.fromiter(map(_partition, msgs), dtype=np.int64, count=n)
    if topics.count(topics[0]) == n:
        keys = partitions
    else:
        codes: dict[str, int] = {}
        topic_codes = np.fromiter(map(codes.setdefault, topics, count()), dtype=np.int64, count=n)
        keys = topic_codes * (int(partitions.max()) + 1) + partitions
    starts = [0, *(np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist()]
    for a, b in zip(starts, starts[1:] + [n]):
        tp = (topics[a], int(partitions[a]))
        run = msgs[a:b]
        lst = by_tp.get(tp)
        if lst is None:
            by_tp[tp] = run
        else:
            lst.extend(run)


def writer_consumer_config(settings: Settings, client: str) -> dict[str, Any]:
    return {
        **landing_client_config(settings),
        "group.id": landing_group(client),
        "client.id": f"dw-landing.{client}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Positions are always explicit; one out of range means the log was lost or truncated under us: an
        # error (never a silent jump to the earliest offset, which would re-land or skip a new log).
        "auto.offset.reset": "error",
        "enable.partition.eof": True,  # a bounded run knows a partition is finished even if its end is a gap
        "session.timeout.ms": settings.kafka.session_timeout_ms,
        # Tansu holds a fetch for the whole wait when there is no data: this bounds idle-flush latency, and
        # fewer, fuller fetches cost the broker less (`KafkaSettings.fetch_wait_ms`).
        "fetch.wait.max.ms": settings.kafka.fetch_wait_ms,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
    }


class LandingWriter:
    def __init__(self, settings: Settings, client: str, *, database: str | None = None,
                 policy: FlushPolicy | None = None, hooks: LandingHooks | None = None,
                 store: LandingStore | None = None, consume_batch: int = 20_000,
                 cluster_topics: Mapping[str, int] | None = None):
        self.settings = settings
        self.client = validate_client_name(client)
        self.database = database or client  # convention: the production database carries the client's name
        self.policy = policy or FlushPolicy()
        self.hooks = hooks or LandingHooks()
        self.store = store or open_store(settings)
        self.consume_batch = consume_batch
        # topic -> partition count, listed once by a caller landing many clients (listing costs a round trip
        # that grows with the cluster's topic count)
        self._cluster_topics = cluster_topics
        self._states: dict[TP, _PartitionState] = {}
        self._consumer: Consumer | None = None
        self._dlq = DeadLetterPublisher(settings, self.client)
        self._report = LandingReport(self.client, self.database)
        self._admin: AdminClient | None = None
        self._topic_ids: dict[str, str | None] = {}
        self._seen: SeenTopics | None = None

    # ---- public ----------------------------------------------------------------------------------------
    def run(self, *, bounded: bool = True, stop: threading.Event | None = None,
            max_seconds: float | None = None) -> LandingReport:
        """Land the client's topics.

        bounded=True: everything up to the end offsets captured at start, then return (what Dagster runs).
        bounded=False: keep going, flushing by size and by the idle/max-age rules, until `stop` is set.
        `max_seconds` caps either mode; whatever is buffered then is flushed and committed.
        """
        started = time.monotonic()
        with client_lock(self.settings.home, self.client), landing_gc_threshold():
            try:
                self._start(bounded)
                self._loop(bounded, stop, None if max_seconds is None else started + max_seconds)
            finally:
                if self._consumer is not None:
                    self._consumer.close()
                self._dlq.flush()
        self._report.seconds = time.monotonic() - started
        for st in self._states.values():
            key = f"{st.tp[0]}:{st.tp[1]}"
            self._report.offsets[key]["to"] = st.committed
        return self._report

    # ---- set-up ----------------------------------------------------------------------------------------
    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(landing_client_config(self.settings))
        return self._admin

    def _discover(self, refresh: bool = False) -> list[TP]:
        if self._cluster_topics is None or refresh:
            self._cluster_topics = ride_out(lambda: list_cluster_topics(self._admin_client()),
                                            f"landing {self.client}: listing topics")
        topics = client_topics(self._cluster_topics, self.settings.kafka.topic_prefix, self.database)
        self._verify_incarnation(topics)
        return [(t, p) for t, n in topics.items() for p in range(n)]

    def _verify_incarnation(self, topics: Mapping[str, int]) -> None:
        """Stop (LandingReset) if a topic is not the incarnation this client landed from; record new topics."""
        if self._seen is None:
            self._seen = ride_out(lambda: SeenTopics.load(self.store, self.client),
                                  f"landing {self.client}: reading its topic record")
        self._topic_ids = ride_out(lambda: topic_ids(self._admin_client(), topics),
                                   f"landing {self.client}: describing topics")
        problems = self._seen.problems(topics, self._topic_ids)
        if problems:
            raise LandingReset(self.client, problems, recreated=all("topic id" in p for p in problems))
        if self._seen.remember(topics, self._topic_ids):
            seen = self._seen
            ride_out(lambda: seen.save(self.store), f"landing {self.client}: saving its topic record")

    def _committed(self, tps: list[TP]) -> dict[TP, int | None]:
        consumer = self._consumer
        assert consumer is not None
        res = ride_out(lambda: consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=30),
                       f"landing {self.client}: fetching committed offsets")
        return {(r.topic, r.partition): (r.offset if r.offset >= 0 else None) for r in res}

    def _start(self, bounded: bool) -> None:
        self._consumer = Consumer(writer_consumer_config(self.settings, self.client))
        self._add_partitions(self._discover(), bounded)

    def _add_partitions(self, tps: list[TP], bounded: bool) -> None:
        assert self._consumer is not None
        new = [tp for tp in tps if tp not in self._states]
        if not new:
            return
        committed = self._committed(new)
        # The probe gives the end offsets a bounded run stops at, and the log start where nothing was committed
        # yet, so the consumer is assigned explicit offsets (a logical "beginning" costs a 500 ms backoff).
        probes = ride_out(lambda: probe_partitions(self.settings, committed),
                          f"landing {self.client}: probing end offsets")
        above = [f"{t}[{p}]: committed offset {committed[(t, p)]} above the log end {probes[(t, p)].high}"
                 for t, p in new if committed[(t, p)] is not None and committed[(t, p)] > probes[(t, p)].high]
        if above:
            raise LandingReset(self.client, above)
        assign = []
        for tp in new:
            pr = probes[tp]
            st = _PartitionState(tp, PartitionBuffer(*tp), committed[tp], pr.high if bounded else None)
            self._states[tp] = st
            self._report.offsets[f"{tp[0]}:{tp[1]}"] = {"from": committed[tp], "to": committed[tp]}
            position = committed[tp] if committed[tp] is not None else pr.low
            if bounded:
                self._report.end_offsets[f"{tp[0]}:{tp[1]}"] = pr.high
                if position >= pr.high:
                    st.done = True  # nothing new: do not even fetch
                    continue
            assign.append(TopicPartition(*tp, position))
        if assign:
            self._consumer.incremental_assign(assign)

    # ---- main loop -------------------------------------------------------------------------------------
    def _loop(self, bounded: bool, stop: threading.Event | None, deadline: float | None) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        next_refresh = time.monotonic() + TOPIC_REFRESH_SECONDS
        while True:
            if bounded and all(st.done for st in self._states.values()):
                break
            now = time.monotonic()
            if (stop is not None and stop.is_set()) or (deadline is not None and now >= deadline):
                self._flush_all("stop")
                self._commit_pending()
                if bounded:
                    self._report.complete = all(st.done for st in self._states.values())
                break
            # Take what is already queued without waiting; block (briefly) only when the queue is empty, since
            # consume() otherwise waits for a full batch or its timeout.
            msgs = consumer.consume(self.consume_batch, timeout=0) or \
                consumer.consume(self.consume_batch, timeout=self._poll_timeout(bounded, now))
            by_tp: dict[TP, list[Any]] = {}
            errors = list(map(_error, msgs))
            start = 0
            # Events (EOF, errors) are rare: the messages between them are grouped by partition in bulk.
            for i in [*compress(range(len(msgs)), map(is_not, errors, repeat(None))), len(msgs)]:
                if i > start:
                    _group_by_partition(msgs[start:i], by_tp)
                if i == len(msgs):
                    break
                start = i + 1
                m, err = msgs[i], errors[i]
                if err.code() == KafkaError._PARTITION_EOF:
                    tp = (m.topic(), m.partition())
                    if tp in by_tp:
                        self._ingest(self._states[tp], by_tp.pop(tp))
                    self._at_eof(self._states[tp], m.offset())
                elif err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                    raise LandingReset(self.client, [f"{m.topic()}[{m.partition()}]: {err.str()}"])
                elif err.fatal():
                    raise KafkaException(err)
                else:
                    log.warning("landing %s: consumer error %s", self.client, err)
                    if kafka_transient(err):
                        # The connection dropped: the broker that answers next may have lost its log. Check
                        # before taking anything it sends (blocks while it is away).
                        self._discover(refresh=True)
            for tp, lst in by_tp.items():
                self._ingest(self._states[tp], lst)
            if not bounded:
                now = time.monotonic()
                for st in self._states.values():
                    reason = st.buffer.due(self.policy, now)
                    if reason:
                        self._flush(st, reason)
                if now >= next_refresh:
                    self._add_partitions(self._discover(refresh=True), bounded=False)
                    next_refresh = now + TOPIC_REFRESH_SECONDS
            self._commit_pending()

    def _poll_timeout(self, bounded: bool, now: float) -> float:
        if bounded:
            return 0.02
        # Wake up in time for the earliest idle or max-age flush.
        soonest = 0.2
        for st in self._states.values():
            b = st.buffer
            if not b.empty:
                due = min(b.last_seen + self.policy.idle_seconds, b.first_seen + self.policy.max_age_seconds)
                soonest = min(soonest, due - now)
        return max(soonest, 0.0)

    # ---- per partition ---------------------------------------------------------------------------------
    def _ingest(self, st: _PartitionState, msgs: list[Any]) -> None:
        if st.done:
            return
        if st.end is not None and msgs[-1].offset() >= st.end:
            msgs = [m for m in msgs if m.offset() < st.end]  # a bounded run never reads past its captured end
        if st.skip_through >= 0 and msgs and msgs[0].offset() <= st.skip_through:
            msgs = [m for m in msgs if m.offset() > st.skip_through]
        if msgs:
            self._report.messages += len(msgs)
            sizes = message_sizes(msgs)
            pos = 0
            while pos < len(msgs):
                buf = st.buffer
                if buf.empty and self._adopt(st, msgs[pos]):
                    rest = [m for m in msgs[pos:] if m.offset() > st.skip_through]
                    self._report.messages -= len(msgs) - pos - len(rest)
                    msgs, sizes, pos = rest, message_sizes(rest), 0
                    continue
                take, full = self.policy.take(buf.n_records, buf.n_bytes, sizes[pos:])
                seg = msgs[pos:pos + take]
                if buf.empty:
                    st.first_message = fingerprint_of(seg[0])
                buf.add(seg[0].offset(), seg[-1].offset(), int(sizes[pos:pos + take].sum()), seg)
                pos += take
                if full:
                    self._flush(st, "size")
        if st.end is not None and self._last_position(st) >= st.end:
            self._finish(st)

    def _last_position(self, st: _PartitionState) -> int:
        """The next offset this writer would read for the partition (what it has consumed or adopted)."""
        candidates = [st.committed if st.committed is not None else -1, st.skip_through + 1]
        if not st.buffer.empty:
            candidates.append(st.buffer.last_offset + 1)
        if st.pending_commit is not None:
            candidates.append(st.pending_commit)
        return max(candidates)

    def _at_eof(self, st: _PartitionState, offset: int) -> None:
        # EOF at or past the captured end: whatever lies between the last message and the end is a gap
        # (transaction markers), so the partition is finished.
        if st.end is not None and not st.done and offset >= st.end:
            self._finish(st)

    def _finish(self, st: _PartitionState) -> None:
        self._flush(st, "end")
        st.done = True
        assert self._consumer is not None
        self._consumer.pause([TopicPartition(*st.tp)])

    def _adopt(self, st: _PartitionState, first: Message) -> bool:
        """If the file starting at `first`'s offset was already uploaded (by a run that died before committing),
        skip through its last offset and commit instead of writing it again: only if that file came from this
        very message (same topic incarnation), else the broker lost the log the file was cut from."""
        first_offset = first.offset()
        key = landing_object_key(st.tp[0], st.tp[1], first_offset)
        meta = ride_out(lambda: self.store.head(key), f"landing {self.client}: reading {key}")
        end = end_offset_of(meta)
        if meta is None or end is None or end < first_offset:
            return False
        problem = self._incarnation_mismatch(st.tp[0], key, meta, first)
        if problem:
            raise LandingReset(self.client, [problem], recreated="topic id" in problem)
        log.info("landing %s: adopting %s (offsets %d..%d, uploaded before a crash)", self.client, key,
                 first_offset, end)
        st.skip_through = end
        st.pending_commit = end + 1
        self._report.adopted.append(key)
        return True

    def _incarnation_mismatch(self, topic: str, key: str, meta: dict[str, str], first: Message) -> str | None:
        """Why the landed object `key` is not from the log the broker holds now, or None if it is."""
        current = self._topic_ids.get(topic)
        old = meta.get("dw-topic-id")
        if current and old and current != old:
            return f"{key} is from topic id {old}, the broker's {topic} is {current}"
        fp = fingerprint_of(first)
        recorded = meta.get("dw-first-message")
        if recorded is None:
            # A file written before incarnations were recorded: compare its row at this offset, if it has one.
            recorded = self._first_row_fingerprint(key, first.offset())
        if recorded is not None and recorded.split(":")[0] != fp.split(":")[0]:
            return f"{key} starts with a message of timestamp {recorded.split(':')[0]}, offset {first.offset()} " \
                   f"now holds one of timestamp {fp.split(':')[0]}"
        if recorded is not None and meta.get("dw-first-message") and recorded != fp:
            return f"{key} starts with a different message than offset {first.offset()} holds now"
        return None

    def _first_row_fingerprint(self, key: str, offset: int) -> str | None:
        import io

        import pyarrow.parquet as pq

        t = pq.read_table(io.BytesIO(self.store.get(key)), columns=["kafka_offset", "kafka_timestamp_ms"])
        offsets = t["kafka_offset"].to_pylist()
        if offset not in offsets:
            return None
        return f"{t['kafka_timestamp_ms'][offsets.index(offset)].as_py()}:"

    def _flush(self, st: _PartitionState, reason: str) -> None:
        buf = st.buffer
        if buf.empty:
            return
        start, last, msgs = buf.drain()
        decoded = decode_messages(msgs)
        if decoded.bad:
            self._dlq.publish(decoded.bad)  # flushed before the offsets are committed (_commit_pending)
            self._report.dead_letters += len(decoded.bad)
        self._report.tombstones += decoded.tombstones
        if decoded.batch.num_rows:
            key, data, meta, rows = encode_landing_file(st.tp[0], st.tp[1], start, last, [decoded.batch],
                                                        self._topic_ids.get(st.tp[0]), st.first_message)
            ride_out(lambda: self.store.put(key, data, meta), f"landing {self.client}: uploading {key}")
            landed = LandedFile(key, st.tp[0], st.tp[1], start, last, rows, len(data))
            self._report.files.append(landed)
            self._report.records += rows
            self._report.bytes += len(data)
            log.debug("landing %s: %s flush %s (%d rows)", self.client, reason, key, rows)
            if self.hooks.uploaded_rows is not None:
                self.hooks.uploaded_rows(landed, pa.Table.from_batches([decoded.batch]))
            if self.hooks.after_upload is not None:
                self.hooks.after_upload(landed)
        # A range of only tombstones or dead letters has no file, but its offsets are still done.
        st.pending_commit = last + 1

    def _flush_all(self, reason: str) -> None:
        for st in self._states.values():
            self._flush(st, reason)

    def _commit_pending(self) -> None:
        pending = [st for st in self._states.values() if st.pending_commit is not None]
        if not pending:
            return
        self._dlq.flush()  # dead letters must be durable before we commit past them
        consumer = self._consumer
        assert consumer is not None
        offsets = [TopicPartition(*st.tp, st.pending_commit) for st in pending]
        ride_out(lambda: consumer.commit(offsets=offsets, asynchronous=False),
                 f"landing {self.client}: committing offsets")
        for st in pending:
            st.committed = st.pending_commit
            st.pending_commit = None


def land_client(settings: Settings, client: str, *, database: str | None = None, bounded: bool = True,
                policy: FlushPolicy | None = None, hooks: LandingHooks | None = None,
                stop: threading.Event | None = None, max_seconds: float | None = None,
                cluster_topics: Mapping[str, int] | None = None, auto_recover: bool = True) -> LandingReport:
    """Land one client's CDC topics (see LandingWriter.run).

    `auto_recover`: when the broker re-created the client's topics (a changed topic id: the old log is certainly
    gone), run the recovery (`dw landing recover`) and land again, instead of stopping. Other resets stop.
    """
    def attempt(topics: Mapping[str, int] | None) -> LandingReport:
        return LandingWriter(settings, client, database=database, policy=policy, hooks=hooks,
                             cluster_topics=topics).run(bounded=bounded, stop=stop, max_seconds=max_seconds)

    try:
        return attempt(cluster_topics)
    except LandingReset as e:
        if not (auto_recover and e.recreated):
            raise
        from .recovery import recover_client

        log.error("%s -- recovering automatically", e)
        report = recover_client(settings, client, database=database)
        log.warning("landing %s recovered: %s", client, report.as_dict())
        return attempt(None)
