"""Benchmark of the portfolio reports: every report across all clients over a synthetic silver lake.

`run_portfolio_bench` builds (or reuses) a lake of `order_rows` fact rows split over `clients` clients under
`<home>/bench/reports/`, then times `build_portfolio_gold` (all reports: DuckDB queries plus the gold Delta
writes), reporting seconds, fact rows per second and the time per report. `EnginesBench` runs the same portfolio
build on the Spark engine (a Sail server of its own) beside the local one.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from dw_assets.bench.harness import peak_rss_mb
from dw_assets.model import load_model
from dw_assets.settings import Settings

from .catalog import load_reports
from .gold import build_portfolio_gold
from .synthetic_lake import fact_table, write_synthetic_lake

QUICK_ORDER_ROWS = 200_000
FULL_ORDER_ROWS = 10_000_000


def bench_settings(settings: Settings, order_rows: int) -> Settings:
    """A lake of its own per size, under the state directory: never the real lake, reused across runs."""
    root = Path(settings.home) / "bench" / "reports" / f"rows_{order_rows}"
    return replace(settings, lake_url=str(root / "lake"), reports_dir=str(root / "html"))


def run_portfolio_bench(settings: Settings, order_rows: int = FULL_ORDER_ROWS, clients: int = 10,
                        repeats: int = 1, quick: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Time the portfolio reports over `order_rows` synthetic fact rows (`quick`: QUICK_ORDER_ROWS)."""
    if quick:
        order_rows = QUICK_ORDER_ROWS
    model = load_model()
    specs = load_reports(model)
    tables = sorted({t for s in specs for t in s.silver_tables})
    bench = bench_settings(settings, order_rows)
    names = [f"bench_{i:03d}" for i in range(1, clients + 1)]
    lake = write_synthetic_lake(bench, names, order_rows, tables, model)
    runs: list[float] = []
    per_report: dict[str, list[float]] = {s.name: [] for s in specs}
    out_rows: dict[str, int] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = build_portfolio_gold(bench, names, model=model, threads=threads)
        runs.append(time.perf_counter() - t0)
        for r in results:
            per_report[r.name].append(r.seconds)
            out_rows[r.name] = r.table.num_rows
    fact = fact_table(model).name
    seconds = statistics.median(runs)
    return {
        "stage": "reports", "name": "portfolio reports", "order_rows": lake.rows.get(fact, order_rows),
        "clients": clients, "reports": [s.name for s in specs], "rows_by_table": lake.rows,
        "input_rows": sum(lake.rows.values()), "generate_seconds": round(lake.seconds, 2),
        "runs": [round(r, 3) for r in runs], "seconds": round(seconds, 3),
        "rows_per_second": round(lake.rows.get(fact, order_rows) / seconds),
        "input_rows_per_second": round(sum(lake.rows.values()) / seconds),
        "per_report_seconds": {k: round(statistics.median(v), 3) for k, v in per_report.items() if v},
        "output_rows": out_rows, "peak_rss_mb": round(peak_rss_mb() or 0, 1), "lake": bench.lake_url,
    }


class EnginesBench:
    """The portfolio reports on both engines over one synthetic silver: the local DuckDB engine in this process
    and Spark on a Sail server started for the bench (`dw bench spark-reports`). Use as a context manager; each
    `once()` builds the portfolio gold with each engine in turn, so both see the same machine load."""

    def __init__(self, settings: Settings, order_rows: int, clients: int):
        from dw_assets.stack.process import find_free_port
        from dw_assets.stack.sail import SailServer

        self.model = load_model()
        self.specs = load_reports(self.model)
        self.local = bench_settings(settings, order_rows)
        self.names = [f"bench_{i:03d}" for i in range(1, clients + 1)]
        tables = sorted({t for s in self.specs for t in s.silver_tables})
        self.lake = write_synthetic_lake(self.local, self.names, order_rows, tables, self.model)
        self.sail = SailServer(Path(settings.home) / "bench" / "sail", find_free_port())
        self.pid: int | None = None
        self.local_rss_mb: float | None = None  # this process's peak after the first local build (Spark not yet run)

    def __enter__(self) -> "EnginesBench":
        self.pid = self.sail.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sail.stop(self.pid)

    @property
    def order_rows(self) -> int:
        return self.lake.rows.get(fact_table(self.model).name, 0)

    def sail_rss_mb(self) -> float | None:
        return peak_rss_mb(self.pid)

    def once(self, reports: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for engine, settings in (("local", self.local),
                                 ("spark", replace(self.local, engine="spark", spark_remote=self.sail.remote))):
            t0 = time.perf_counter()
            results = build_portfolio_gold(settings, self.names, reports, model=self.model)
            out[f"{engine}_s"] = time.perf_counter() - t0
            out[f"{engine}_rows"] = {r.name: r.table.num_rows for r in results}
            out[f"{engine}_per_report_s"] = {r.name: round(r.seconds, 3) for r in results}
            if engine == "local" and self.local_rss_mb is None:
                self.local_rss_mb = peak_rss_mb()
        if out["spark_rows"] != out["local_rows"]:  # a faster wrong answer is not a figure
            raise RuntimeError(f"the engines disagree on report row counts: {out['spark_rows']} vs {out['local_rows']}")
        return out
