"""Self-healing reconciliation: re-read exactly the keys where silver differs from production, in one consistent
snapshot, and apply them through the apply path as ordered corrections.

Corrections are change rows in the landing schema: op 'r' with the snapshot's row for keys production has, op
'd' for keys only silver has, both at the snapshot's binlog file/position. A change streamed after the snapshot
therefore sorts after its correction and wins; one from before loses. Before the snapshot a row is written to
`<control db>.reconcile_repairs` (the repair's record), which also moves the binlog past every earlier event, so
a correction always sorts after the capture snapshot that seeded an idle table. Bronze keeps corrections like
every landed event: `source_snapshot = 'repair'`, `_dw_landing_file = 'repair:<UTC time>:<table>'`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable

import pyarrow as pa

from dw_assets import db
from dw_assets.cdc.envelope import dumps, select_expression
from dw_assets.cdc.snapshot import consistent_snapshot_position, snapshot_connection, table_layout
from dw_assets.contracts import LANDING_SCHEMA, data_topic
from dw_assets.identifiers import quote_ident, quote_qualified
from dw_assets.model import StandardModel, Table, TypeSpec
from dw_assets.settings import Settings

from .canonical_values import NULL, SEP, renderer
from .conformance import ClientDatabases, client_databases
from .reconciliation import ReconciliationResult, Watermark, reconcile

SNAPSHOT_MARK = "repair"
KEYS_PER_QUERY = 500  # bound parameters per SELECT stay well under MariaDB's limits


class RepairError(RuntimeError):
    """A difference that cannot be repaired by key (e.g. a key type without an exact text form)."""


@dataclass
class TableRepair:
    table: str
    upserts: int = 0  # op 'r': the snapshot's row
    deletes: int = 0  # op 'd': keys production does not have


@dataclass
class RepairResult:
    client: str
    found: ReconciliationResult
    tables: list[TableRepair] = field(default_factory=list)
    landing_file: str | None = None  # the `_dw_landing_file` prefix of this repair's corrections in bronze
    binlog_file: str | None = None
    binlog_pos: int | None = None
    applied_batch: int | None = None
    after: ReconciliationResult | None = None  # the check re-run after the repair

    @property
    def corrections(self) -> int:
        return sum(t.upserts + t.deletes for t in self.tables)

    @property
    def passed(self) -> bool:
        """Silver equals the source: before (nothing to do) or after the repair."""
        return (self.after or self.found).passed

    def summary(self) -> str:
        if not self.tables:
            return f"{self.client}: nothing to repair" if self.found.passed else \
                f"{self.client}: differences found but none repairable by key"
        parts = ", ".join(f"{t.table} {t.upserts} re-read, {t.deletes} deleted" for t in self.tables)
        verdict = "" if self.after is None else ("; silver now equals the source" if self.after.passed
                                                 else "; still differing: " + "; ".join(
                                                     t.summary() for t in self.after.failed_tables))
        return (f"{self.client}: {self.corrections} correction(s) at {self.binlog_file}:{self.binlog_pos} "
                f"({parts}), bronze batch {self.applied_batch}, {self.landing_file}{verdict}")


# ---- keys -------------------------------------------------------------------------------------------------


def _key_parser(spec: TypeSpec) -> Callable[[str], Any]:
    """Canonical key text (canonical_values) -> a value MariaDB compares exactly with the column."""
    if spec.is_integer or spec.base == "year":
        return int
    if spec.base == "decimal":
        return Decimal
    if spec.is_binary:
        return bytes.fromhex
    if spec.base in ("date", "datetime", "timestamp") or spec.is_text or spec.base in ("enum", "set"):
        return str  # DATETIME text 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC session) compares exactly
    raise RepairError(f"key column type {spec.base} has no exact text form for a repair")


def _text_key_renderer(spec: TypeSpec) -> Callable[[Any], str]:
    """Text-protocol value -> canonical key text (the snapshot connection returns the server's text)."""
    base = renderer(spec)
    if spec.base in ("datetime", "timestamp"):
        return lambda v: base(datetime.fromisoformat(v.decode() if isinstance(v, bytes) else v))
    return base


def _key_text(values: Iterable[Any], renderers: list[Callable[[Any], str]]) -> str:
    return SEP.join(NULL if v is None else r(v) for v, r in zip(values, renderers))


# ---- reading the snapshot ---------------------------------------------------------------------------------


@dataclass
class _Snapshot:
    file: str
    pos: int
    gtid: str | None
    server_id: int
    read_at_ms: int


def _record_repair(settings: Settings, client: str, tables: dict[str, list[str]]) -> int:
    """Log the repair in the control database (its binlog event orders the corrections, see the docstring)."""
    q = quote_qualified(settings.control_db, "reconcile_repairs")
    with db.connection(settings, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {quote_ident(settings.control_db)} "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        cur.execute(f"""CREATE TABLE IF NOT EXISTS {q} (
              `id` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
              `client` VARCHAR(64) NOT NULL,
              `requested_at` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
              `differing_keys` INT NOT NULL,
              `tables` TEXT NOT NULL,
              `binlog_file` VARCHAR(255) NULL,
              `binlog_pos` BIGINT NULL,
              `corrections` INT NULL,
              `landing_file` VARCHAR(255) NULL,
              `finished_at` DATETIME(6) NULL,
              KEY `ix_client` (`client`, `requested_at`)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""")
        cur.execute(f"INSERT INTO {q} (`client`, `differing_keys`, `tables`) VALUES (%s, %s, %s)",
                    (client, sum(len(k) for k in tables.values()), ",".join(sorted(tables))))
        return int(cur.lastrowid)


def _finish_record(settings: Settings, repair_id: int, result: RepairResult) -> None:
    q = quote_qualified(settings.control_db, "reconcile_repairs")
    with db.connection(settings, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"UPDATE {q} SET `binlog_file` = %s, `binlog_pos` = %s, `corrections` = %s, "
                    "`landing_file` = %s, `finished_at` = CURRENT_TIMESTAMP(6) WHERE `id` = %s",
                    (result.binlog_file, result.binlog_pos, result.corrections, result.landing_file, repair_id))


def _select_keys(cur: Any, database: str, t: Table, select: str, keys: list[tuple]) -> list[tuple]:
    pk = list(t.primary_key)
    rows: list[tuple] = []
    for i in range(0, len(keys), KEYS_PER_QUERY):
        chunk = keys[i:i + KEYS_PER_QUERY]
        if len(pk) == 1:
            where = f"{quote_ident(pk[0])} IN ({', '.join(['%s'] * len(chunk))})"
            params: list[Any] = [k[0] for k in chunk]
        else:
            one = "(" + " AND ".join(f"{quote_ident(c)} = %s" for c in pk) + ")"
            where = " OR ".join([one] * len(chunk))
            params = [v for k in chunk for v in k]
        cur.execute(f"SELECT {select} FROM {quote_qualified(database, t.name)} WHERE {where}", params)
        rows.extend(cur.fetchall())
    return rows


def read_corrections(settings: Settings, dbs: ClientDatabases, model: StandardModel,
                     differing: dict[str, list[str]], landing_file: str) -> tuple[pa.Table, _Snapshot, list[TableRepair]]:
    """The correction rows for `differing` (table -> canonical key texts), read in ONE consistent snapshot."""
    out: list[dict[str, Any]] = []
    repairs: list[TableRepair] = []
    stamp_ms = int(time.time() * 1000)
    conn = snapshot_connection(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            try:
                position, gtid = consistent_snapshot_position(cur)
                snap = _Snapshot(position.file, position.pos, gtid, 0, int(time.time() * 1000))
                cur.execute("SELECT @@server_id")
                snap.server_id = int(cur.fetchone()[0])
                for name, key_texts in sorted(differing.items()):
                    repairs.append(_table_corrections(cur, settings, dbs.production_db, model.table(name),
                                                      key_texts, snap, landing_file, stamp_ms, out))
            finally:
                cur.execute("COMMIT")
    finally:
        conn.close()
    return pa.Table.from_pylist(out, schema=LANDING_SCHEMA.append(pa.field("_dw_landing_file", pa.string()))), \
        snap, repairs


def _table_corrections(cur: Any, settings: Settings, database: str, t: Table, key_texts: list[str], snap: _Snapshot,
                       landing_file: str, stamp_ms: int, out: list[dict[str, Any]]) -> TableRepair:
    pk = list(t.primary_key)
    specs = [t.column(c).type for c in pk]
    parsers = [_key_parser(s) for s in specs]
    keys = [tuple(p(v) for p, v in zip(parsers, text.split(SEP))) for text in key_texts]
    layout = table_layout(cur, database, t.name)
    names = [c.name for c in layout.columns]
    select = ", ".join(select_expression(c, quote_ident(c.name)) for c in layout.columns)
    key_idx = [names.index(c) for c in pk]
    text_keys = [_text_key_renderer(s) for s in specs]
    found: dict[str, dict[str, Any]] = {}
    for raw in _select_keys(cur, database, t, select, keys):
        row = {n: (None if v is None else f(v)) for n, f, v in zip(names, layout.renderers, raw)}
        found[_key_text([raw[i] for i in key_idx], text_keys)] = row
    render_key = [layout.renderers[i] for i in key_idx]
    base = {"kafka_topic": data_topic(settings.kafka.topic_prefix, database, t.name), "kafka_partition": -1,
            "kafka_timestamp_ms": stamp_ms, "ts_ms": stamp_ms, "source_db": database, "source_table": t.name,
            "source_ts_ms": snap.read_at_ms, "source_snapshot": SNAPSHOT_MARK, "source_server_id": snap.server_id,
            "source_gtid": snap.gtid, "source_file": snap.file, "source_pos": snap.pos, "transaction_id": None,
            "_dw_landing_file": f"{landing_file}:{t.name}"}
    tr = TableRepair(t.name)
    for text, key in zip(key_texts, keys):
        row = found.get(text)
        if row is not None:
            op, before, after = "r", None, row
            key_json = dumps({k: row[k] for k in pk}).decode()
            tr.upserts += 1
        else:  # only silver has it: a delete carrying the key in its before image
            image = {k: f(v if isinstance(v, bytes) else str(v)) for k, f, v in zip(pk, render_key, key)}
            op, before, after = "d", image, None
            key_json = dumps(image).decode()
            tr.deletes += 1
        # Unique coordinates per correction (no Kafka offset exists): repair time in ms and the row index.
        n = len(out)
        out.append({**base, "kafka_offset": stamp_ms * 1_000_000 + n, "key": key_json, "op": op,
                    "before": None if before is None else dumps(before).decode(),
                    "after": None if after is None else dumps(after).decode(), "source_row": n})
    return tr


# ---- the repair -------------------------------------------------------------------------------------------


def repair_client(settings: Settings, client: str | ClientDatabases, model: StandardModel | None = None, *,
                  tables: Iterable[str] | None = None, rounds: int = 3, settle_seconds: float = 5.0,
                  watermark: Watermark | None = None, verify: bool = True,
                  found: ReconciliationResult | None = None) -> RepairResult:
    """Find the keys where silver differs (the reconciliation check, changes in flight forgiven), re-read them in
    one consistent snapshot and apply them as corrections; `verify` re-runs the check afterwards.

    `found` reuses a check result already computed (the Dagster check repairs what it just found).
    """
    from dw_assets.lakehouse.apply import apply_corrections

    dbs = client if isinstance(client, ClientDatabases) else client_databases(settings, client)
    model = model or settings.standard_model()
    check = dict(tables=tables, rounds=rounds, settle_seconds=settle_seconds, watermark=watermark)
    found = found or reconcile(settings, dbs, model, **check)  # type: ignore[arg-type]
    result = RepairResult(dbs.client, found)
    differing = {t.table: t.differing_keys for t in found.failed_tables if t.differing_keys}
    if not differing:
        return result
    repair_id = _record_repair(settings, dbs.client, differing)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    result.landing_file = f"{SNAPSHOT_MARK}:{stamp}"
    rows, snap, result.tables = read_corrections(settings, dbs, model, differing, result.landing_file)
    result.binlog_file, result.binlog_pos = snap.file, snap.pos
    applied = apply_corrections(settings, dbs.client, rows, model, database=dbs.production_db)
    result.applied_batch = applied.new_batch
    failed = {t: e for t, e in applied.failed.items() if t in differing}
    if failed:
        raise RepairError(f"{dbs.client}: corrections could not be applied: {failed}")
    _finish_record(settings, repair_id, result)
    if verify:
        result.after = reconcile(settings, dbs, model, **check)  # type: ignore[arg-type]
    return result
