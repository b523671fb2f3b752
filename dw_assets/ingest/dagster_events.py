"""The service's micro-batches in Dagster, without a run: materializations of landing/landing_files,
bronze/<table>, silver/<table> (and silver_history/<table>) for the client's partition, plus the production
schema check when its result changes, reported with `DagsterInstance.report_runless_asset_event`.

Aggregated: counts are summed per (asset, client) and reported at most every `interval_s`, so a service applying
a batch per second per client never makes the event log (SQLite locally) its bottleneck; the writes run in a
worker process. The catalog,
partitions view and automation conditions see these like run materializations.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from dw_assets.settings import Settings

from .worker_process import worker_pool

log = logging.getLogger(__name__)

Key = tuple[str, ...]
LANDING_KEY: Key = ("landing", "landing_files")
SCHEMA_KEY: Key = ("sources", "production_schema")
SCHEMA_CHECK = "production_conforms_to_model"
# The share of one core the event writes may take: a flush that took d seconds waits at least d / SHARE before
# the next. At 10 clients x 20 assets the writes took ~30 % of a core at a 3-5 s interval, CPU the applies lacked.
CPU_SHARE = 0.1
# Below the apply workers (0) and above the report builds (10): under full load the writes wait for spare CPU
# (their counts keep summing meanwhile) instead of taking it from the micro-batches.
NICENESS = 5


class RunlessEvents:
    def __init__(self, settings: Settings, interval_s: float = 3.0, cpu_share: float = CPU_SHARE):
        self.settings = settings
        self.interval_s = interval_s
        self.cpu_share = cpu_share
        self.next_interval_s = interval_s  # stretched after a slow flush (see CPU_SHARE)
        self._lock = threading.Lock()
        self._counts: dict[tuple[Key, str], dict[str, float]] = {}
        self._last: dict[tuple[Key, str], dict[str, Any]] = {}
        self._checks: dict[str, tuple[bool, int, str]] = {}  # client -> (passed, breaking, markdown) to report
        self._check_state: dict[str, bool] = {}
        self._next = time.monotonic() + interval_s
        self.reported = 0
        # The writes (SQLAlchemy on the instance's storage: ~10-15 ms of Python per event here) run in a worker
        # process of their own: in the service's interpreter they held its lock for seconds per flush, stalling
        # the landing writers and the apply threads.
        self._pool = worker_pool(niceness=NICENESS)

    def add(self, key: Key, client: str, counts: dict[str, float], last: dict[str, Any] | None = None) -> None:
        with self._lock:
            acc = self._counts.setdefault((key, client), {})
            for k, v in counts.items():
                acc[k] = acc.get(k, 0) + v
            acc["batches"] = acc.get("batches", 0) + 1
            if last:
                self._last.setdefault((key, client), {}).update(last)

    def check(self, client: str, passed: bool, breaking: int, markdown: str) -> None:
        """The conformance gate's result; reported when it changes (and once per client at start)."""
        with self._lock:
            if self._check_state.get(client) != passed:
                self._check_state[client] = passed
                self._checks[client] = (passed, breaking, markdown)

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def flush(self) -> int:
        """Report what accumulated; returns the number of events. Never raises: Dagster being unavailable must not
        stop ingestion (the counts are dropped with a warning, the data itself is in the lake)."""
        started = time.monotonic()
        self._next = started + self.interval_s  # not due again while this flush runs; set for real in `finally`
        with self._lock:
            counts, self._counts = self._counts, {}
            last, self._last = self._last, {}
            checks, self._checks = self._checks, {}
        if not counts and not checks:
            return 0
        materializations = []
        for (key, client), acc in counts.items():
            md: dict[str, Any] = {k: (int(v) if float(v).is_integer() else round(v, 3)) for k, v in acc.items()}
            md.update(last.get((key, client), {}))
            md["source"] = "dw ingest run"
            materializations.append((key, client, md))
        check_list = [(c, *v) for c, v in checks.items()]
        try:
            n = self._pool.submit(_report, self.settings, materializations, check_list).result()
        except Exception as e:  # noqa: BLE001 - see docstring
            log.warning("could not report %d event(s) to Dagster: %s", len(counts) + len(checks), e)
            return 0
        finally:
            took = time.monotonic() - started
            self.next_interval_s = max(self.interval_s, took / self.cpu_share)
            self._next = started + self.next_interval_s
        self.reported += n
        return n


_instance: Any = None  # the worker process's instance, opened once (each open re-runs Alembic's schema check)


def _report(settings: Settings, materializations: list[tuple[Key, str, dict[str, Any]]],
            checks: list[tuple[str, bool, int, str]]) -> int:
    """In the worker process: write the events. The first open goes through the Dagster home's lock (two
    processes creating a fresh instance's storage at once break it)."""
    global _instance
    import dagster as dg

    if _instance is None:
        from dw_assets.onboarding.dagster_partitions import dagster_instance

        with dagster_instance(settings):
            pass
        _instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    for key, client, md in materializations:
        _instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=dg.AssetKey(list(key)), partition=client, metadata=md))
    for client, passed, breaking, markdown in checks:
        _instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(list(SCHEMA_KEY)), check_name=SCHEMA_CHECK, partition=client, passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"breaking": breaking, "differences": dg.MetadataValue.md(markdown)}))
    return len(materializations) + len(checks)


def apply_counts(result: Any) -> dict[Key, dict[str, float]]:
    """Per asset, the counts of one ApplyResult worth summing (only tables it changed)."""
    out: dict[Key, dict[str, float]] = {}
    for name, r in result.tables.items():
        if not r.ok or not (r.bronze_rows or r.events or r.truncated_rows or r.added_columns):
            continue
        out[("bronze", name)] = {"rows_appended": r.bronze_rows, "duplicates_dropped": r.bronze_duplicates}
        out[("silver", name)] = {"events_applied": r.events, "rows_inserted": r.silver.inserted,
                                 "rows_updated": r.silver.updated, "rows_deleted": r.silver.deleted,
                                 "changes_ignored": r.silver.ignored, "rows_truncated": r.truncated_rows}
        if r.history is not None:
            out[("silver_history", name)] = {"versions_inserted": r.history.inserted,
                                             "versions_updated": r.history.updated}
    return out
