"""Reports follow silver without a run: after a micro-batch changed a client's silver, the service rebuilds that
client's gold tables and report pages (the reports stage's public `build_client_reports`) within
`reports_debounce_seconds`, and the portfolio at most once a minute. One build at a time, in a worker process of
its own: report queries then never take both cores from the apply, nor its interpreter lock (in-process, a build
slowed every micro-batch of the service); a client changing every second is rebuilt at most once per window.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .worker_process import worker_pool

log = logging.getLogger(__name__)

PORTFOLIO_INTERVAL_S = 60.0
REPORT_NICENESS = 10


@dataclass(frozen=True)
class BuiltReport:
    """What a build in the worker process hands back (not the gold tables themselves)."""

    name: str
    rows: int


def _build_in_worker(settings: Settings, model: StandardModel, scope: str, clients: list[str]
                     ) -> tuple[list[BuiltReport], list[str]]:
    from dw_assets.reports.build import build_client_reports, build_portfolio_reports

    if scope == "portfolio":
        results, pages = build_portfolio_reports(settings, clients, model=model)
    else:
        results, pages = build_client_reports(settings, scope, model=model)
    return [BuiltReport(r.name, r.table.num_rows) for r in results], [str(p) for p in pages]

# (scope "client name" or "portfolio", results, pages, started, ended) after each build
OnBuilt = Callable[[str, list, list, float, float], None]


def model_has_reports(model: StandardModel) -> bool:
    try:
        from dw_assets.reports.catalog import load_reports

        return bool(load_reports(model))
    except Exception as e:  # noqa: BLE001 - no reports stage or none defined for this model: nothing to refresh
        log.info("reports not refreshed by the ingest service: %s", e)
        return False


class ReportRefresher:
    def __init__(self, settings: Settings, model: StandardModel, debounce_s: float,
                 on_built: OnBuilt | None = None, portfolio_interval_s: float = PORTFOLIO_INTERVAL_S):
        self.settings = settings
        self.model = model
        self.debounce_s = max(0.0, debounce_s)
        self.on_built = on_built
        self.portfolio_interval_s = portfolio_interval_s
        self._dirty: dict[str, float] = {}  # client -> first change not yet in its reports (monotonic)
        self._last_build: dict[str, float] = {}
        self._portfolio_dirty = False
        self._last_portfolio = 0.0
        self._clients: set[str] = set()
        self._cv = threading.Condition()
        self._stop = False
        self.errors: dict[str, str] = {}
        self.built = 0
        # Niced: on two busy cores silver freshness comes first, reports take the CPU the apply leaves.
        self._pool = worker_pool(niceness=REPORT_NICENESS)
        self._thread = threading.Thread(target=self._loop, name="ingest-reports", daemon=True)
        self._thread.start()

    def touch(self, client: str) -> None:
        with self._cv:
            self._dirty.setdefault(client, time.monotonic())
            self._clients.add(client)
            self._portfolio_dirty = True
            self._cv.notify()

    def close(self, timeout: float = 30.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _next(self) -> tuple[str | None, float]:
        """(client due now, or None; seconds until the next one is due). A client is built once the debounce
        window since its previous build has passed, so a change waits at most about `debounce_s`."""
        now = time.monotonic()
        best, wait = None, 1.0
        for client, since in sorted(self._dirty.items(), key=lambda kv: kv[1]):
            due = max(since, self._last_build.get(client, 0.0) + self.debounce_s)
            if due <= now:
                return client, 0.0
            wait = min(wait, due - now)
        return best, wait

    def _loop(self) -> None:
        while True:
            with self._cv:
                client, wait = self._next()
                while client is None and not self._stop:
                    if self._portfolio_dirty and time.monotonic() - self._last_portfolio >= self.portfolio_interval_s:
                        break
                    self._cv.wait(wait)
                    client, wait = self._next()
                if self._stop:
                    return
                if client is not None:
                    del self._dirty[client]
                    self._last_build[client] = time.monotonic()
                else:
                    self._portfolio_dirty = False
                    self._last_portfolio = time.monotonic()
                clients = sorted(self._clients)
            self._build(client or "portfolio", clients)

    def _build(self, scope: str, clients: list[str]) -> None:
        started = time.time()
        try:
            results, pages = self._pool.submit(_build_in_worker, self.settings, self.model, scope, clients).result()
        except Exception as e:  # noqa: BLE001 - a report failing never stops ingestion; retried on the next change
            log.warning("reports of %s not rebuilt: %s: %s", scope, type(e).__name__, e)
            self.errors[scope] = f"{type(e).__name__}: {e}"
            return
        self.errors.pop(scope, None)
        self.built += 1
        if self.on_built is not None:
            self.on_built(scope, list(results), list(pages), started, time.time())
