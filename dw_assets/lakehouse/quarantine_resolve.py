"""`dw lake quarantine list|retry|discard`: see what waits in a client's quarantine and resolve it.

A retry takes every open row of a table (status `retrying`, so a crash leaves them to the next retry), runs them
through the same apply as a batch (decode with the current model and code, MERGE into silver and history in
binlog order), quarantines again what still fails (and holds what is behind it), then drops the taken rows.
Silver ignores changes it already has, so a retry after a crash in between is harmless.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow.compute as pc

from dw_assets.checks import alerts
from dw_assets.contracts import LANDING_SCHEMA
from dw_assets.model import StandardModel, load_model
from dw_assets.settings import Settings

from . import changes, quarantine
from .apply import TABLE_ERRORS, TableApply, _apply_table
from .apply_lock import apply_lock
from .client_state import ClientState
from .evolution import InformationSchemaSource, SourceSchema


@dataclass
class QuarantineSummary:
    table: str
    failed: int = 0
    held: int = 0
    retrying: int = 0
    discarded: int = 0
    first_error: str | None = None
    first_coordinates: dict = field(default_factory=dict)

    @property
    def open(self) -> int:
        return self.failed + self.held + self.retrying


def summarize(settings: Settings, client: str, tables: list[str]) -> list[QuarantineSummary]:
    """Per table with anything in quarantine: counts by status and the first failed change."""
    out = []
    for name in tables:
        q = quarantine.read_quarantine(settings, client, name)
        if not q.num_rows:
            continue
        s = QuarantineSummary(name)
        for status, n in zip(*pc.value_counts(q["status"]).flatten()):
            setattr(s, status.as_py(), n.as_py())
        failed = q.filter(pc.equal(q["status"], quarantine.FAILED))
        if failed.num_rows:
            first = failed.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")]).slice(0, 1)
            row = first.to_pylist()[0]
            s.first_error = row["error"]
            s.first_coordinates = {k: row[k] for k in ("kafka_topic", "kafka_partition", "kafka_offset",
                                                       "source_file", "source_pos", "source_row")}
        out.append(s)
    return out


@dataclass
class RetryResult:
    table: str
    taken: int = 0
    applied: int = 0
    still_failed: int = 0
    still_held: int = 0
    error: str | None = None


def retry(settings: Settings, client: str, model: StandardModel | None = None, tables: list[str] | None = None,
          database: str | None = None, source_schema: SourceSchema | None = None) -> list[RetryResult]:
    """Re-decode and apply every open quarantined change of the client's (given) tables; see the module doc.

    Under the client's apply lock: the quarantine table is rewritten, so a concurrent apply's append would be lost.
    """
    with apply_lock(settings.home, client):
        return _retry(settings, client, model or load_model(settings.model_path), tables, database, source_schema)


def _retry(settings: Settings, client: str, model: StandardModel, tables: list[str] | None, database: str | None,
           source_schema: SourceSchema | None) -> list[RetryResult]:
    source = source_schema or InformationSchemaSource(settings, database or client)
    state = ClientState(settings, client)
    results = []
    con = changes.connect()
    try:
        for name in _tables(model, tables):
            taken = quarantine.set_status(settings, client, name, quarantine.OPEN, quarantine.RETRYING)
            if not taken.num_rows:
                continue
            now = datetime.now(timezone.utc)
            r = RetryResult(name, taken.num_rows)
            ordered = quarantine.in_source_order(taken)
            events = changes.bronze_rows(con, ordered.select(list(LANDING_SCHEMA.names) + ["_dw_landing_file"]), 0, now)
            events = events.set_column(events.schema.get_field_index("_dw_batch"), "_dw_batch", ordered["_dw_batch"])
            tr = TableApply(name)
            try:
                _apply_table(settings, client, model.table(name), events, source, state, con, now, tr)
            except TABLE_ERRORS as e:  # the table cannot take them yet: they stay open, as they were
                quarantine.restore(settings, client, name, taken)
                r.error = str(e)
                results.append(r)
                continue
            quarantine.drop_status(settings, client, name, quarantine.RETRYING)
            r.still_failed, r.still_held = tr.quarantined, tr.held
            r.applied = taken.num_rows - tr.quarantined - tr.held
            results.append(r)
    finally:
        con.close()
    return results


def discard(settings: Settings, client: str, model: StandardModel | None = None, tables: list[str] | None = None,
            database: str | None = None, source_schema: SourceSchema | None = None) -> list[RetryResult]:
    """Drop the failed changes (kept as `discarded`, with the time) and apply the changes held behind them."""
    model = model or load_model(settings.model_path)
    names = _tables(model, tables)
    with apply_lock(settings.home, client):
        for name in names:
            quarantine.set_status(settings, client, name, [quarantine.FAILED], quarantine.DISCARDED)
        return _retry(settings, client, model, names, database, source_schema)


def _tables(model: StandardModel, tables: list[str] | None) -> list[str]:
    if not tables:
        return list(model.table_names)
    unknown = sorted(set(tables) - set(model.table_names))
    if unknown:
        raise ValueError(f"table(s) not in the model: {', '.join(unknown)}")
    return list(tables)


@dataclass(frozen=True)
class QuarantineCheck:
    passed: bool
    summary: QuarantineSummary | None
    description: str

    def findings(self, table: str) -> list[alerts.Finding]:
        """One alert per table while its quarantine is not empty (a further failure does not alert again)."""
        return [] if self.passed else [alerts.Finding(f"quarantine:{table}", "ERROR", self.description)]


def check_quarantine(settings: Settings, client: str, table: str) -> QuarantineCheck:
    """The per-table check: passes while nothing of the table waits in quarantine."""
    s = next(iter(summarize(settings, client, [table])), None)
    if s is None or not s.open:
        return QuarantineCheck(True, s, f"nothing of {table} in quarantine")
    where = ", ".join(f"{k}={v}" for k, v in s.first_coordinates.items())
    return QuarantineCheck(False, s, f"{s.failed} change(s) of {table} failed to apply and {s.held} are held "
                                     f"behind them (first: {s.first_error}; at {where}); resolve with "
                                     f"`dw lake quarantine retry|discard --client {client} --table {table}`")
