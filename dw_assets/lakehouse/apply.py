"""The apply step for one client: new landing files -> bronze -> silver (+ SCD2 history), all tables in one go.

Designed so a micro-batch costs what the batch touches, not what the tables hold, in few commits:
(1) create missing tables once per process (and migrate an old layout, `migration`); (2) read the landing files
not in the manifest (or the files a caller hands in, `apply_files`); (3) append them to the client's ONE bronze
table in one commit that seals the batch (application transaction `dw.bronze` = batch number, the batch's
files in its metadata); (4) then, side by side: the landing manifest append, and per changed table one silver
MERGE (and one history MERGE for SCD2 tables), each commit carrying the batch number as that table's progress
(application transactions `dw.silver`/`dw.history`). So a batch makes 2 commits plus one per changed silver or
history table (it made ~3 per table before: bronze, tombstones, silver, plus manifest and progress); tombstones
are bronze's delete events (no commit of their own), and silver reads only the rows of the batch's keys.

Why application transactions rather than bookkeeping tables: progress and data are one atomic commit, so a
kill -9 between any two commits leaves nothing to reconcile. A crash after the bronze commit and before the
manifest is found by the bronze transaction being ahead of the manifest (its files are taken from the commit),
and a table whose silver is behind (failed or interrupted earlier) catches up from bronze (`_dw_batch` > its
progress), so a schema error in one table never blocks the others nor loses events.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping, Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from dw_assets.model import StandardModel, Table, load_model
from dw_assets.settings import Settings

from . import changes, quarantine
from .apply_lock import apply_lock
from .bronze import BronzeView, append_bronze, files_of_batch, read_bronze_since, sealed_batch, unique_changes
from .changes import ChangeParseError
from .client_state import ClientState, manifest_entry
from .commit_retry import CommitRetriesExhausted
from .decoding import Encoding
from .evolution import InformationSchemaSource, SchemaChangeError, SourceSchema, add_columns, plan_new_columns
from .history import HISTORY_APP, apply_history
from .landing_files import LandingFile, list_landing_files, read_landing_files
from .migration import migrate_client
from .ordering import ORDER_COLUMNS, min_order
from .paths import bronze_url, open_table, table_url
from .silver import SILVER_APP, MergeCounts, merge_silver, read_tombstones, truncate_silver
from .table_cache import borrow, give_back
from .tables import BRONZE_TABLE, DW_PREFIX, SOURCE_TS, ensure_client_tables_cached

log = logging.getLogger(__name__)
# Failures that stop one table and let the others go on; anything else is a bug or an outage and propagates.
TABLE_ERRORS = (SchemaChangeError, ChangeParseError, CommitRetriesExhausted)


@dataclass
class TableApply:
    table: str
    events: int = 0  # change events merged in this run (from this batch or caught up from bronze)
    bronze_rows: int = 0  # appended to bronze in this run
    bronze_duplicates: int = 0  # redelivered events not appended (bronze or the batch already had them)
    bronze_version: int | None = None
    silver: MergeCounts = field(default_factory=MergeCounts)
    history: MergeCounts | None = None
    truncated_rows: int = 0
    added_columns: list[str] = field(default_factory=list)
    latest_source_ts_ms: int | None = None
    error: str | None = None
    quarantined: int = 0  # changes that did not decode, now in <lake>/quarantine/<client>/<table>
    held: int = 0  # later changes of their keys, held in the quarantine behind them

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ApplyResult:
    client: str
    batch: int  # the client's batch number after this run (0 = nothing ever applied)
    new_batch: int | None = None  # the batch this run landed, if any new files
    files: int = 0
    events: int = 0
    seconds: float = 0.0
    tables: dict[str, TableApply] = field(default_factory=dict)
    created_tables: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)  # topics of tables the model does not have
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, for the benchmark and logs
    cpu_s: float = 0.0  # CPU seconds of this process (all threads) during the run: exact in an apply worker

    @property
    def failed(self) -> dict[str, str]:
        return {t: r.error for t, r in self.tables.items() if r.error}

    @property
    def ok(self) -> bool:
        return not self.failed


def apply_client(settings: Settings, client: str, model: StandardModel | None = None, database: str | None = None,
                 source_schema: SourceSchema | None = None, threads: int | None = None) -> ApplyResult:
    """Apply every new landing file of `client` to bronze and silver; see the module docstring.

    `database` is the client's source database (default: the client name, the registry's default);
    `source_schema` types new columns (default: the source's information_schema); `threads` bounds the tables
    worked on at once (default `DW_APPLY_THREADS`). One applier per client at a time (`apply_lock`).
    """
    with apply_lock(settings.home, client):
        return _apply(settings, client, model, database, source_schema, threads, None)


def apply_files(settings: Settings, client: str, files: Sequence[LandingFile] | None,
                model: StandardModel | None = None, database: str | None = None,
                source_schema: SourceSchema | None = None, threads: int | None = None,
                rows: Mapping[str, pa.Table] | None = None) -> ApplyResult:
    """Apply the given newly landed files of `client` (e.g. those an ingest service just wrote) without listing
    the landing store (None: list it, as `apply_client`); files already in the manifest and topics of tables the
    model lacks are skipped. `rows`: the rows of some of these files by key, as their writer uploaded them, so
    they are not read back from the store. A batch a crash left behind, and tables whose silver is behind, are
    completed as in `apply_client`."""
    with apply_lock(settings.home, client):
        return _apply(settings, client, model, database, source_schema, threads, None,
                      None if files is None else list(files), rows)


def apply_corrections(settings: Settings, client: str, corrections: pa.Table, model: StandardModel | None = None,
                      database: str | None = None, source_schema: SourceSchema | None = None,
                      threads: int | None = None) -> ApplyResult:
    """Apply in-memory change rows (LANDING_SCHEMA + `_dw_landing_file`, e.g. a reconciliation repair) as part of
    the client's next batch, with any pending landing files, under the same lock.

    They reach bronze, the manifest (one entry per `_dw_landing_file` and table), silver and history exactly
    like landed events; `_dw_seq` is computed from their source coordinates, so ordering decides against
    streamed changes.
    """
    with apply_lock(settings.home, client):
        return _apply(settings, client, model, database, source_schema, threads, corrections)


def apply_to_bronze(settings: Settings, client: str, model: StandardModel, database: str | None = None,
                    files: Sequence[LandingFile] | None = None,
                    rows: Mapping[str, pa.Table] | None = None) -> ApplyResult:
    """Steps 1-3 only (tables, landing files -> bronze, manifest), for an engine that applies silver itself
    (the Spark engine, `engine/dispatch.py`). The caller holds the client's `apply_lock`."""
    return _apply(settings, client, model, database, None, None, None, None if files is None else list(files),
                  rows, local_silver=False)


def _apply(settings: Settings, client: str, model: StandardModel | None, database: str | None,
           source_schema: SourceSchema | None, threads: int | None, corrections: pa.Table | None,
           files: list[LandingFile] | None = None, rows: Mapping[str, pa.Table] | None = None,
           local_silver: bool = True) -> ApplyResult:
    started, cpu0 = time.perf_counter(), time.process_time()
    model = model or load_model(settings.model_path)
    database = database or client
    now = datetime.now(timezone.utc)
    result = ApplyResult(client, 0)
    result.created_tables = ensure_client_tables_cached(settings, client, model)
    migrate_client(settings, client, model)  # a lake of an older layout: once, before any read
    state = ClientState(settings, client)
    bronze_dt = borrow(settings, bronze_url(settings, client))
    assert bronze_dt is not None
    # A batch sealed in bronze whose manifest append was lost (kill -9 in between): its files, from the commit.
    manifest_rows = _unrecorded_batch(bronze_dt, state)
    result.timings["prepare"] = time.perf_counter() - started
    source = source_schema or InformationSchemaSource(settings, database)
    con = changes.connect()
    try:
        t0 = time.perf_counter()
        pending = _pending_files(settings, model, database, state, result, files) + _correction_files(corrections)
        target = state.last_batch + (1 if pending else 0)  # the batch every table ends at
        batch_rows = _read_batch(settings, pending, con, now, result, target, corrections, rows) if pending else {}
        t1 = time.perf_counter()
        result.timings["read_landing"] = t1 - t0
        if pending:
            result.new_batch = target
            per_file = pc.value_counts(pa.concat_arrays(
                [r["_dw_landing_file"].combine_chunks() for r in batch_rows.values()])).to_pylist()
            rows_of = {c["values"]: c["counts"] for c in per_file}
            entries = [manifest_entry(f, rows_of.get(f.key, 0), target) for f in pending]
            appended = append_bronze(settings, client, pa.concat_tables(batch_rows.values()), target, entries,
                                     bronze_dt)
            for name in batch_rows:
                tr = result.tables[name]
                tr.bronze_rows = (appended.per_table or {}).get(name, 0)
                tr.bronze_duplicates += batch_rows[name].num_rows - tr.bronze_rows
                tr.bronze_version = appended.version
            manifest_rows += entries
        # After the append (a retried append re-opened bronze: then re-open here too); every table's reads share
        # it, and in-order streaming reads none (see `BronzeView`).
        if pending and bronze_dt.version() != appended.version:
            bronze_dt = open_table(settings, bronze_url(settings, client))
            assert bronze_dt is not None
        bronze = BronzeView(bronze_dt, appended.marks_before if pending else None)
        t2 = time.perf_counter()
        result.timings["bronze"] = t2 - t1
        # The batch is sealed in bronze: the manifest and every table's silver go on side by side.
        for t in model.tables:
            result.tables.setdefault(t.name, TableApply(t.name))
        with ThreadPoolExecutor(max_workers=max(1, threads or settings.apply_threads),
                                thread_name_prefix=f"apply-{client}") as pool:
            manifest = pool.submit(state.record_files, manifest_rows, now) if manifest_rows else None
            silver = {t.name: pool.submit(_silver_task, settings, client, t, state, target, bool(pending),
                                          batch_rows.get(t.name), source, con, now, result.tables[t.name], bronze)
                      for t in model.tables if local_silver and (
                          t.name in batch_rows or state.last_batch_of.get(t.name, 0) > state.applied.get(t.name, 0))}
            for fut in silver.values():
                fut.result()  # an outage or a bug: propagates (the pool still finishes the other tables)
            if manifest is not None:
                manifest.result()
        result.timings["silver"] = time.perf_counter() - t2
        give_back(settings, bronze_url(settings, client), bronze_dt)  # for the next batch (`table_cache`)
    finally:
        con.close()
    result.batch = state.last_batch
    result.seconds = time.perf_counter() - started
    result.cpu_s = time.process_time() - cpu0
    return result


def _unrecorded_batch(bronze_dt: DeltaTable, state: ClientState) -> list[dict]:
    """Manifest rows of a batch bronze sealed but the manifest lacks; taken into `state` (appended later)."""
    sealed = sealed_batch(bronze_dt)
    if sealed <= state.last_batch:
        return []
    rows = [e for e in files_of_batch(bronze_dt, sealed) if e["file"] not in state.processed]
    state.processed.update(e["file"] for e in rows)
    for e in rows:
        state.last_batch_of[e["table"]] = max(sealed, state.last_batch_of.get(e["table"], 0))
    state.last_batch = sealed
    log.warning("apply %s: batch %d was in bronze but not in the manifest (interrupted run): %d file(s) recorded",
                state.client, sealed, len(rows))
    return rows


def _pending_files(settings: Settings, model: StandardModel, database: str, state: ClientState,
                   result: ApplyResult, files: list[LandingFile] | None = None) -> list[LandingFile]:
    """Landing files of the client's model tables not yet in the manifest (others are listed as ignored); the
    given `files`, or else every landing file of the client's topics."""
    known = set(model.table_names)
    pending: list[LandingFile] = []
    for f in list_landing_files(settings, database) if files is None else sorted(set(files)):
        if f.key in state.processed:
            continue
        if f.table not in known:
            result.ignored_files.append(f.key)
            continue
        pending.append(f)
    return pending


def _correction_files(corrections: pa.Table | None) -> list[LandingFile]:
    """One manifest entry per (`_dw_landing_file`, table) of in-memory corrections (no Kafka coordinates)."""
    if corrections is None or corrections.num_rows == 0:
        return []
    seen = set(zip(*(corrections[c].to_pylist() for c in ("_dw_landing_file", "kafka_topic", "source_table"))))
    return [LandingFile(key, topic, table, -1, -1) for key, topic, table in sorted(seen)]


def _read_batch(settings: Settings, pending: list[LandingFile], con: duckdb.DuckDBPyConnection, now: datetime,
                result: ApplyResult, batch: int, corrections: pa.Table | None = None,
                known: Mapping[str, pa.Table] | None = None) -> dict[str, pa.Table]:
    """The pending files (and in-memory corrections) as bronze rows of `batch`, per table, each change once;
    `known`: rows of files by key, as uploaded (not read back)."""
    landed = read_landing_files(settings, [f for f in pending if f.partition >= 0], known)
    if corrections is not None and corrections.num_rows:
        landed = pa.concat_tables([landed, corrections.select(landed.column_names).cast(landed.schema)])
    rows = changes.bronze_rows(con, landed, batch, now)
    result.files, result.events = len(pending), rows.num_rows
    # The model table of each row, by its topic (the bronze partition), then one de-duplication for all tables.
    table_of = {f.topic: f.table for f in pending}
    topics = pa.array(list(table_of), pa.string())
    tables = pc.take(pa.array(list(table_of.values()), pa.string()), pc.index_in(rows["kafka_topic"], topics))
    rows = rows.set_column(rows.schema.get_field_index(BRONZE_TABLE), rows.schema.field(BRONZE_TABLE),
                           pc.fill_null(tables, ""))
    unique = unique_changes(con, rows)
    received = {c["values"]: c["counts"] for c in pc.value_counts(rows[BRONZE_TABLE]).to_pylist()}
    per_table: dict[str, pa.Table] = {}
    for table in sorted(set(table_of.values())):
        per_table[table] = unique.filter(pc.equal(unique[BRONZE_TABLE], table))
        result.tables.setdefault(table, TableApply(table)).bronze_duplicates = (
            received.get(table, 0) - per_table[table].num_rows)
    return per_table


def _progress(silver_dt: DeltaTable, history_dt: DeltaTable | None, state: ClientState, table: str) -> int:
    """The last batch the table applied: silver's application transaction (and its history's, for SCD2), or a
    lake's older `silver_progress` row, whichever is later."""
    floor = state.applied.get(table, 0)
    last = max(silver_dt.transaction_version(SILVER_APP) or 0, floor)
    if history_dt is not None:
        last = min(last, max(history_dt.transaction_version(HISTORY_APP) or 0, floor))
    return last


def _silver_task(settings: Settings, client: str, t: Table, state: ClientState, target: int, new_batch: bool,
                 batch_events: pa.Table | None, source: SourceSchema, con: duckdb.DuckDBPyConnection, now: datetime,
                 tr: TableApply, bronze: BronzeView | None = None) -> bool:
    """Bring one table's silver up to batch `target`; False (error recorded) when the table must wait.

    The new batch (if any) comes from memory; older batches the table missed (a failed or interrupted earlier
    run) come from bronze, where they are committed.
    """
    # Kept open between batches (`table_cache`): given back only after a use that succeeded.
    urls = {"silver": table_url(settings, "silver", client, t.name)}
    if t.options.scd2:
        urls["history"] = table_url(settings, "silver_history", client, t.name)
    opened = {layer: borrow(settings, url) for layer, url in urls.items()}
    silver_dt, history_dt = opened["silver"], opened.get("history")
    assert silver_dt is not None
    last = _progress(silver_dt, history_dt, state, t.name)
    committed = target - 1 if new_batch else target
    events = batch_events
    if last < committed and state.last_batch_of.get(t.name, 0) > last:
        older = read_bronze_since(settings, client, t.name, last, up_to_batch=committed,
                                  dataset=bronze.dataset() if bronze is not None else None)
        if older.num_rows:
            events = older if events is None else pa.concat_tables([older, events.cast(older.schema)])
    cur = con.cursor()  # DuckDB: one connection per thread
    try:
        if events is not None and events.num_rows:
            _apply_table(settings, client, t, events, source, state, cur, now, tr, batch=target,
                         silver_dt=silver_dt, bronze=bronze, history_dt=history_dt)
        for layer, url in urls.items():
            give_back(settings, url, opened[layer])
        return True
    except TABLE_ERRORS as e:
        tr.error = str(e)
        log.error("apply %s.%s failed: %s", client, t.name, e)
        return False
    finally:
        cur.close()


@dataclass
class PreparedChanges:
    """One table's changes ready for either engine's set-based step: decoded to the lake types, minus the
    quarantined and held ones; `data_fields` the lake's data columns after any evolution."""

    typed: pa.Table
    data_fields: list[pa.Field]
    evolved: bool  # columns were added (the table's open version is stale)


def prepare_changes(settings: Settings, client: str, t: Table, events: pa.Table, source: SourceSchema,
                    con: duckdb.DuckDBPyConnection, now: datetime, tr: TableApply,
                    lake_schema: pa.Schema) -> PreparedChanges:
    """The engine-independent front of step 4 (both engines call it): add the new nullable columns the events
    carry (typed by the source schema), decode the row images, quarantine what does not decode and hold the later
    changes of its keys. Raises SchemaChangeError for a change not applied silently."""
    new_fields = plan_new_columns(client, t.name, lake_schema, changes.image_columns(con, events), source)
    if new_fields:
        layers = ("silver", "silver_history") if t.options.scd2 else ("silver",)
        add_columns(settings, client, t.name, new_fields, layers)
        lake_schema = pa.schema(list(lake_schema) + new_fields)
        tr.added_columns = [f.name for f in new_fields]
    data_fields = [f for f in lake_schema if not f.name.startswith(DW_PREFIX)]
    # Rows that do not decode, and later changes of their keys, go to the quarantine; the rest applies.
    specs = {c.name: c.type for c in t.columns}
    decoded = changes.decode_events(con, events, data_fields, specs, encoding_of(settings))
    held = quarantine.hold(settings, client, t.name, events, decoded.failed, decoded.rows, now)
    typed = decoded.typed
    if held.failed or held.held:
        typed = typed.filter(pc.is_in(decoded.rows, held.apply_rows))
        tr.quarantined, tr.held = held.failed, held.held
        log.error("apply %s.%s: %d change(s) quarantined, %d held behind them: %s", client, t.name, held.failed,
                  held.held, "; ".join(held.errors))
    tr.events = events.num_rows
    if typed.num_rows:
        tr.latest_source_ts_ms = pc.max(typed[SOURCE_TS]).as_py()
    return PreparedChanges(typed, data_fields, bool(new_fields))


def encoding_of(settings: Settings) -> Encoding:
    return Encoding(settings.cdc_time_precision_mode, settings.cdc_decimal_handling_mode)


def _apply_table(settings: Settings, client: str, t: Table, events: pa.Table, source: SourceSchema,
                 state: ClientState, con: duckdb.DuckDBPyConnection, now: datetime, tr: TableApply,
                 batch: int | None = None, silver_dt: DeltaTable | None = None,
                 bronze: BronzeView | None = None, history_dt: DeltaTable | None = None) -> None:
    """Step 4 for one table: evolve the schema if needed, truncate, MERGE into silver, update history; `batch`
    (None: a quarantine retry, outside the batch sequence) is recorded as the table's progress."""
    silver_dt = silver_dt or open_table(settings, table_url(settings, "silver", client, t.name))
    assert silver_dt is not None
    prepared = prepare_changes(settings, client, t, events, source, con, now, tr,
                               pa.schema(silver_dt.schema().to_arrow()))
    typed, data_fields = prepared.typed, prepared.data_fields
    specs = {c.name: c.type for c in t.columns}
    encoding = encoding_of(settings)

    truncate_at = changes.truncate_order(events)
    stored = state.truncated.get(t.name)
    current = not prepared.evolved  # silver_dt is still the table's latest version (no ALTER, no truncate)
    if truncate_at is not None and (stored is None or truncate_at > stored):
        tr.truncated_rows = truncate_silver(settings, client, t.name, truncate_at)
        state.record_truncation(t.name, truncate_at, now)
        current = False
    effective = max((s for s in (stored, truncate_at) if s is not None), default=None)

    keys = list(t.primary_key)
    columns = [f.name for f in data_fields]
    tombs = None
    oldest = min_order(typed)
    if oldest is not None:  # the deletes that can hold back one of these changes: at or after the oldest
        key_fields = [f for f in data_fields if f.name in keys]
        tombs = read_tombstones(settings, client, t.name, con, key_fields, oldest.seq, specs, encoding, bronze,
                                events)
    tr.silver = merge_silver(settings, client, t.name, keys, typed, columns, con, now, truncated_at=effective,
                             tombs=tombs, batch=batch, dt=silver_dt if current else None)
    if t.options.scd2:
        truncates = events.filter(pc.equal(events["op"], "t")).select([*ORDER_COLUMNS, "source_ts_ms"]).rename_columns(
            [*ORDER_COLUMNS, SOURCE_TS])
        tr.history = apply_history(settings, client, t.name, keys, columns, typed, truncates, con, batch=batch,
                                   dt=history_dt if current else None)
