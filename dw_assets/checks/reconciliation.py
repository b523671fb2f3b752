"""Silver vs production, per table: row counts, order-independent key and content checksums, mismatching keys.

Method (changes in flight): production is read in one consistent snapshot and silver at its latest version;
keys that differ are suspects. After a settle interval (ended early once silver's applied ts_ms passes the
snapshot) both sides are read again; a suspect stays only if its production row did NOT change in between and
silver still differs. A key that production left alone for a whole interval longer than the pipeline's lag
must have reached silver, so what survives `rounds` such intervals is a real divergence. False alarms need a
lag above `settle_seconds` for the same key in every round (and an update that restores identical content);
the freshness check reports such lag on its own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Mapping

import pymysql
import pymysql.cursors

from dw_assets import db
from dw_assets.identifiers import quote_ident, quote_qualified
from dw_assets.model import StandardModel, Table
from dw_assets.settings import Settings

from . import silver_tables
from .canonical_values import MASK64, NULL, SEP, Renderer, renderer, text_hash
from .conformance import ClientDatabases, client_databases
from .schema_snapshot import SnapshotError, snapshot_database

SAMPLE_KEYS = 5


@dataclass(frozen=True)
class TablePlan:
    """What is compared for one table: the model columns present on both sides, key columns first."""

    table: str
    columns: list[str]
    key_count: int
    renderers: list[Renderer]


@dataclass
class TableDigest:
    rows: int = 0
    key_checksum: int = 0  # sum of key hashes mod 2^64: order-independent, duplicates do not cancel
    content_checksum: int = 0
    by_key: dict[str, int] = field(default_factory=dict)  # canonical key text -> content hash


@dataclass(frozen=True)
class SnapshotPosition:
    binlog_file: str | None
    binlog_pos: int | None
    read_at_ms: int  # wall clock when the snapshot was taken


@dataclass
class TableReconciliation:
    table: str
    source_rows: int
    silver_rows: int | None  # None: no silver table
    source_key_checksum: str
    silver_key_checksum: str | None
    source_content_checksum: str
    silver_content_checksum: str | None
    missing_in_silver: int = 0
    extra_in_silver: int = 0
    content_differs: int = 0
    resolved_in_flight: int = 0  # suspects that caught up during the retries
    # Suspects left unconfirmed because silver never reached the source read of the last round (a lagging
    # pipeline is the freshness check's finding, not a divergence): checked again on the next run.
    unconfirmed_behind: int = 0
    sample_keys: list[str] = field(default_factory=list)
    note: str = ""
    differing_keys: list[str] = field(default_factory=list, repr=False)  # every confirmed key (canonical text)

    @property
    def passed(self) -> bool:
        return self.missing_in_silver == 0 and self.extra_in_silver == 0 and self.content_differs == 0

    def summary(self) -> str:
        s = (f"{self.table}: source {self.source_rows} rows, silver "
             f"{'missing' if self.silver_rows is None else self.silver_rows} rows")
        if not self.passed:
            s += (f"; {self.missing_in_silver} missing in silver, {self.extra_in_silver} extra in silver, "
                  f"{self.content_differs} with different content (keys {', '.join(self.sample_keys)})")
        elif self.unconfirmed_behind:
            s += f"; {self.unconfirmed_behind} key(s) unconfirmed: silver behind the source (see silver_fresh)"
        return s


@dataclass
class ReconciliationResult:
    client: str
    tables: list[TableReconciliation]
    rounds: int
    position: SnapshotPosition | None

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tables)

    @property
    def failed_tables(self) -> list[TableReconciliation]:
        return [t for t in self.tables if not t.passed]

    def markdown(self) -> str:
        head = ["table", "source rows", "silver rows", "missing in silver", "extra in silver", "content differs",
                "key checksum equal", "content checksum equal", "sample keys"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in self.tables:
            lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in [
                t.table, t.source_rows, "—" if t.silver_rows is None else t.silver_rows, t.missing_in_silver,
                t.extra_in_silver, t.content_differs, t.source_key_checksum == t.silver_key_checksum,
                t.source_content_checksum == t.silver_content_checksum, ", ".join(t.sample_keys)]) + " |")
        return "\n".join(lines)


# ---- planning ---------------------------------------------------------------------------------------------


def plan_tables(settings: Settings, dbs: ClientDatabases, model: StandardModel,
                tables: Iterable[str] | None = None) -> tuple[list[TablePlan], list[TableReconciliation]]:
    """Per model table, the columns both production and silver have. Tables that cannot be compared come back
    as ready-made results (no silver table, or a key column missing)."""
    try:
        snap = snapshot_database(settings, dbs.production_db)
    except SnapshotError:
        return [], []
    wanted = set(tables) if tables is not None else None
    plans, unplannable = [], []
    for t in model.tables:
        if (wanted is not None and t.name not in wanted) or snap.table(t.name) is None:
            continue  # a table missing in production is the schema check's finding
        source_cols = set(snap.table(t.name).column_names)  # type: ignore[union-attr]
        dt = silver_tables.open_silver(settings, dbs.client, t.name)
        silver_cols = {f.name for f in dt.schema().fields} if dt is not None else source_cols
        cols = [c for c in _key_first(t) if c in source_cols and c in silver_cols]
        if not all(k in cols for k in t.primary_key):
            unplannable.append(TableReconciliation(t.name, 0, None, "", None, "", None,
                                                   note="primary key columns missing on one side"))
            continue
        plans.append(TablePlan(t.name, cols, len(t.primary_key), [renderer(t.column(c).type) for c in cols]))
    return plans, unplannable


def _key_first(t: Table) -> list[str]:
    return list(t.primary_key) + [c.name for c in t.columns if c.name not in t.primary_key]


# ---- reading ----------------------------------------------------------------------------------------------


def _digest_rows(rows: Iterable[tuple | list], plan: TablePlan) -> TableDigest:
    """Each row rendered once: the key text is the rendering's first `key_count` fields, and the hashes equal
    `row_hash(row)` and `row_hash([key])` (the hot loop of the check, so no second rendering)."""
    d = TableDigest()
    k, r = plan.key_count, plan.renderers
    keys_checksum = content_checksum = 0
    by_key = d.by_key
    for row in rows:
        rendered = [NULL if v is None else rr(v) for v, rr in zip(row, r)]
        key = SEP.join(rendered[:k])
        h = text_hash(SEP.join(rendered))
        keys_checksum += text_hash(key)
        content_checksum += h
        by_key[key] = h
        d.rows += 1
    d.key_checksum, d.content_checksum = keys_checksum & MASK64, content_checksum & MASK64
    return d


def source_digests(settings: Settings, database: str, plans: list[TablePlan]
                   ) -> tuple[dict[str, TableDigest], SnapshotPosition]:
    """Digest every planned table of `database` in ONE consistent snapshot (no locks, cdc role)."""
    out: dict[str, TableDigest] = {}
    with db.connection(settings, role="cdc", cursorclass=pymysql.cursors.SSCursor) as conn:
        with conn.cursor() as cur:
            # TIMESTAMP columns render in the session zone; the lake holds them as UTC.
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            read_at = int(time.time() * 1000)
            cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = dict(cur.fetchall())
        for p in plans:
            cols = ", ".join(quote_ident(c) for c in p.columns)
            with conn.cursor() as cur:
                cur.execute(f"SELECT {cols} FROM {quote_qualified(database, p.table)}")
                out[p.table] = _digest_rows(cur, p)  # streamed: SSCursor keeps memory flat
        conn.commit()
    pos = status.get("Binlog_snapshot_position")
    return out, SnapshotPosition(status.get("Binlog_snapshot_file"), int(pos) if pos else None, read_at)


def silver_digests(settings: Settings, client: str, plans: list[TablePlan]) -> dict[str, TableDigest | None]:
    out: dict[str, TableDigest | None] = {}
    for p in plans:
        dt = silver_tables.open_silver(settings, client, p.table)
        if dt is None:
            out[p.table] = None
            continue
        t = silver_tables.read_current_rows(dt, p.columns)
        out[p.table] = _digest_rows(zip(*(t.column(c).to_pylist() for c in p.columns)), p)
    return out


# ---- comparing --------------------------------------------------------------------------------------------


def _mismatched(src: TableDigest, sil: TableDigest | None) -> set[str]:
    if sil is None:
        return set(src.by_key)
    if src.key_checksum == sil.key_checksum and src.content_checksum == sil.content_checksum \
            and src.rows == sil.rows:
        return set()  # fast path: equal checksums, no per-key walk
    keys = set(src.by_key) | set(sil.by_key)
    return {k for k in keys if src.by_key.get(k) != sil.by_key.get(k)}


# With a watermark, a round waits up to LAG_WAIT_SECONDS for each suspect table's silver to pass the source read
# before it judges; a table whose silver did not move for STILL_SECONDS and whose production rows did not change
# between the two reads has nothing in flight (an idle table: a difference is real).
LAG_WAIT_SECONDS, STILL_SECONDS = 30.0, 12.0

Watermark = Callable[[], "Mapping[str, int | None] | int | None"]


def _per_table(watermark: Watermark, tables: list[str]) -> dict[str, int | None]:
    """The watermark's reading per table; a client-wide int counts for every table (older callers)."""
    w = watermark()
    if isinstance(w, Mapping):
        return {t: w.get(t) for t in tables}
    return {t: w for t in tables}


