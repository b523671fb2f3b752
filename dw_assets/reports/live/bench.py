"""Benchmark of the live report server: page time for one client over a synthetic silver lake, cold (silver
changed since the last view: every report query runs, charts are drawn) and warm (unchanged silver: cached),
beside the bare DuckDB queries of the same reports over the same silver files, measured in the same run.

    python -m dw_assets.reports.live.bench [--order-rows 1000000] [--runs 10] [--home DIR]

The server runs in-process under uvicorn on a free port and is timed over HTTP like a browser's page load. A
cold run first appends one row to silver `orders` (a new Delta version, as a landed change would make).
"""
from __future__ import annotations

import argparse
import html
import json
import re
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb

from dw_assets.lakehouse.paths import open_table, storage_options, table_url
from dw_assets.model import load_model
from dw_assets.settings import Settings, load_settings

from ..catalog import load_reports
from ..silver_source import arrow_source, direct_parquet_files
from ..synthetic_lake import fact_table, write_synthetic_lake

CLIENT = "bench_live"


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _summary(values: list[float]) -> dict[str, Any]:
    return {"p50_s": round(statistics.median(values), 4), "p95_s": round(_pct(values, 0.95), 4),
            "min_s": round(min(values), 4), "max_s": round(max(values), 4), "n": len(values)}


def bare_duckdb_seconds(settings: Settings, specs: list, tables: list[str]) -> float:
    """Every report's SQL once, in plain DuckDB over views of the silver snapshot's Parquet files."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # it would print into the JSON on stdout
    t0 = time.perf_counter()
    for t in tables:
        dt = open_table(settings, table_url(settings, "silver", CLIENT, t))
        files = direct_parquet_files(dt)
        if files:  # the same two ways in as the report engine (silver_source), fastest first
            quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            source = f"read_parquet([{quoted}], union_by_name = true)"
        else:
            con.register(f"raw_{t}", arrow_source(dt))
            source = f'"raw_{t}"'
        con.execute(f'CREATE VIEW "{t}" AS SELECT \'{CLIENT}\' AS client, * FROM {source}')
    for spec in specs:
        con.sql(spec.sql).to_arrow_table()
    seconds = time.perf_counter() - t0
    con.close()
    return seconds


def append_one_change(settings: Settings, table: str) -> None:
    from deltalake import write_deltalake

    url = table_url(settings, "silver", CLIENT, table)
    row = open_table(settings, url).to_pyarrow_dataset().head(1)
    write_deltalake(url, row, mode="append", storage_options=storage_options(settings, url))


def run_live_bench(settings: Settings, order_rows: int = 1_000_000, runs: int = 10) -> dict[str, Any]:
    import httpx
    import uvicorn

    from dw_assets.stack import find_free_port

    from .app import build_app
    from .auth import TokenStore

    model = load_model()
    specs = list(load_reports(model))
    tables = [t for t in model.table_names if any(t in s.silver_tables for s in specs)]
    root = Path(settings.home) / "bench" / "live_reports" / f"rows_{order_rows}"
    bench = replace(settings, home=root, lake_url=str(root / "lake"), reports_dir=str(root / "html"))
    lake = write_synthetic_lake(bench, [CLIENT], order_rows, tables, model)
    token, _ = TokenStore(bench.home).add(client=CLIENT, note="bench")
    app = build_app(bench, clients=lambda: [CLIENT], model=model)
    port = find_free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    cold, warm, bare = [], [], []
    fact = fact_table(model).name
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            def load() -> float:
                t0 = time.perf_counter()
                r = http.get(f"/clients/{CLIENT}")
                r.raise_for_status()
                for src in re.findall(r'<img alt="[^"]*" src="([^"]+)"', r.text):  # the charts, as a browser would
                    http.get(html.unescape(src)).raise_for_status()
                return time.perf_counter() - t0

            load()  # warm-up: imports, first chart, token check
            for _ in range(runs):
                append_one_change(bench, fact)
                bare.append(bare_duckdb_seconds(bench, specs, tables))
                cold.append(load())
                warm.extend(load() for _ in range(3))
    finally:
        server.should_exit = True
        thread.join(10)
    return {"stage": "live_reports", "client": CLIENT, "order_rows": lake.rows.get(fact, order_rows),
            "rows_by_table": lake.rows, "reports": [s.name for s in specs],
            "page_cold": _summary(cold), "page_warm": _summary(warm), "bare_duckdb_queries": _summary(bare),
            "queries_run": app.state.live.cache.queries}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--order-rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--home", default=None, help="state directory (the bench lake goes under it)")
    args = ap.parse_args(argv)
    print(json.dumps(run_live_bench(load_settings(env={}, home=args.home), args.order_rows, args.runs), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
