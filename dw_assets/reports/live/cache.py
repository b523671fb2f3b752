"""Report results per scope, cached per silver Delta version: a page costs a report query only when one of the
silver tables its reports read got a new commit (or the scope's clients changed).

The versions are read before the engine opens the tables, so a cached result is never older than the key it is
stored under (at worst newer, which costs one extra run at the next change, never a stale page).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from deltalake import DeltaTable

from dw_assets.lakehouse.paths import open_table, table_url
from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from ..catalog import ReportSpec
from ..engine import NoSilverData, ReportRun, Scope, open_report_engine

log = logging.getLogger(__name__)

Versions = tuple[tuple[str, str, int], ...]  # (client, table, Delta version or -1 when the table is missing)


@dataclass(frozen=True)
class ScopeResults:
    """Every report of a scope at one set of silver versions."""

    scope: Scope
    versions: Versions
    key: str  # short digest of `versions`, what pages poll for
    runs: dict[str, ReportRun]  # report name -> run (absent: no silver data for it yet)
    missing: dict[str, str]  # report name -> why it has no result
    computed_at_ms: int
    seconds: float

    @property
    def newest_source_ts_ms(self) -> int | None:
        values = [r.newest_source_ts_ms for r in self.runs.values() if r.newest_source_ts_ms is not None]
        return max(values) if values else None


def versions_key(versions: Versions) -> str:
    return hashlib.sha256(repr(versions).encode()).hexdigest()[:16]


class SilverVersions:
    """Current Delta versions of silver tables, from kept-open tables refreshed incrementally (a listing of the
    new log entries, not a full open, per poll)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._tables: dict[tuple[str, str], DeltaTable] = {}
        self._lock = threading.Lock()

    def version(self, client: str, table: str) -> int:
        key = (client, table)
        # One lock for all tables: a client page and the portfolio share tables, and a DeltaTable object is not
        # meant to be refreshed from two threads at once. A refresh is a few milliseconds.
        with self._lock:
            dt = self._tables.get(key)
            if dt is not None:
                try:
                    dt.update_incremental()
                    return dt.version()
                except Exception:  # noqa: BLE001 - table deleted or rewritten under us: open it again below
                    log.debug("reopening silver %s/%s", client, table, exc_info=True)
            dt = open_table(self.settings, table_url(self.settings, "silver", client, table))
            if dt is None:
                self._tables.pop(key, None)
                return -1
            self._tables[key] = dt
            return dt.version()

    def of(self, clients: Sequence[str], tables: Sequence[str]) -> Versions:
        return tuple((c, t, self.version(c, t)) for c in clients for t in tables)


class ReportCache:
    """The latest results per scope. `queries` counts report runs over silver (what the cache saves)."""

    def __init__(self, settings: Settings, model: StandardModel, specs: Callable[[], Sequence[ReportSpec]]):
        self.settings, self.model, self.specs = settings, model, specs
        self.silver = SilverVersions(settings)
        self.queries = 0
        self._latest: dict[str, ScopeResults] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def tables(self) -> tuple[str, ...]:
        wanted = {t for s in self.specs() for t in s.silver_tables}
        return tuple(t for t in self.model.table_names if t in wanted)

    def versions(self, scope: Scope) -> Versions:
        return self.silver.of(scope.clients, self.tables())

    def results(self, scope: Scope) -> ScopeResults:
        """The scope's results at the current silver versions, computing them only if those changed."""
        with self._guard:
            lock = self._locks.setdefault(scope.name, threading.Lock())
        with lock:  # one computation per scope at a time; concurrent viewers wait and share it
            versions = self.versions(scope)
            cached = self._latest.get(scope.name)
            if cached is not None and cached.versions == versions:
                return cached
            result = self._compute(scope, versions)
            self._latest[scope.name] = result
            return result

    def _compute(self, scope: Scope, versions: Versions) -> ScopeResults:
        t0 = time.perf_counter()
        runs: dict[str, ReportRun] = {}
        missing: dict[str, str] = {}
        with open_report_engine(self.settings, scope, self.model) as engine:
            for spec in self.specs():
                with self._guard:
                    self.queries += 1
                try:
                    runs[spec.name] = engine.run(spec)
                except NoSilverData as e:
                    missing[spec.name] = str(e)
        seconds = time.perf_counter() - t0
        log.info("live reports for %s computed in %.2f s (silver %s)", scope.name, seconds, versions_key(versions))
        return ScopeResults(scope, versions, versions_key(versions), runs, missing, int(time.time() * 1000), seconds)