def _wait_for_silver(watermark: Watermark | None, tables: list[str], target_ms: int, settle_seconds: float,
                     sleep: Callable[[float], None]) -> dict[str, str]:
    """Per table: "reached" (silver's applied ts_ms passed `target_ms`), "still" (silver did not move for
    STILL_SECONDS) or "moving" (still catching up after LAG_WAIT_SECONDS).

    A client-wide maximum is not enough: one busy table passing the target says nothing of the others, which
    is how a lagging pipeline under load once raised false alarms.
    """
    start = time.monotonic()
    if watermark is None:
        while time.monotonic() - start < settle_seconds:
            sleep(min(0.25, max(0.0, settle_seconds - (time.monotonic() - start))))
        return {t: "reached" for t in tables}
    last = _per_table(watermark, tables)
    moved_at = {t: start for t in tables}
    while True:
        now_w, now = _per_table(watermark, tables), time.monotonic()
        state: dict[str, str] = {}
        for t in tables:
            w = now_w[t]
            if w != last[t]:
                last[t], moved_at[t] = w, now
            if w is not None and w >= target_ms:
                state[t] = "reached"
            elif now - start >= settle_seconds and now - moved_at[t] >= STILL_SECONDS:
                state[t] = "still"
            else:
                state[t] = "moving"
        if "moving" not in state.values() or now - start >= max(settle_seconds, LAG_WAIT_SECONDS):
            return state
        sleep(0.25)


