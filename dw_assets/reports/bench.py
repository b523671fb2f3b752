"""Benchmark of the portfolio reports: every report across all clients over a synthetic silver lake.

`run_portfolio_bench` builds (or reuses) a lake of `order_rows` fact rows split over `clients` clients under
`<home>/bench/reports/`, then times `build_portfolio_gold` (all reports: DuckDB queries plus the gold Delta
writes), reporting seconds, fact rows per second and the time per report.
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
