"""End-to-end freshness as a user sees it: from the commit of a change in a client's production database to
the moment silver shows it, measured by the demo itself rather than taken from the pipeline's own metadata.

Every `interval` seconds the probe commits a marker update in each client: a DATETIME/TIMESTAMP column the
workload changes (role `updated_at`, else `mutable`; any precision, the marker is cut to it) of one fixed row is
set to the commit's UTC time. Silver shows the marker once that row's value there is at least the marker (a later
update of the same row also proves the marker's commit was applied: apply is ordered). Latency = first poll that
sees it - commit time, so the poll interval (and a second-precision column's second) is the resolution.
"""
from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow.compute as pc

from dw_assets.db import connect
from dw_assets.identifiers import quote_ident
from dw_assets.lakehouse.paths import read_delta
from dw_assets.model import StandardModel, Table
from dw_assets.settings import Settings

log = logging.getLogger(__name__)
TEMPORAL_BASES = ("datetime", "timestamp")


@dataclass(frozen=True)
class MarkerTarget:
    table: str
    key_columns: tuple[str, ...]
    column: str
    fsp: int = 6  # fractional-second digits of the column: the marker is cut to them

    def __str__(self) -> str:
        unit = "microsecond" if self.fsp == 6 else "second" if self.fsp == 0 else f"{self.fsp}-digit"
        return f"{self.table}.{self.column} ({unit} precision) of the row with the smallest key"

    def cut(self, value: datetime) -> datetime:
        step = 10 ** (6 - self.fsp)
        return value.replace(microsecond=value.microsecond // step * step)


def marker_target(model: StandardModel) -> MarkerTarget:
    """The best table for markers: one the workload never deletes from, readable by the local engines (no column
    mapping), with a DATETIME/TIMESTAMP column of role updated_at (preferred) or mutable; a finer precision wins
    a tie, then model order."""
    found = []
    for i, t in enumerate(model.tables):
        if t.workload.delete_weight or not t.primary_key or t.options.column_mapping == "name":
            continue
        for c in _marker_columns(t):
            found.append(((c.role != "updated_at", -(c.type.fsp or 0), i), MarkerTarget(
                t.name, tuple(t.primary_key), c.name, c.type.fsp or 0)))
    if not found:
        raise ValueError("the model has no table suitable for freshness markers: needs a DATETIME or TIMESTAMP "
                         "column with role updated_at or mutable in a table the workload does not delete from")
    return min(found, key=lambda f: f[0])[1]


def _marker_columns(t: Table) -> list:
    return [c for c in t.columns if c.role in ("updated_at", "mutable") and not c.primary_key
            and c.type.base in TEMPORAL_BASES]


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


@dataclass
class Marker:
    client: str
    value: datetime  # naive UTC, as committed
    committed_at: float  # epoch seconds right after COMMIT returned
    seen_at: float | None = None

    @property
    def latency_s(self) -> float | None:
        return None if self.seen_at is None else self.seen_at - self.committed_at


@dataclass
class FreshnessStats:
    samples: list[float] = field(default_factory=list)
    pending: int = 0

    @property
    def p50(self) -> float | None:
        return percentile(self.samples, 50)

    @property
    def p95(self) -> float | None:
        return percentile(self.samples, 95)

    @property
    def max(self) -> float | None:
        return max(self.samples) if self.samples else None

    def describe(self) -> str:
        if not self.samples:
            return f"no sample yet ({self.pending} pending)"
        return (f"p50 {self.p50:.1f}s, p95 {self.p95:.1f}s, max {self.max:.1f}s over {len(self.samples)} markers"
                + (f" ({self.pending} pending)" if self.pending else ""))

    def as_dict(self) -> dict[str, Any]:
        return {"samples": len(self.samples), "pending": self.pending, "p50_s": self.p50, "p95_s": self.p95,
                "max_s": self.max, "mean_s": statistics.fmean(self.samples) if self.samples else None}


class FreshnessProbe:
    """A background thread: `start()`, later `stop_markers()` (no new markers, keep polling), `stop()`."""

    def __init__(self, settings: Settings, clients: dict[str, str], model: StandardModel,
                 interval: float = 5.0, poll: float = 1.0):
        self.settings, self.clients, self.interval, self.poll = settings, dict(clients), interval, poll
        self.target = marker_target(model)
        self.markers: list[Marker] = []
        self.errors: list[str] = []
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._no_new = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="freshness-probe", daemon=True)

    # ---- control ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop_markers(self) -> None:
        self._no_new.set()

    def commit_final_markers(self) -> None:
        """One more marker per client now (from the caller's thread): seen in silver = caught up to now."""
        for client, database in self.clients.items():
            self._guard(self._commit_marker, client, database)

    def stop(self, timeout: float = 10.0) -> None:
        self._no_new.set()
        self._stop.set()
        self._thread.join(timeout)

    # ---- results ------------------------------------------------------------------------------------------
    def stats(self, client: str | None = None) -> FreshnessStats:
        with self._lock:
            ms = [m for m in self.markers if client is None or m.client == client]
        return FreshnessStats([m.latency_s for m in ms if m.latency_s is not None],
                              sum(1 for m in ms if m.seen_at is None))

    def pending(self) -> int:
        with self._lock:
            return sum(1 for m in self.markers if m.seen_at is None)

    # ---- work ---------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        next_marker = time.monotonic()
        while not self._stop.is_set():
            if not self._no_new.is_set() and time.monotonic() >= next_marker:
                next_marker = time.monotonic() + self.interval
                for client, database in self.clients.items():
                    self._guard(self._commit_marker, client, database)
            for client in self.clients:
                self._guard(self._poll_silver, client)
            self._stop.wait(self.poll)

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - a failed probe is reported, it never stops the demo
            msg = f"{fn.__name__}({args[0]}): {type(e).__name__}: {e}"
            if msg not in self.errors:
                self.errors.append(msg)
                log.warning("freshness probe: %s", msg)

    def _commit_marker(self, client: str, database: str) -> None:
        t = self.target
        with connect(self.settings, database=database) as conn, conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            keys = ", ".join(quote_ident(k) for k in t.key_columns)
            if client not in self._keys:
                cur.execute(f"SELECT {keys} FROM {quote_ident(t.table)} ORDER BY {keys} LIMIT 1")
                key = cur.fetchone()
                if key is None:
                    raise RuntimeError(f"{database}.{t.table} is empty")
                self._keys[client] = tuple(key)
            value = t.cut(datetime.now(timezone.utc).replace(tzinfo=None))
            where = " AND ".join(f"{quote_ident(k)} = %s" for k in t.key_columns)
            cur.execute(f"UPDATE {quote_ident(t.table)} SET {quote_ident(t.column)} = %s WHERE {where}",
                        (value, *self._keys[client]))
            conn.commit()
            committed = time.time()
        with self._lock:
            self.markers.append(Marker(client, value, committed))

    def _poll_silver(self, client: str) -> None:
        with self._lock:
            waiting = [m for m in self.markers if m.client == client and m.seen_at is None]
        if not waiting:
            return
        t = self.target
        match = None
        for k, v in zip(t.key_columns, self._keys[client]):
            match = pc.field(k) == v if match is None else match & (pc.field(k) == v)
        rows = read_delta(self.settings, "silver", client, t.table, columns=[t.column], filter=match).to_pylist()
        now = time.time()
        if not rows or rows[0][t.column] is None:
            return
        shown = rows[0][t.column]
        shown = shown.replace(tzinfo=None) if shown.tzinfo else shown
        with self._lock:
            for m in waiting:
                if shown >= m.value:
                    m.seen_at = now