def reconcile(settings: Settings, client: str | ClientDatabases, model: StandardModel | None = None, *,
              tables: Iterable[str] | None = None, rounds: int = 3, settle_seconds: float = 5.0,
              watermark: Watermark | None = None,
              sleep: Callable[[float], None] = time.sleep) -> ReconciliationResult:
    """Compare the client's production tables with silver (see the module docstring for the method).

    `watermark()` returns silver's applied source ts_ms per table (e.g. `freshness.applied_ts_by_table`; a
    client-wide int is taken for every table); binlog timestamps have 1-second resolution, hence the extra
    second in the target.
    """
    dbs = client if isinstance(client, ClientDatabases) else client_databases(settings, client)
    model = model or settings.standard_model()
    plans, results = plan_tables(settings, dbs, model, tables)
    if not plans:
        return ReconciliationResult(dbs.client, results, 0, None)
    src, pos = source_digests(settings, dbs.production_db, plans)
    sil = silver_digests(settings, dbs.client, plans)
    first_suspects = {p.table: _mismatched(src[p.table], sil[p.table]) for p in plans}
    suspects = dict(first_suspects)
    done = 1
    caught_up = {p.table: watermark is None for p in plans}
    while done < rounds and any(suspects.values()):
        again = [p for p in plans if suspects[p.table]]
        waited = _wait_for_silver(watermark, [p.table for p in again], pos.read_at_ms + 1000, settle_seconds, sleep)
        src2, pos = source_digests(settings, dbs.production_db, again)
        sil2 = silver_digests(settings, dbs.client, again)
        for p in again:
            s_old, s_new, l_new = src[p.table], src2[p.table], sil2[p.table]
            l_map = l_new.by_key if l_new is not None else {}
            # Stable in production across the interval, and silver still differs: keep suspecting.
            suspects[p.table] = {k for k in suspects[p.table]
                                 if s_new.by_key.get(k) == s_old.by_key.get(k) and l_map.get(k) != s_new.by_key.get(k)}
            production_still = (s_new.rows, s_new.content_checksum) == (s_old.rows, s_old.content_checksum)
            caught_up[p.table] = waited[p.table] == "reached" or (waited[p.table] == "still" and production_still)
            src[p.table], sil[p.table] = s_new, l_new
        done += 1

    for p in plans:
        s, l = src[p.table], sil[p.table]
        # Only a round whose silver had caught up with its source read can confirm (rounds=1 trusts one read).
        behind = done > 1 and not caught_up[p.table] and l is not None
        confirmed = [] if behind else sorted(suspects[p.table])
        l_map = l.by_key if l is not None else {}
        r = TableReconciliation(
            table=p.table, source_rows=s.rows, silver_rows=l.rows if l is not None else None,
            source_key_checksum=f"{s.key_checksum:016x}", silver_key_checksum=f"{l.key_checksum:016x}" if l else None,
            source_content_checksum=f"{s.content_checksum:016x}",
            silver_content_checksum=f"{l.content_checksum:016x}" if l else None,
            missing_in_silver=sum(1 for k in confirmed if k in s.by_key and k not in l_map),
            extra_in_silver=sum(1 for k in confirmed if k not in s.by_key and k in l_map),
            content_differs=sum(1 for k in confirmed if k in s.by_key and k in l_map),
            resolved_in_flight=len(first_suspects[p.table]) - len(suspects[p.table]),
            unconfirmed_behind=len(suspects[p.table]) if behind else 0,
            sample_keys=[k.replace(SEP, ",") for k in confirmed[:SAMPLE_KEYS]],
            note="no silver table" if l is None else "",
            differing_keys=confirmed,
        )
        results.append(r)
    return ReconciliationResult(dbs.client, results, done, pos)
