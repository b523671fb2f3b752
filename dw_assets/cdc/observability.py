"""Throughput and lag figures of the capture service: logged every N seconds and returned as Dagster metadata.

events/s and bytes/s over the last interval; lag = now - source.ts_ms of the last event (0 once caught up).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .envelope import now_ms

log = logging.getLogger("dw_assets.cdc")


@dataclass
class CaptureStats:
    interval_s: float = 10.0
    events: int = 0  # change messages produced (rows, snapshot rows, truncates)
    binlog_bytes: int = 0
    snapshot_rows: int = 0
    ddl: int = 0
    transactions: int = 0
    last_source_ts_ms: int | None = None
    caught_up: bool = False
    position: str = ""
    per_database: dict[str, int] = field(default_factory=dict)
    started = time.monotonic()
    _mark_t: float = field(default_factory=time.monotonic)
    _mark_events: int = 0
    _mark_bytes: int = 0

    @property
    def lag_ms(self) -> int | None:
        if self.caught_up:
            return 0
        return None if self.last_source_ts_ms is None else max(0, now_ms() - self.last_source_ts_ms)

    def maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        dt = now - self._mark_t
        if not force and dt < self.interval_s:
            return
        ev_rate = (self.events - self._mark_events) / dt if dt > 0 else 0.0
        by_rate = (self.binlog_bytes - self._mark_bytes) / dt if dt > 0 else 0.0
        lag = self.lag_ms
        log.info("capture: %.0f events/s, %.0f KB/s binlog, lag %s, position %s, %d events total",
                 ev_rate, by_rate / 1024, "n/a" if lag is None else f"{lag} ms", self.position, self.events)
        self._mark_t, self._mark_events, self._mark_bytes = now, self.events, self.binlog_bytes

    def as_metadata(self) -> dict[str, object]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "events": self.events,
            "snapshot_rows": self.snapshot_rows,
            "transactions": self.transactions,
            "ddl_statements": self.ddl,
            "events_per_s": round(self.events / elapsed, 1),
            "binlog_bytes_per_s": round(self.binlog_bytes / elapsed, 1),
            "last_source_ts_ms": self.last_source_ts_ms,
            "lag_ms": self.lag_ms,
            "position": self.position,
        }
