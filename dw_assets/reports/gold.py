"""Gold tables: each report computed for one client or for the portfolio and written to the lake as Delta.

Layout: `<lake>/gold/<client>/<report>` (one table per client and report, with a `client` column) and
`<lake>/gold/_portfolio/<report>` (all clients together). One table per client, rather than one table
partitioned by client, because Dagster materialises clients in parallel: separate tables never contend for the
same Delta log, a client is offboarded by deleting its directory, and it mirrors `<lake>/silver/<client>/...`.
Each commit records the report's freshness in its commit metadata (`dw.*` keys), read back by `read_gold`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import pyarrow as pa
from deltalake import CommitProperties, write_deltalake

from dw_assets.lakehouse.paths import join, open_table, storage_options
from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .catalog import ReportSpec, load_reports, report
from .engine import PORTFOLIO_SCOPE, NoSilverData, ReportRun, Scope, open_report_engine
from .silver_source import DEFAULT_SOURCE_TS_COLUMN

log = logging.getLogger(__name__)

_META_NEWEST = "dw.newest_source_ts_ms"
_META_BUILT = "dw.built_at_ms"
_META_CLIENTS = "dw.clients"
_META_SECONDS = "dw.seconds"


@dataclass(frozen=True)
class GoldResult:
    """A gold table as written (or read back): the data, where it lives and how fresh it is."""

    spec: ReportSpec
    scope: str  # client name or PORTFOLIO_SCOPE
    table: pa.Table
    url: str
    version: int | None
    newest_source_ts_ms: int | None
    built_at_ms: int
    clients: tuple[str, ...]
    seconds: float = 0.0  # time to compute the report (not to write it)

    @property
    def lag_seconds(self) -> float | None:
        if self.newest_source_ts_ms is None:
            return None
        return max(0.0, (self.built_at_ms - self.newest_source_ts_ms) / 1000)

    @property
    def name(self) -> str:
        return self.spec.name


def gold_url(settings: Settings, scope: str, report_name: str) -> str:
    return join(settings.lake_url, "gold", scope, report_name)


def _with_client_column(table: pa.Table, client: str) -> pa.Table:
    # Per-client gold always names its client, so per-client tables can be stacked without losing the key.
    if "client" in table.column_names:
        return table
    return table.add_column(0, pa.field("client", pa.string(), nullable=False),
                            pa.array([client] * table.num_rows, pa.string()))


def write_gold(settings: Settings, run: ReportRun) -> GoldResult:
    """Replace the scope's gold table with this run's result (schema included: reports evolve)."""
    table = run.table if run.scope.is_portfolio else _with_client_column(run.table, run.scope.name)
    url = gold_url(settings, run.scope.name, run.spec.name)
    meta = {_META_BUILT: str(run.built_at_ms), _META_CLIENTS: ",".join(run.clients),
            _META_SECONDS: f"{run.seconds:.3f}"}
    if run.newest_source_ts_ms is not None:
        meta[_META_NEWEST] = str(run.newest_source_ts_ms)
    write_deltalake(url, table, mode="overwrite", schema_mode="overwrite",
                    storage_options=storage_options(settings, url),
                    commit_properties=CommitProperties(custom_metadata=meta))
    dt = open_table(settings, url)
    return GoldResult(run.spec, run.scope.name, table, url, dt.version() if dt else None, run.newest_source_ts_ms,
                      run.built_at_ms, run.clients, run.seconds)


def read_gold(settings: Settings, scope: str, report_name: str, model: StandardModel | None = None) -> GoldResult:
    """A gold table with the freshness its last commit recorded. Raises FileNotFoundError if never built."""
    spec = report(report_name, model)
    url = gold_url(settings, scope, report_name)
    dt = open_table(settings, url)
    if dt is None:
        raise FileNotFoundError(f"no gold table at {url}: build the {report_name} report for {scope} first")
    commit = dt.history(1)[0]
    newest = commit.get(_META_NEWEST)
    clients = str(commit.get(_META_CLIENTS) or "")
    return GoldResult(spec, scope, dt.to_pyarrow_table(), url, dt.version(),
                      int(newest) if newest not in (None, "") else None,
                      int(commit.get(_META_BUILT) or commit.get("timestamp") or time.time() * 1000),
                      tuple(c for c in clients.split(",") if c), float(commit.get(_META_SECONDS) or 0))


def select_reports(names: Iterable[str] | None, model: StandardModel | None = None) -> tuple[ReportSpec, ...]:
    specs = load_reports(model)
    if names is None:
        return specs
    wanted = list(names)
    unknown = set(wanted) - {s.name for s in specs}
    if unknown:
        raise KeyError(f"unknown report(s) {sorted(unknown)}; have {', '.join(s.name for s in specs)}")
    return tuple(s for s in specs if s.name in wanted)


def build_gold(settings: Settings, scope: Scope, reports: Iterable[str] | None = None,
               model: StandardModel | None = None, source_ts_column: str = DEFAULT_SOURCE_TS_COLUMN,
               threads: int | None = None, engine: str | None = None) -> list[GoldResult]:
    """Compute and write the gold tables of `reports` (default: all) for one scope, sharing one engine
    (`engine`: local or spark, default `settings.engine`); the gold writer is the same for both."""
    model = model or settings.standard_model()
    results = []
    with open_report_engine(settings, scope, model, source_ts_column, threads, engine) as runner:
        for spec in select_reports(reports, model):
            results.append(write_gold(settings, runner.run(spec)))
    return results


def build_client_gold(settings: Settings, client: str, reports: Iterable[str] | None = None,
                      model: StandardModel | None = None,
                      source_ts_column: str = DEFAULT_SOURCE_TS_COLUMN) -> list[GoldResult]:
    return build_gold(settings, Scope.client(client), reports, model, source_ts_column)


def build_portfolio_gold(settings: Settings, clients: Sequence[str], reports: Iterable[str] | None = None,
                         model: StandardModel | None = None, source_ts_column: str = DEFAULT_SOURCE_TS_COLUMN,
                         threads: int | None = None, engine: str | None = None) -> list[GoldResult]:
    """The reports across `clients` (clients without silver data for a report simply contribute nothing)."""
    return build_gold(settings, Scope.portfolio(clients), reports, model, source_ts_column, threads, engine)


__all__ = ["PORTFOLIO_SCOPE", "GoldResult", "NoSilverData", "build_client_gold", "build_gold", "build_portfolio_gold",
           "gold_url", "read_gold", "select_reports", "write_gold"]
