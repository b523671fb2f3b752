"""The capture service: one binlog stream per MariaDB server -> Debezium-format change events on Kafka.

Reads the binlog from the last checkpoint, turns row events of captured databases into messages on
`<prefix>.<db>.<table>`, DDL onto the schema-change topic, snapshots newly captured databases while streaming,
and checkpoints at transaction boundaries after the producer has flushed (at-least-once).
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pymysql
from confluent_kafka import KafkaError, Producer

from ..contracts import data_topic, heartbeat_topic, offsets_topic, schema_change_topic
from ..db import connect
from ..settings import Settings
from .binlog_reader import (
    DELETE_ROWS, FORMAT_DESCRIPTION, HEARTBEAT, MARIADB_COMPRESSED, MARIADB_GTID, QUERY, ROTATE, ROWS_EVENTS,
    TABLE_MAP, UPDATE_ROWS, WRITE_ROWS, XID, PatchedBinLogStreamReader, RawEvent, StreamDisconnected,
)
from .checkpoint import SNAPSHOTTING, STREAMING, Checkpoint, CheckpointStore, Position, ServiceLock, server_key, state_dir
from .ddl import parse_ddl
from .envelope import (
    CONNECTOR, OP_CREATE, OP_DELETE, OP_READ, OP_TRUNCATE, OP_UPDATE, VERSION, SourceInfo, dumps, key_bytes, now_ms,
    schema_change_value,
)
from .heartbeat import HeartbeatTimer, heartbeat_key, heartbeat_value
from .observability import CaptureStats
from .preflight import check_server
from .row_decoder import TableDecoder, compile_decoder, iter_rows, specs_from_table_map
from .snapshot import SnapshotChunk, SnapshotWorker
from .sources import DatabaseSource, registry_source

log = logging.getLogger("dw_assets.cdc")

FL_STANDALONE = 0x01  # MariaDB GTID event flag: a statement outside a transaction (DDL), no XID follows


class CaptureError(RuntimeError):
    """A failure capture cannot recover from by itself; the message says what to do."""


class BinlogPurged(CaptureError):
    pass


class DeliveryFailed(RuntimeError):
    """Kafka refused a message for good; capture resumes from the last checkpoint instead of going on."""


class BrokerReset(DeliveryFailed):
    """The broker came back without capture's topics (restarted without its data). An idempotent producer never
    gets its queued messages acknowledged by such a broker (measured on Tansu: the producer state is gone), so
    capture drops that producer and resumes from the last checkpoint with a new one."""


@dataclass
class CaptureOptions:
    once: bool = False  # stop at the binlog end position current at start (and after pending snapshots)
    # How long a checkpoint waits for Kafka to acknowledge what was produced before capture gives up (exits
    # with an error, checkpoint not advanced; a restart resumes from the last checkpoint).
    flush_timeout_s: float = 120.0
    heartbeat_interval_ms: int = 5000
    stats_interval_s: float = 10.0
    checkpoint_interval_ms: int = 1000  # 0: checkpoint after every transaction (slower, fewer re-emits)
    registry_poll_s: float = 5.0
    snapshot_chunk_rows: int = 10_000
    reconnect_backoff_s: tuple[float, float] = (0.5, 30.0)
    replica_server_id: int | None = None  # the id this client registers with; random if None
    databases: DatabaseSource | None = None  # default: active clients from the registry
    linger_ms: int | None = None  # default: settings.kafka.linger_ms (DW_KAFKA_LINGER_MS)
    max_buffered_messages: int = 200_000
    idle_tick_s: float = 0.25  # server heartbeat period: wakes the loop while the binlog is quiet
    mirror_offsets_to_kafka: bool = True
    progress: Any = None  # SnapshotProgress-like: table_started(db, table, estimate), rows(db, table, n), done(db)


@dataclass
class _Tx:
    gtid: str | None = None
    start: Position | None = None
    standalone: bool = False
    total_order: int = 0
    per_table: dict[tuple[str, str], int] = field(default_factory=dict)


class CaptureService:
    def __init__(self, settings: Settings, options: CaptureOptions | None = None):
        self.settings = settings
        self.opt = options or CaptureOptions()
        self.prefix = settings.kafka.topic_prefix
        self.store = CheckpointStore(state_dir(settings))
        self.lock = ServiceLock(state_dir(settings))
        self.stats = CaptureStats(interval_s=self.opt.stats_interval_s)
        self.databases_source = self.opt.databases or registry_source(settings)
        self._stop = threading.Event()
        self._delivery_error: KafkaError | None = None
        self.replica_server_id = self.opt.replica_server_id or random.randint(1 << 20, (1 << 31) - 1)
        # stream state
        self.file = ""
        self.position: Position | None = None  # last transaction boundary processed
        self.gtid: str | None = None
        self.tx: _Tx | None = None
        self.databases: dict[str, str] = {}  # captured database -> snapshotting | streaming
        self.tables: dict[int, TableDecoder | None] = {}
        self.decoders: dict[bytes, TableDecoder] = {}
        self.topics: dict[tuple[str, str], tuple[str, int]] = {}
        self.target: Position | None = None
        self.source_server_id = 0
        self.caught_up = False
        self.events_by_db: dict[str, int] = {}
        # snapshots
        self.workers: dict[str, SnapshotWorker] = {}
        self.ready: dict[str, SnapshotChunk] = {}
        self.touched: dict[tuple[str, str], dict[bytes, Position]] = {}
        self._last_checkpoint: Checkpoint | None = None
        self._last_save = 0.0
        self._last_poll = 0.0
        self.skip_before: dict[str, Position] = {}  # see Checkpoint.skip_before
        self._restart_stream = False  # a replay moved the position back: reconnect the reader there
        self._broker_lost = threading.Event()  # the producer lost its connection: re-check topics when back

    # ---- public ------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop after the current transaction (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> CaptureStats:
        if not self.lock.acquire(timeout=0 if not self.opt.once else 60):
            raise CaptureError(f"another capture service holds {self.lock.path} (pid {self.lock.holder_pid()}); "
                               "stop it first, or let it capture")
        try:
            return self._run()
        finally:
            self.lock.release()

    # ---- set-up ------------------------------------------------------------------------------------------
    def _run(self) -> CaptureStats:
        from .topics import TopicRegistry

        with connect(self.settings, "cdc") as conn:
            variables = check_server(conn)
            self.source_server_id = int(variables.get("server_id", 0))
            end = self._master_position(conn)
        self.source = SourceInfo(self.prefix, self.source_server_id)
        self.topic_registry = TopicRegistry(self.settings)
        self.producer = self._producer()
        for name, parts, conf in (
            (schema_change_topic(self.prefix), 1, {}),  # one partition: DDL order matters across tables
            (heartbeat_topic(self.prefix), 1, {}),
            (offsets_topic(self.prefix), 1, {"cleanup.policy": "compact"}),
        ):
            self.topic_registry.ensure(name, parts, conf)
        self.hb_timer = HeartbeatTimer(self.opt.heartbeat_interval_ms)

        cp = self.store.load()
        if cp is None:
            # First start: stream from the current end; every captured database gets a snapshot.
            self.position, self.file, self.gtid = end, end.file, None
            log.info("no checkpoint in %s: starting at the binlog end %s; databases will be snapshotted",
                     self.store.path, end)
        else:
            self.position, self.file, self.gtid = cp.position, cp.file, cp.gtid
            self.databases = dict(cp.databases)
            self.skip_before = {db: Position.of(f, p) for db, (f, p) in cp.skip_before.items()}
            self.stats.last_source_ts_ms = cp.last_event_ts_ms
            log.info("resuming from checkpoint %s (gtid %s)", cp.position, cp.gtid)
        self.target = end if self.opt.once else None
        self._poll_databases(force=True)

        backoff = self.opt.reconnect_backoff_s[0]
        while True:
            try:
                self._stream()
                if self._restart_stream and not self._stop.is_set():
                    self._restart_stream = False
                    continue
                break
            except (StreamDisconnected, pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError) as e:
                if self._stop.is_set():
                    break
                log.warning("binlog stream interrupted (%s); reconnecting from %s in %.1f s", e, self.position, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.opt.reconnect_backoff_s[1])
            except DeliveryFailed as e:
                log.error("%s; resuming from the last checkpoint", e)
                if isinstance(e, BrokerReset):
                    self._replace_producer()
                self._rewind_to_checkpoint()
        self._checkpoint(force=True)
        self.producer.flush(5.0)  # the last checkpoint's offsets mirror, held back by linger.ms otherwise
        for w in self.workers.values():
            w.stop()
        self.stats.position = str(self.position)
        self.stats.maybe_log(force=True)
        return self.stats

    def _producer(self) -> Producer:
        conf = self.settings.kafka.client_config() | {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": self.settings.kafka.linger_ms if self.opt.linger_ms is None else self.opt.linger_ms,
            "batch.num.messages": 10_000,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": self.opt.max_buffered_messages,
            "queue.buffering.max.kbytes": 512 * 1024,
            # Never give a message up: while the broker is away the queue fills and capture stops reading the
            # binlog (back-pressure) instead of dropping changes.
            "message.timeout.ms": 0,
            # Java's partitioner: the same key lands on the same partition as with Debezium/Kafka Connect.
            "partitioner": "murmur2_random",
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            # Never let the broker create a topic on first produce: Tansu then picks its own partition count
            # (4), which moves keys between partitions. Topics are created explicitly (TopicRegistry).
            "allow.auto.create.topics": False,
            "error_cb": self._on_client_error,
        }
        return Producer(conf)

    def _replace_producer(self) -> None:
        self.producer.purge(in_queue=True, in_flight=True, blocking=False)
        self.producer.poll(0)  # the purged messages' reports: all after the checkpoint, re-read from the binlog
        self.producer = self._producer()
        self._delivery_error = None
        self.topics.clear()  # partition counts are read (and topics created) again on first use

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._delivery_error = err

    def _on_client_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            self._broker_lost.set()

    def _master_position(self, conn: pymysql.Connection) -> Position:
        with conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
        if not row:
            raise CaptureError("binary logging is off on the server (SHOW MASTER STATUS is empty)")
        return Position.of(row[0], int(row[1]))

    def _check_binlog_available(self) -> None:
        assert self.position is not None
        with connect(self.settings, "cdc") as conn, conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            files = [r[0] for r in cur.fetchall()]
        if self.position.file not in files:
            raise BinlogPurged(
                f"the binlog file {self.position.file} needed to resume capture (checkpoint {self.position}) is no "
                f"longer on the server (oldest is {files[0] if files else 'none'}): changes after it cannot be read. "
                "Recover with `dw cdc resnapshot --all` (or `dw cdc resnapshot <client>` for every captured client), "
                "which restarts capture at the current binlog end and snapshots the clients again."
            )

    # ---- the stream -------------------------------------------------------------------------------------------
    def _reader(self) -> PatchedBinLogStreamReader:
        m = self.settings.mariadb
        assert self.position is not None
        return PatchedBinLogStreamReader(
            {"host": m.host, "port": m.port, "user": m.cdc_user, "password": m.cdc_password, "connect_timeout": 10},
            server_id=self.replica_server_id,
            blocking=True,
            is_mariadb=True,
            log_file=self.position.file,
            log_pos=self.position.pos,
            resume_stream=True,
            slave_heartbeat=self.opt.idle_tick_s,
            enable_logging=False,
        )

    def _stream(self) -> None:
        self._restart_stream = False
        self._check_binlog_available()
        if self._done():
            return
        reader = self._reader()
        self.tables.clear()
        self.tx = None
        log.info("streaming binlog from %s as replica server id %d", self.position, self.replica_server_id)
        try:
            for ev in reader.raw_events():
                self.stats.binlog_bytes += len(ev.data)
                t = ev.type
                if t in ROWS_EVENTS:
                    self._on_rows(ev)
                    continue
                if t == TABLE_MAP:
                    self._on_table_map(reader, ev)
                elif t == MARIADB_GTID:
                    self._on_gtid(ev)
                elif t == XID:
                    self._on_commit(ev)
                elif t == QUERY:
                    self._on_query(ev)
                elif t == ROTATE:
                    self._on_rotate(ev)
                elif t == HEARTBEAT:
                    self._on_heartbeat(ev)
                elif t in MARIADB_COMPRESSED:
                    raise CaptureError("compressed binlog events found: set log_bin_compress=OFF on the server")
                elif self.tx is None and ev.next_pos and t != FORMAT_DESCRIPTION:
                    # Events between transactions (GTID lists, binlog checkpoints) move the boundary too, so that
                    # a snapshot or --once target position right after them is reached.
                    self.position = Position.of(self.file, ev.next_pos)
                if self.tx is None and self._between_transactions():
                    return
        finally:
            reader.close()

    def _between_transactions(self) -> bool:
        """Housekeeping at a transaction boundary; True when the loop should stop."""
        now = time.monotonic()
        self.producer.poll(0)
        if self._delivery_error is not None:
            err, self._delivery_error = self._delivery_error, None
            raise DeliveryFailed(f"Kafka did not accept a change event: {err}")
        self._emit_ready_snapshots()
        if self.hb_timer.due():
            self._heartbeat()
        if now - self._last_poll >= self.opt.registry_poll_s:
            self._poll_databases()
        self._checkpoint()
        self.stats.position = str(self.position)
        self.stats.maybe_log()
        return self._stop.is_set() or self._done() or self._restart_stream

    def _done(self) -> bool:
        if self.target is None or self.position is None:
            return False
        return self.position >= self.target and not self.workers and not self.ready

    # ---- events ---------------------------------------------------------------------------------------------
    def _on_rotate(self, ev: RawEvent) -> None:
        d = ev.data
        pos = int.from_bytes(d[ev.body_start : ev.body_start + 8], "little")
        self.file = bytes(d[ev.body_start + 8 : ev.body_end]).decode()
        if self.tx is None:
            self.position = Position.of(self.file, pos)
        # Table ids are per server run; a new file may follow a restart that reused them.
        self.tables.clear()

    def _on_gtid(self, ev: RawEvent) -> None:
        d, b = ev.data, ev.body_start
        seq = int.from_bytes(d[b : b + 8], "little")
        domain = int.from_bytes(d[b + 8 : b + 12], "little")
        flags = d[b + 12]
        self.tx = _Tx(gtid=f"{domain}-{ev.server_id}-{seq}", start=Position.of(self.file, ev.next_pos - ev.size),
                      standalone=bool(flags & FL_STANDALONE))

    def _on_commit(self, ev: RawEvent) -> None:
        if self.tx is not None:
            self.gtid = self.tx.gtid
        self.tx = None
        self.position = Position.of(self.file, ev.next_pos)
        self.stats.transactions += 1
        self.stats.last_source_ts_ms = ev.timestamp * 1000
        self.caught_up = False

    def _on_table_map(self, reader: PatchedBinLogStreamReader, ev: RawEvent) -> None:
        d, b = ev.data, ev.body_start
        table_id = int.from_bytes(d[b : b + 6], "little")
        n = d[b + 8]
        schema = bytes(d[b + 9 : b + 9 + n]).decode()
        if schema not in self.databases:
            self.tables[table_id] = None
            return
        key = reader.table_map_key(ev)
        dec = self.decoders.get(key)
        if dec is None:
            tm = reader.parse_table_map(ev)
            specs, pk = specs_from_table_map(tm)
            dec = compile_decoder(tm.schema, tm.table, specs, pk)
            if not pk:
                log.warning("%s.%s has no primary key: its events carry a null key and go to partition 0",
                            tm.schema, tm.table)
            if len(self.decoders) > 10_000:
                self.decoders.clear()
            self.decoders[key] = dec
        self.tables[table_id] = dec

    def _topic(self, db: str, table: str) -> tuple[str, int]:
        entry = self.topics.get((db, table))
        if entry is None:
            name = data_topic(self.prefix, db, table)
            entry = (name, self.topic_registry.ensure(name))
            self.topics[(db, table)] = entry
        return entry

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, partition: int = -1) -> None:
        while True:
            try:
                if partition >= 0:
                    self.producer.produce(topic, value, key, partition)
                else:
                    self.producer.produce(topic, value, key)
                return
            except BufferError:
                self._backpressure()

    def _backpressure(self) -> None:
        # The local queue is full: the broker is slow or away. Stop reading the binlog until it drains.
        started = time.monotonic()
        warned = False
        while len(self.producer) >= self.opt.max_buffered_messages * 0.9:
            self.producer.poll(0.1)
            if not warned and time.monotonic() - started > 5:
                log.warning("Kafka is not accepting messages (%d buffered): binlog reading paused", len(self.producer))
                warned = True
        if warned:
            log.info("Kafka accepts messages again after %.1f s; resuming", time.monotonic() - started)

    def _on_rows(self, ev: RawEvent) -> None:
        d = ev.data
        b = ev.body_start
        dec = self.tables.get(int.from_bytes(d[b : b + 6], "little"))
        if dec is None:
            return
        t = ev.type
        pos = ev.next_pos - ev.size
        db, table = dec.database, dec.table
        skip = self.skip_before.get(db) if self.skip_before else None
        if skip is not None and Position.of(self.file, pos) < skip:
            return  # delivered before a replay moved the stream back
        update = t in UPDATE_ROWS
        op = OP_UPDATE if update else (OP_CREATE if t in WRITE_ROWS else OP_DELETE)
        topic, _ = self._topic(db, table)
        tx = self.tx or _Tx()
        gtid = tx.gtid
        ts_ms = ev.timestamp * 1000
        now = now_ms()
        name, sid, file = self.prefix, self.source_server_id, self.file
        pk = dec.primary_key
        no_key = not pk
        tkey = (db, table)
        touched = self.touched.get(tkey)
        if touched is None and self.databases.get(db) == SNAPSHOTTING:
            touched = self.touched[tkey] = {}
        dco = tx.per_table.get(tkey, 0)
        order = tx.total_order
        produce = self.producer.produce
        count = 0
        for i, row in enumerate(iter_rows(d, b, ev.body_end, dec, update, t >= 30)):
            if update:
                before, after = row
            elif op == OP_CREATE:
                before, after = None, row
            else:
                before, after = row, None
            order += 1
            dco += 1
            value = dumps({
                "before": before, "after": after,
                "source": {"version": VERSION, "connector": CONNECTOR, "name": name, "ts_ms": ts_ms,
                           "snapshot": "false", "db": db, "sequence": None, "table": table, "server_id": sid,
                           "gtid": gtid, "file": file, "pos": pos, "row": i, "thread": None, "query": None},
                "op": op, "ts_ms": now,
                "transaction": {"id": gtid, "total_order": order, "data_collection_order": dco},
            })
            if no_key:
                self._produce(topic, value, None, 0)
                count += 1
                continue
            img = after if after is not None else before
            key = dumps({k: img[k] for k in pk})
            if update:
                old_key = dumps({k: before[k] for k in pk})
                if old_key != key:
                    # A primary-key change is a delete of the old key (plus tombstone) and a create of the new
                    # one, as Debezium does, so that each key's history stays on its own partition.
                    self._key_change(topic, old_key, key, before, after, value)
                    if touched is not None:
                        touched[old_key] = touched[key] = tx.start or self.position
                    count += 3
                    continue
            try:
                produce(topic, value, key)
            except BufferError:
                self._backpressure()
                self._produce(topic, value, key)
            if op == OP_DELETE:
                self._produce(topic, None, key)  # tombstone: lets compaction drop the key
            if touched is not None:
                touched[key] = tx.start or self.position
            count += 1
        tx.total_order, tx.per_table[tkey] = order, dco
        self.stats.events += count
        self.stats.last_source_ts_ms = ts_ms
        self.events_by_db[db] = self.events_by_db.get(db, 0) + count

    def _key_change(self, topic: str, old_key: bytes, key: bytes, before: dict, after: dict, value: bytes) -> None:
        import orjson

        env = orjson.loads(value)
        self._produce(topic, dumps(env | {"op": OP_DELETE, "after": None}), old_key)
        self._produce(topic, None, old_key)
        self._produce(topic, dumps(env | {"op": OP_CREATE, "before": None}), key)

    def _on_query(self, ev: RawEvent) -> None:
        d, b = ev.data, ev.body_start
        db_len = d[b + 8]
        status_len = int.from_bytes(d[b + 11 : b + 13], "little")
        p = b + 13 + status_len
        session_db = bytes(d[p : p + db_len]).decode()
        query = bytes(d[p + db_len + 1 : ev.body_end]).decode("utf-8", "replace")
        head = query[:8].upper()
        if head.startswith("BEGIN"):
            return
        if head.startswith("COMMIT") or head.startswith("ROLLBACK"):
            self._on_commit(ev)  # non-transactional engines: COMMIT is a query event, not an XID
            return
        target = parse_ddl(query, session_db)
        skip = self.skip_before.get(target.database) if target is not None else None
        if target is not None and target.database in self.databases and (
                skip is None or Position.of(self.file, ev.next_pos - ev.size) >= skip):
            self._publish_ddl(ev, target.database, target.table, query, target.truncate)
        # A DDL statement is its own transaction: it is a boundary.
        if self.tx is None or self.tx.standalone:
            self._on_commit(ev)
            self.stats.ddl += 1

    def _publish_ddl(self, ev: RawEvent, db: str, table: str | None, query: str, truncate: bool) -> None:
        gtid = self.tx.gtid if self.tx else None
        pos = ev.next_pos - ev.size
        ts_ms = ev.timestamp * 1000
        self._produce(schema_change_topic(self.prefix),
                      schema_change_value(self.source, db=db, table=table, ddl=query, ts_ms=ts_ms, gtid=gtid,
                                          file=self.file, pos=pos),
                      dumps({"databaseName": db}))
        if truncate and table:
            topic, partitions = self._topic(db, table)
            value = dumps({
                "before": None, "after": None,
                "source": {"version": VERSION, "connector": CONNECTOR, "name": self.prefix, "ts_ms": ts_ms,
                           "snapshot": "false", "db": db, "sequence": None, "table": table,
                           "server_id": self.source_server_id, "gtid": gtid, "file": self.file, "pos": pos,
                           "row": 0, "thread": None, "query": None},
                "op": OP_TRUNCATE, "ts_ms": now_ms(), "transaction": None,
            })
            # On every partition: each partition's consumer must see the truncate in order with its own keys.
            for partition in range(partitions):
                self._produce(topic, value, None, partition)
            self.stats.events += 1
            self.events_by_db[db] = self.events_by_db.get(db, 0) + 1
            if self.databases.get(db) == SNAPSHOTTING:
                touched = self.touched.setdefault((db, table), {})
                # Every snapshot row read before the truncate is stale: mark the table as touched as a whole.
                touched[b"*"] = self.tx.start if self.tx and self.tx.start else Position.of(self.file, pos)

    def _on_heartbeat(self, ev: RawEvent) -> None:
        # MariaDB sends a heartbeat after idle_tick_s without events: its log_pos is the server's current end.
        name = bytes(ev.data[ev.body_start : ev.body_end]).decode(errors="replace")
        if self.tx is None and self.position is not None and name == self.position.file and ev.next_pos <= self.position.pos:
            self.caught_up = True
            self.stats.caught_up = True

    def _heartbeat(self) -> None:
        assert self.position is not None
        self._produce(heartbeat_topic(self.prefix),
                      heartbeat_value(self.prefix, file=self.position.file, pos=self.position.pos, gtid=self.gtid,
                                      source_ts_ms=self.stats.last_source_ts_ms, server_id=self.source_server_id,
                                      caught_up=self.caught_up),
                      heartbeat_key(self.prefix))

    # ---- databases and snapshots ------------------------------------------------------------------------------
    def _poll_databases(self, force: bool = False) -> None:
        self._last_poll = time.monotonic()
        try:
            wanted = set(self.databases_source())
        except Exception as e:  # the registry being briefly unreachable must not stop capture
            log.warning("could not read the client registry (%s); keeping the current set of databases", e)
            return
        resnap = self.store.pending_resnapshots()
        for db, since in sorted(self.store.pending_replays().items()):
            if db in self.databases and self.position is not None:
                self._replay(db, since)
            self.store.clear_replay(db)
        for db in sorted(wanted - set(self.databases)):
            log.info("capturing new database %s from %s (snapshot follows)", db, self.position)
            self.databases[db] = SNAPSHOTTING
        for db in sorted(set(self.databases) - wanted):
            log.info("database %s is no longer captured (client not active)", db)
            self.databases.pop(db)
            self._cancel_snapshot(db)
        for db in resnap & set(self.databases):
            self._cancel_snapshot(db)
            self.databases[db] = SNAPSHOTTING
            self.store.clear_resnapshot(db)
            log.info("re-snapshot of %s requested", db)
        # Newly captured databases: their table maps were skipped so far; the next statement re-sends them.
        self.tables.clear()
        for db, state in self.databases.items():
            if state == SNAPSHOTTING and db not in self.workers:
                self._start_snapshot(db)

    def _start_snapshot(self, db: str) -> None:
        # Keys touched by the stream are tracked from this boundary on (see `_on_rows`); every chunk the worker
        # reads is at or after it, so the tracking covers everything a chunk could be older than.
        worker = SnapshotWorker(self.settings, db, self.opt.snapshot_chunk_rows)
        self.workers[db] = worker
        worker.start()

    def _cancel_snapshot(self, db: str) -> None:
        w = self.workers.pop(db, None)
        if w:
            w.stop()
        self.ready.pop(db, None)
        for k in [k for k in self.touched if k[0] == db]:
            self.touched.pop(k)

    def _emit_ready_snapshots(self) -> None:
        if not self.workers:
            return
        assert self.position is not None
        for db, worker in list(self.workers.items()):
            if worker.hold_wanted.is_set() and db not in self.ready and worker.chunks.empty():
                # A table without PK: hold the stream at this boundary until the worker has read the table, so
                # that it is emitted exactly at its snapshot position (nothing to merge by key).
                worker.held.set()
                while True:
                    try:
                        item = worker.chunks.get(timeout=1.0)
                        break
                    except queue.Empty:
                        if not worker.is_alive():
                            raise CaptureError(f"snapshot worker for {db} died")
                self._accept_chunk(db, item)
            while db not in self.ready:
                try:
                    item = worker.chunks.get_nowait()
                except queue.Empty:
                    break
                self._accept_chunk(db, item)
            chunk = self.ready.get(db)
            if chunk is not None and self.position >= chunk.position:
                self.ready.pop(db)
                self._emit_chunk(chunk)
                if chunk.database_done:
                    self.workers.pop(db, None)
                    self.databases[db] = STREAMING
                    self.touched = {k: v for k, v in self.touched.items() if k[0] != db}
                    log.info("snapshot of %s complete at %s", db, chunk.position)
                    if self.opt.progress:
                        self.opt.progress.done(db)
                    self._checkpoint(force=True)

    def _accept_chunk(self, db: str, item: SnapshotChunk | BaseException) -> None:
        if isinstance(item, BaseException):
            self.workers.pop(db, None)
            raise CaptureError(f"snapshot of {db} failed: {item}") from item
        self.ready[db] = item
        # Keys the stream changes from here on must not be overwritten by this (older) chunk.
        self.touched.setdefault((db, item.table), {})

    def _emit_chunk(self, chunk: SnapshotChunk) -> None:
        if not chunk.table:
            return
        touched = self.touched.get((chunk.database, chunk.table), {})
        truncated_at = touched.get(b"*")
        topic, _ = self._topic(chunk.database, chunk.table)
        ts = now_ms()
        last_index = len(chunk.rows) - 1
        n = 0
        for i, (key, row) in enumerate(chunk.rows):
            if truncated_at is not None and truncated_at >= chunk.position:
                break
            if key is not None:
                t = touched.get(key)
                if t is not None and t >= chunk.position:
                    continue  # the stream already emitted a newer state of this key
            snap = "last" if (chunk.database_done and chunk.table_done and i == last_index) else "true"
            value = dumps({
                "before": None, "after": row,
                "source": {"version": VERSION, "connector": CONNECTOR, "name": self.prefix, "ts_ms": ts,
                           "snapshot": snap, "db": chunk.database, "sequence": None, "table": chunk.table,
                           "server_id": self.source_server_id, "gtid": chunk.gtid, "file": chunk.position.file,
                           "pos": chunk.position.pos, "row": i, "thread": None, "query": None},
                "op": OP_READ, "ts_ms": ts, "transaction": None,
            })
            self._produce(topic, value, key, -1 if key is not None else 0)
            n += 1
        self.stats.events += n
        self.stats.snapshot_rows += n
        self.events_by_db[chunk.database] = self.events_by_db.get(chunk.database, 0) + n
        if self.opt.progress:
            self.opt.progress.rows(chunk.database, chunk.table, len(chunk.rows), chunk.total_estimate)
        if chunk.table_done:
            self.touched.pop((chunk.database, chunk.table), None)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def _checkpoint(self, force: bool = False) -> None:
        if self.position is None:
            return
        now = time.monotonic()
        if not force and (now - self._last_save) * 1000 < self.opt.checkpoint_interval_ms:
            return
        cp = Checkpoint(self.position.file, self.position.pos, self.gtid, self.stats.last_source_ts_ms,
                        dict(self.databases), self.source_server_id)
        last = self._last_checkpoint
        self.skip_before = {db: p for db, p in self.skip_before.items() if p > self.position}
        if last is not None and (last.file, last.pos, last.databases, last.skip_before) == (
                cp.file, cp.pos, cp.databases, {db: [p.file, p.pos] for db, p in self.skip_before.items()}):
            self._last_save = now
            return
        # Only what Kafka has acknowledged may be checkpointed: flush first (waits while the broker is away,
        # re-creating topics a restarted broker lost, for at most flush_timeout_s).
        started = time.monotonic()
        while self.producer.flush(1.0) > 0:
            waited = time.monotonic() - started
            log.warning("waiting for Kafka to acknowledge %d messages before checkpointing (%.0f s)",
                        len(self.producer), waited)
            if waited >= 2 and int(waited) % 5 == 2:
                self._broker_lost.set()  # a long wait: the broker may have come back without our topics
            self._recheck_topics()
            if self._stop.is_set() and not force:
                return
            if waited >= self.opt.flush_timeout_s:
                raise CaptureError(
                    f"Kafka ({self.settings.kafka.bootstrap}) did not acknowledge {len(self.producer)} messages "
                    f"within {self.opt.flush_timeout_s:.0f} s; the checkpoint stays at {self._last_checkpoint_pos()}. "
                    "Check the broker, then restart capture (`dw cdc run`): it resumes from that checkpoint.")
        self._recheck_topics()
        if self._delivery_error is not None:
            err, self._delivery_error = self._delivery_error, None
            raise DeliveryFailed(f"Kafka did not accept a change event: {err}")
        cp.skip_before = {db: [p.file, p.pos] for db, p in self.skip_before.items()}
        self.store.save(cp)
        self._last_checkpoint = cp
        self._last_save = now
        if self.opt.mirror_offsets_to_kafka:
            self.producer.produce(offsets_topic(self.prefix), cp.to_json(), dumps({"server": server_key(self.settings)}))
            self.producer.poll(0)

    def _last_checkpoint_pos(self) -> str:
        cp = self._last_checkpoint or self.store.load()
        return str(cp.position) if cp else "(none)"

    def _recheck_topics(self) -> None:
        """After the producer lost the broker: topics the broker no longer has are created again, with the
        configured partition count (never by auto-creation), and partition counts are read again."""
        if not self._broker_lost.is_set():
            return
        try:
            self.topic_registry.refresh(budget_s=0)  # one try: the flush loop around this is what waits
        except Exception as e:  # noqa: BLE001 - still away: the next flush round tries again
            log.warning("broker still unreachable (%s)", e)
            return
        self._broker_lost.clear()
        recreated = []
        for key, (name, n) in list(self.topics.items()):
            now = self.topic_registry.partitions.get(name)
            if now is None:
                log.warning("topic %s is gone from the broker (restarted without its data?): creating it again "
                            "with %d partitions; landing will report the lost events", name, n)
                self.topic_registry.ensure(name, n)
                recreated.append(name)
            elif now != n:
                raise CaptureError(
                    f"topic {name} now has {now} partitions, capture produced to {n}: keys would move between "
                    f"partitions. Delete the topic (it was re-created by someone else) and restart capture.")
        for name, parts, conf in (
            (schema_change_topic(self.prefix), 1, {}),
            (heartbeat_topic(self.prefix), 1, {}),
            (offsets_topic(self.prefix), 1, {"cleanup.policy": "compact"}),
        ):
            if name not in self.topic_registry.partitions:
                self.topic_registry.ensure(name, parts, conf)
        if recreated and len(self.producer):
            raise BrokerReset(f"the broker lost {len(recreated)} topics (e.g. {recreated[0]}) with "
                              f"{len(self.producer)} messages unacknowledged")

    def _replay(self, db: str, since: Position) -> None:
        """Emit `db`'s changes again from `since` on (lost between Kafka and landing), without re-emitting any
        other database: the stream goes back to the start of `since`'s binlog file (a transaction boundary) and
        skips the others' events up to where it was."""
        assert self.position is not None
        if since > self.position:
            log.info("replay of %s from %s: capture has not got there yet, nothing to do", db, since)
            return
        self._checkpoint(force=True)  # everything before the current position is acknowledged
        for other in self.databases:
            if other != db:
                self.skip_before[other] = max(self.skip_before.get(other, self.position), self.position)
        self.skip_before[db] = since
        self.position, self.file = Position.of(since.file, 4), since.file
        self._restart_stream = True
        log.info("replaying %s from %s (the binlog is re-read from %s)", db, since, self.position)
        self._checkpoint(force=True)

    def _rewind_to_checkpoint(self) -> None:
        cp = self.store.load()
        if cp is not None:
            self.position, self.file, self.gtid = cp.position, cp.file, cp.gtid
            self.databases = dict(cp.databases)
        for db in list(self.workers):
            self._cancel_snapshot(db)
