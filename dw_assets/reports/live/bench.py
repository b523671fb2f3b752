"""What the `dw bench live` stage measures: page time of the live report server for one client over a synthetic
silver lake, cold (silver changed since the last view: every report query runs, charts are drawn) and warm
(unchanged silver: cached), beside the bare DuckDB queries of the same reports over the same silver files, in the
same round.

The server runs in-process under uvicorn on a free port and is timed over HTTP like a browser's page load (the
page, then its chart images). A cold load first appends one row to silver's fact table (a new Delta version, as
a landed change would make); the bare queries run right after that append, over the same snapshot.
"""
from __future__ import annotations

import html
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb

from dw_assets.lakehouse.paths import open_table, storage_options, table_url
from dw_assets.model import StandardModel, load_model
from dw_assets.settings import Settings

from ..catalog import ReportSpec, load_reports
from ..silver_source import arrow_source, direct_parquet_files
from ..synthetic_lake import fact_table, write_synthetic_lake

CLIENT = "bench_live"


def bare_duckdb_seconds(settings: Settings, specs: list[ReportSpec], tables: list[str]) -> float:
    """Every report's SQL once, in plain DuckDB over views of the silver snapshot's files (the same two ways in
    as the report engine, fastest first), the client column added as the engine adds it."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    t0 = time.perf_counter()
    for t in tables:
        dt = open_table(settings, table_url(settings, "silver", CLIENT, t))
        files = direct_parquet_files(dt)
        # Relations, not SQL text: file paths and the client name stay values; the view takes the model's
        # (validated) table name as a name, not as SQL.
        rel = con.read_parquet(list(files), union_by_name=True) if files else con.from_arrow(arrow_source(dt))
        rel.project(duckdb.ConstantExpression(CLIENT).alias("client"), duckdb.StarExpression()) \
            .create_view(t, replace=True)
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


@dataclass
class LiveBench:
    """A synthetic client of `order_rows` fact rows, the live server over it and a signed-in HTTP client."""

    settings: Settings
    order_rows: int
    model: StandardModel = field(default_factory=load_model)
    lake_rows: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.specs = list(load_reports(self.model))
        self.tables = [t for t in self.model.table_names if any(t in s.silver_tables for s in self.specs)]
        self.fact = fact_table(self.model).name
        root = Path(self.settings.home) / "bench" / "live_reports" / f"rows_{self.order_rows}"
        self.bench = replace(self.settings, home=root, lake_url=str(root / "lake"), reports_dir=str(root / "html"))

    def __enter__(self) -> "LiveBench":
        import httpx
        import uvicorn

        from dw_assets.stack import find_free_port

        from .app import build_app
        from .auth import TokenStore

        t0 = time.perf_counter()
        self.lake_rows = write_synthetic_lake(self.bench, [CLIENT], self.order_rows, self.tables, self.model).rows
        self.generate_s = time.perf_counter() - t0
        token, _ = TokenStore(self.bench.home).add(client=CLIENT, note="bench")
        self.app = build_app(self.bench, clients=lambda: [CLIENT], model=self.model)
        port = find_free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, access_log=False,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="live-bench-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live report server did not start")
            time.sleep(0.05)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                                 headers={"Authorization": f"Bearer {token}"})
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def queries(self) -> int:
        return self.app.state.live.cache.queries

    def load(self) -> float:
        """Seconds for the page and its chart images, fetched one after another as a browser would."""
        t0 = time.perf_counter()
        r = self.http.get(f"/clients/{CLIENT}")
        r.raise_for_status()
        for src in re.findall(r'<img alt="[^"]*" src="([^"]+)"', r.text):
            self.http.get(html.unescape(src)).raise_for_status()
        return time.perf_counter() - t0

    def round(self, cold_loads: int, warm_per_cold: int = 3) -> dict[str, Any]:
        """`cold_loads` times: a change to silver, the bare queries over that snapshot, a cold page load, then
        `warm_per_cold` warm loads. A cold load that ran no query, or a warm one that ran any, is an error: the
        figure would not measure what it says."""
        cold, warm, bare = [], [], []
        for _ in range(cold_loads):
            append_one_change(self.bench, self.fact)
            bare.append(bare_duckdb_seconds(self.bench, self.specs, self.tables))
            before = self.queries
            cold.append(self.load())
            if self.queries != before + len(self.specs):
                raise RuntimeError(f"a cold load ran {self.queries - before} report queries, not {len(self.specs)}")
            for _ in range(warm_per_cold):
                warm.append(self.load())
            if self.queries != before + len(self.specs):
                raise RuntimeError("a warm load (unchanged silver) ran report queries")
        return {"cold_s": cold, "warm_s": warm, "bare_s": bare}
