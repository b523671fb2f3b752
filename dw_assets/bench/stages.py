"""Stage benchmarks as figures: each stage's own bench function run after a warm-up, then REPEATS times, with the
reference it measures in the same call kept beside the figure.

The stage modules own what is measured (`dw_assets/<stage>/bench.py`); this module owns the discipline (warm-up,
repetitions, sizes, the sentence on what bounds each figure) and turns their dicts into `Figure`s.
"""
from __future__ import annotations

import importlib
import statistics
import time
from typing import Any, Callable

from dw_assets.settings import Settings

from .harness import Figure, StageResult, peak_rss_mb
from .smoke import shrink, smoke

REPEATS = 3
WARMUP = 1

# Full size, quick size (a tenth, or what fits the quick budget: said in the stage's notes).
SIZES: dict[str, dict[str, tuple[Any, Any]]] = {
    "cdc": {"rows": (200_000, 20_000)},
    "landing": {"events": (500_000, 50_000), "clients": (10, 10), "parallel": (3, 3)},
    "apply": {"rows": (1_000_000, 100_000), "changes": (100_000, 10_000),
              # Files per table: simulated minutes of 2,000 changes/s (quick: too short for a compaction).
              "files_minutes": (60, 6),
              # One client micro-batch (~200 changes over 8 tables): batches timed, rows per table of the large run.
              "micro_batches": (7, 3), "micro_large_rows": (200_000, 50_000)},
    "reports": {"order_rows": (10_000_000, 1_000_000), "clients": (10, 10)},
    # Quick: a twentieth, so Sail's pass fits the quick budget on a busy machine (1M took 260-350 s at load 11-25).
    "spark-reports": {"order_rows": (10_000_000, 500_000), "clients": (10, 10)},
    # One client's live page; per round `cold_loads` changes to silver, each followed by 3 warm loads.
    "live": {"order_rows": (1_000_000, 100_000), "cold_loads": (5, 3)},
    # Quick: a batch of 2, not 5: one onboarding pass costs ~12 s of fixed steps whatever its size.
    "onboard": {"rows": (10_000, 1_000), "batch": (50, 2)},
    # Full 200k (500k took 819 s: every repetition reads all rows twice, ~8k rows/s); quick 20k: the CI suite
    # runs `bench all --quick`.
    "reconcile": {"rows": (200_000, 20_000)},
}


def size(stage: str, quick: bool) -> dict[str, Any]:
    chosen = {k: v[1 if quick else 0] for k, v in SIZES[stage].items()}
    return {k: shrink(v) for k, v in chosen.items()} if quick and smoke() else chosen


def _measure(fn: Callable[[], dict[str, Any]], repeats: int = REPEATS, warmup: int = WARMUP,
             warm_fn: Callable[[], dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Warm-up runs (kept aside for the record; `warm_fn` if the warm-up can be smaller), then the measured runs."""
    warm = [(warm_fn or fn)() for _ in range(warmup)]
    return [fn() for _ in range(repeats)], (warm[0] if warm else {})


def _med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


# ---- the command line ------------------------------------------------------------------------------------------

# What a user types most; each answers from the stage's running stack (`--home`).
CLI_COMMANDS = (("dw --help", ["--help"]), ("dw clients list", ["clients", "list"]),
                ("dw stack status", ["stack", "status"]))


def bench_cli(settings: Settings, quick: bool) -> StageResult:
    """Wall time of a `dw` command in a fresh process beside `python -c pass` (the interpreter's own start), the
    runs interleaved so both see the same load."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "dw"
    dw = [str(script)] if script.exists() else [sys.executable, "-m", "dw_assets.cli"]
    env = {**os.environ, "COLUMNS": "120"}

    def timed(cmd: list[str]) -> float:
        t = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
        seconds = time.perf_counter() - t
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[-2:])} exited {done.returncode}: {done.stderr.decode()[-300:]}")
        return seconds

    runs: dict[str, list[float]] = {name: [] for name, _ in CLI_COMMANDS}
    ref: list[float] = []
    for i in range(WARMUP + (5 if quick else 9)):
        pass_s = timed([sys.executable, "-c", "pass"])
        cmd_s = {name: timed([*dw, "--home", str(settings.home), *args]) for name, args in CLI_COMMANDS}
        if i >= WARMUP:
            ref.append(pass_s)
            for name, s in cmd_s.items():
                runs[name].append(s)
    figs = [Figure("cli", name, "s", runs[name], "python -c pass", ref, higher_is_better=False, kind="time",
                   bound="interpreter start plus the imports of the one command run (the lazy COMMANDS table), "
                         "then its own work: a registry query, the stack's PID and round-trip checks")
            for name, _ in CLI_COMMANDS]
    return StageResult("cli", figs, params={"runs": len(ref)})


# ---- CDC -------------------------------------------------------------------------------------------------------

def bench_cdc(settings: Settings, quick: bool) -> StageResult:
    from dw_assets.cdc.bench import run_cdc_bench

    p = size("cdc", quick)
    runs, _ = _measure(lambda: run_cdc_bench(settings, rows=p["rows"]))
    capture = [r["end_to_end"]["rows_per_s"] for r in runs]
    decode_only = [r["decode_only"]["rows_per_s"] for r in runs]
    extra = {"rows": p["rows"], "decode_only_rows_per_s": decode_only, "decode_only_median": _med(decode_only),
             "per_run_ratio_vs_mysql_replication": [r["end_to_end_vs_mysql_replication"] for r in runs],
             "per_run_ratio_vs_mariadb_binlog": [r["end_to_end_vs_mariadb_binlog"] for r in runs],
             "peak_rss_mb": round(peak_rss_mb() or 0, 1)}
    name = f"capture: binlog → acked Kafka, {p['rows']:,} inserts"
    figures = [
        Figure("cdc", name, "rows/s", capture, "mariadb-binlog -v decode (C)",
               [r["mariadb_binlog"]["rows_per_s"] for r in runs if r["mariadb_binlog"].get("rows_per_s")],
               bound="One Python thread decodes every row (compiled per-table decoder + orjson envelope) and hands "
                     "it to librdkafka; mariadb-binlog's C decoder reading the same binlog range is the physical "
                     "limit, decode alone without Kafka is in `extra`.",
               extra=extra),
        Figure("cdc", name, "rows/s", capture, "mysql-replication bare decode loop",
               [r["mysql_replication"]["rows_per_s"] for r in runs],
               bound="The pure-Python library decodes column by column per row; capture reads raw events and "
                     "decodes with its own compiled decoder, hence the ratio above 1.",
               extra={"rows": p["rows"]}),
    ]
    return StageResult("cdc", figures, params=p, notes=[
        f"capture = CaptureService(once=True) from the load's first event to the acknowledgement of the last "
        f"message; references read the same binlog range in the same repetition; decode-only (ours, no Kafka) "
        f"median {_med(decode_only):,.0f} rows/s."])


# ---- landing ---------------------------------------------------------------------------------------------------

def bench_landing(settings: Settings, quick: bool) -> StageResult:
    from dw_assets.landing.bench import run_landing_bench

    p = size("landing", quick)
    runs, _ = _measure(lambda: run_landing_bench(settings, events=p["events"], clients=p["clients"],
                                                 sensor_clients=0, parallel=p["parallel"]))
    extra = {"events": runs[0]["events"], "clients": p["clients"], "parallel_clients": p["parallel"],
             "partitions": runs[0]["partitions"],
             "landing_cpu_us_per_event": [r["landing_cpu_us_per_event"] for r in runs],
             "bare_cpu_us_per_event": [r["bare_cpu_us_per_event"] for r in runs],
             "files": runs[0]["files"], "mean_file_rows": runs[0]["mean_file_rows"],
             "per_run_ratio": [r["landing_vs_bare"] for r in runs], "peak_rss_mb": round(peak_rss_mb() or 0, 1)}
    fig = Figure(
        "landing", f"Kafka → landing Parquet, {runs[0]['events']:,} events, {p['clients']} clients", "events/s",
        [r["landing_events_per_s"] for r in runs], "bare confluent-kafka consume loop",
        [r["bare_consume_events_per_s"] for r in runs],
        bound=f"Python work per event (envelope decode, Arrow building, Parquet encode: "
              f"~{_med(extra['landing_cpu_us_per_event'])} µs CPU/event vs "
              f"~{_med(extra['bare_cpu_us_per_event'])} for the bare loop) on {p['parallel']} client threads "
              f"sharing 2 cores and one GIL.",
        extra=extra)
    return StageResult("landing", [fig], params=p, notes=[
        "the sensor tick at 500 clients is measured by the scale stage (through the Dagster sensor)."])


# ---- apply -----------------------------------------------------------------------------------------------------

def bench_apply(settings: Settings, quick: bool) -> StageResult:
    from dw_assets.lakehouse.bench import run_apply_bench

    p = size("apply", quick)
    runs, _ = _measure(lambda: run_apply_bench(settings, rows=p["rows"], changes=p["changes"]))
    phases = {k: _med([r["apply_phases_s"].get(k) for r in runs]) for k in runs[0]["apply_phases_s"]}
    fig = Figure(
        "apply", f"landing → bronze → silver, {p['changes']:,} changes into {p['rows']:,} rows", "changes/s",
        [r["changes_per_s"] for r in runs], "bare deltalake MERGE of the de-duplicated batch",
        [r["reference_changes_per_s"] for r in runs],
        bound="The silver MERGE (deltalake, change data feed on) dominates; the rest is reading landing Parquet, "
              "the bronze append and the DuckDB de-duplication that the bare MERGE does not do.",
        extra={"phases_s_median": phases, "deduplicated_changes": runs[0]["deduplicated_changes"],
               "initial_load_rows_per_s": [r["initial_load_rows_per_s"] for r in runs],
               "per_run_ratio": [r["ratio_apply_to_reference"] for r in runs],
               "peak_rss_mb": round(peak_rss_mb() or 0, 1)})
    return StageResult("apply", [fig, *_micro_figures(settings, p), _files_figure(settings, p["files_minutes"])],
                       params=p)


def _micro_figures(settings: Settings, p: dict[str, Any]) -> list[Figure]:
    from dw_assets.lakehouse.microbatch_bench import run_microbatch_bench

    r = run_microbatch_bench(settings, batches=p["micro_batches"], large_rows=p["micro_large_rows"])
    small, large, ref = r["small"], r["large"], r["reference"]
    ref_s = r["reference_8_merges_1_append_s"]
    name = f"one client micro-batch, {r['changes']} changes over {r['tables']} tables"
    extra = {"commits_per_batch": small["commits"], "phases_s_median": small["phases_s"],
             "cpu_s_median": small["cpu_median_s"], "reference_merge_s": round(ref["merge_s"], 4),
             "reference_append_s": round(ref["append_s"], 4), "target_s": 0.5}
    figs = [Figure(
        "apply", f"{name} of {small['rows_per_table']:,} rows (apply_client, {_med(small['commits'])} Delta commits)",
        "s", small["seconds"], "bare deltalake: 8 MERGEs of 50 rows into 10,000 rows with CDF + 1 append",
        [ref_s], higher_is_better=False, kind="time",
        bound="Per table a DuckDB decode of the row images, the key-pruned read of silver and one MERGE commit "
              "(CDF on); per batch one bronze append and one manifest append; SCD2 tables add a history MERGE. "
              "On 2 cores the tables run 2 at a time.", extra=extra)]
    if large:
        figs.append(Figure(
            "apply", f"{name} of {large['rows_per_table']:,} rows ({_med(large['commits'])} Delta commits)", "s",
            large["seconds"], f"the same batch into {small['rows_per_table']:,}-row tables (same run)",
            small["seconds"], higher_is_better=False, kind="time",
            bound="What grows with the table is the MERGE's copy-on-write rewrite of the silver files the batch "
                  "touches; reads of silver, bronze and tombstones are pruned to the batch's keys and positions.",
            extra={"commits_per_batch": large["commits"], "phases_s_median": large["phases_s"],
                   "cpu_s_median": large["cpu_median_s"]}))
    return figs


def _files_figure(settings: Settings, minutes: float) -> Figure:
    from dw_assets.lakehouse.files_bench import run_files_bench

    # One run: file counts are deterministic for a given replay (no timing in them), so repetitions add nothing.
    r = run_files_bench(settings, minutes=minutes)
    live = r["final_live_files"]
    return Figure(
        "apply", f"live files per table after {minutes:g} min of {r['rate']:,} changes/s ({r['applies']} applies, "
                 f"light compaction every 15 min: {r['compactions']}), bronze", "files",
        [live["bronze"]], "bronze files written (what it would hold without compaction)", [r["bronze_files_written"]],
        higher_is_better=False, kind="count",
        bound="Each apply appends one bronze file and one per bookkeeping table; silver's MERGE rewrites the files "
              "it touches (uniform random updates touch all, so silver stays at 1-2 files); the 15-minute light "
              "pass compacts tables from 16 files, so a table peaks at about 16 + one pass's applies.",
        extra={**{k: v for k, v in r.items() if k not in ("rate",)}, "simulated": True})


# ---- reports ---------------------------------------------------------------------------------------------------

def scan_silver_inputs(settings: Settings, clients: list[str], tables: list[str]) -> float:
    """Seconds for DuckDB to read every numeric and temporal column of the reports' silver inputs once, through
    the same file list the report engine uses: the floor under any report over those tables."""
    import duckdb
    import pyarrow as pa

    from dw_assets.model import load_model
    from dw_assets.model.types import arrow_type
    from dw_assets.reports.silver_source import open_silver

    model = load_model()
    t0 = time.perf_counter()
    con = duckdb.connect()
    try:
        for name in tables:
            table = model.table(name)
            files = [f for c in clients for f in (open_silver(settings, c, table).parquet_files or ())]
            if not files:
                continue
            # Expressions, not SQL text: column names and file paths stay names and values.
            agg, col_ = duckdb.FunctionExpression, duckdb.ColumnExpression
            aggs = [agg("count_star")]
            for col in table.columns:
                t = arrow_type(col.type)
                if pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_floating(t):
                    aggs.append(agg("sum", col_(col.name)))
                elif pa.types.is_temporal(t):
                    aggs.append(agg("min", col_(col.name)))
            con.read_parquet(files, union_by_name=True).aggregate(aggs).fetchall()
    finally:
        con.close()
    return time.perf_counter() - t0


def bench_reports(settings: Settings, quick: bool) -> StageResult:
    from dw_assets.model import load_model
    from dw_assets.reports.bench import bench_settings, run_portfolio_bench
    from dw_assets.reports.catalog import load_reports

    p = size("reports", quick)
    specs = load_reports(load_model())
    tables = sorted({t for s in specs for t in s.silver_tables})
    lake_settings = bench_settings(settings, p["order_rows"])
    names = [f"bench_{i:03d}" for i in range(1, p["clients"] + 1)]  # as run_portfolio_bench names them

    def one() -> dict[str, Any]:
        r = run_portfolio_bench(settings, order_rows=p["order_rows"], clients=p["clients"], repeats=1)
        r["scan_s"] = scan_silver_inputs(lake_settings, names, tables)
        return r

    runs, warm = _measure(one)
    fig = Figure(
        "reports", f"portfolio reports ({len(specs)}), {runs[0]['order_rows']:,} order rows, {p['clients']} clients",
        "s", [r["seconds"] for r in runs], "DuckDB scan of the same silver inputs", [r["scan_s"] for r in runs],
        higher_is_better=False, kind="time",
        bound="DuckDB aggregations over the silver Parquet files (joins of orders, items, payments) plus the gold "
              "Delta writes; the reference reads every numeric/temporal input column once and computes nothing "
              "else.",
        extra={"input_rows": runs[0]["input_rows"], "order_rows_per_s": [r["rows_per_second"] for r in runs],
               "per_report_seconds": runs[-1]["per_report_seconds"], "generate_lake_s": warm.get("generate_seconds"),
               "peak_rss_mb": round(peak_rss_mb() or 0, 1)})
    notes = []
    if quick:
        notes.append(f"quick: {p['order_rows']:,} order rows (a tenth of the full 10M).")
    return StageResult("reports", [fig], params=p, notes=notes)


def bench_spark_reports(settings: Settings, quick: bool) -> StageResult:
    """The portfolio reports on Spark (Sail) beside the local engine, same silver, interleaved in the same run."""
    from dw_assets.reports.bench import EnginesBench

    p = size("spark-reports", quick)
    with EnginesBench(settings, p["order_rows"], p["clients"]) as bench:
        # Warm-up: the smallest report on each engine (sessions, Sail's planner, the file cache), not all five.
        warm_report = [min(bench.specs, key=lambda s: len(s.silver_tables)).name]
        runs, warm = _measure(bench.once, warm_fn=lambda: bench.once(warm_report))
        sail_rss = bench.sail_rss_mb()
    fig = Figure(
        "spark-reports", f"portfolio reports ({len(bench.specs)}) on Spark (Sail), {bench.order_rows:,} order rows, "
        f"{p['clients']} clients", "s", [r["spark_s"] for r in runs],
        "local engine (DuckDB), same reports and silver, same run", [r["local_s"] for r in runs],
        higher_is_better=False, kind="time",
        bound="Spark: Sail scans the silver Delta tables by path and runs the same SQL; the result comes back as "
              "Arrow over gRPC and is written by the shared gold writer. Local: DuckDB over the silver Parquet files.",
        extra={"peak_rss_mb": {"bench process after the local engine": round(bench.local_rss_mb or 0, 1),
                               "bench process (both engines)": round(peak_rss_mb() or 0, 1),
                               "sail": round(sail_rss or 0, 1)},
               "per_report_seconds": {"spark": runs[-1]["spark_per_report_s"], "local": runs[-1]["local_per_report_s"]},
               "input_rows": sum(bench.lake.rows.values()), "generate_lake_s": round(bench.lake.seconds, 2),
               "warmup": {"report": warm_report[0], "spark_s": round(warm["spark_s"], 3),
                          "local_s": round(warm["local_s"], 3)}})
    notes = [f"quick: {p['order_rows']:,} order rows (a twentieth of the full 10M)."] if quick else []
    return StageResult("spark-reports", [fig], params=p, notes=notes,
                       processes={"sail": sail_rss, "bench": peak_rss_mb()})
# ---- live report pages -----------------------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def bench_live(settings: Settings, quick: bool) -> StageResult:
    """Page time of `dw reports serve` for one client, cold and warm, beside the bare DuckDB queries of the same
    reports: one server, a warm-up round, then REPEATS rounds; each figure is a per-round percentile."""
    from dw_assets.reports.live.bench import LiveBench

    p = size("live", quick)
    with LiveBench(settings, p["order_rows"]) as bench:
        bench.round(1, 1)  # warm-up: imports, first charts, the token check
        rounds = [bench.round(p["cold_loads"]) for _ in range(REPEATS)]
        n_specs, rows, generate_s = len(bench.specs), bench.lake_rows, bench.generate_s
    fact_rows = rows.get(bench.fact, p["order_rows"])
    ref = f"bare DuckDB: the same {n_specs} report queries over the same silver files, same round"
    bounds = {
        "cold": f"Every report query over silver (the engine's DuckDB views over the snapshot's Parquet files: the "
                f"bare queries' work) plus a Delta version check per table, HTML rendering and {n_specs} charts "
                f"drawn by matplotlib on the server (SVG), fetched after the page as a browser would.",
        "warm": "No query (the cached result of the same silver versions): a Delta version check per silver "
                "table, the cached page blocks and charts, HTTP; the reference is the query work the cache saves.",
    }
    figures = []
    for kind, key in (("cold", "cold_s"), ("warm", "warm_s")):
        label = "cold (silver changed)" if kind == "cold" else "warm (cached, silver unchanged)"
        for q in (50, 95):
            figures.append(Figure(
                "live", f"page load {label} p{q}, one client of {fact_rows:,} orders", "s",
                [round(_pct(r[key], q), 4) for r in rounds], f"{ref} (p{q})",
                [round(_pct(r["bare_s"], q), 4) for r in rounds], higher_is_better=False,
                kind="time" if q == 50 else "latency",
                bound=bounds[kind] if q == 50 else "Same bounds; the tail follows the shared cores' load.",
                extra={"loads_s": [[round(v, 4) for v in r[key]] for r in rounds]} if q == 50 else {}))
    figures[0].extra.update({"rows_by_table": rows, "bare_s": [[round(v, 4) for v in r["bare_s"]] for r in rounds],
                             "generate_lake_s": round(generate_s, 1), "peak_rss_mb": round(peak_rss_mb() or 0, 1)})
    notes = [f"{REPEATS} rounds after a warm-up; a round = {p['cold_loads']} cold loads (one row appended to silver "
             f"{bench.fact} before each) and 3 warm loads after each; a load is the page plus its chart images."]
    if quick:
        notes.append(f"quick: {p['order_rows']:,} order rows (a tenth of the full 1M).")
    return StageResult("live", figures, params=p, notes=notes)


# ---- onboarding ------------------------------------------------------------------------------------------------

# ---- reconciliation --------------------------------------------------------------------------------------------

def bench_reconcile(settings: Settings, quick: bool) -> StageResult:
    from dw_assets.checks.bench import measure_reconcile, prepare_reconcile_bench

    p = size("reconcile", quick)
    prepared = prepare_reconcile_bench(settings, p["rows"])
    runs, _ = _measure(lambda: measure_reconcile(settings))
    if not all(r["passed"] for r in runs):  # the time of a check that finds differences measures something else
        raise RuntimeError("the reconciliation check found differences on the freshly applied bench client")
    rows, tables = runs[0]["rows"], runs[0]["tables"]
    name = f"reconcile check, one round (counts + key/content checksums), one client of {rows:,} rows, {tables} tables"
    extra = {"rows": rows,
             "source_side_s": [round(r["source_side_s"], 3) for r in runs],
             "silver_side_s": [round(r["silver_side_s"], 3) for r in runs], **prepared,
             "peak_rss_mb": round(peak_rss_mb() or 0, 1)}
    bound = (f"Both sides render and hash every row in Python (canonical text per type, blake2b): source "
             f"~{_med(extra['source_side_s'])} s streaming rows from MariaDB, silver ~{_med(extra['silver_side_s'])} s "
             f"reading Delta and hashing; the bare query hashes inside the server and returns one row per table.")
    check = [r["check_s"] for r in runs]
    figures = [
        Figure("reconcile", name, "s", check, "bare MariaDB COUNT(*) + BIT_XOR(CRC32(row)) of the same tables",
               [r["bare_checksum_s"] for r in runs], higher_is_better=False, kind="time", bound=bound, extra=extra),
        Figure("reconcile", name, "s", check, "bare MariaDB SELECT COUNT(*) of the same tables",
               [r["bare_count_s"] for r in runs], higher_is_better=False, kind="time",
               bound="COUNT(*) reads the primary key only; the check reads every column of every row on both sides.",
               extra={"rows": rows}),
    ]
    return StageResult("reconcile", figures, params=p, notes=[
        f"client seeded with {rows:,} rows in {prepared['seed_s']} s and brought to silver by capture, "
        f"landing and apply in {prepared['pipeline_s']} s (not in the figures); every measured check passed. The "
        f"Dagster check runs this every 5 minutes per client by default (DW_RECONCILE_CRON)."])


def bench_onboard(settings: Settings, quick: bool) -> StageResult:
    p = size("onboard", quick)
    try:
        mod = importlib.import_module("dw_assets.onboarding.bench")
        run = getattr(mod, "run_onboarding_bench")
    except (ImportError, AttributeError) as e:
        reason = f"dw_assets.onboarding.bench.run_onboarding_bench is not available yet ({e.__class__.__name__})"
        return StageResult("onboard", [
            Figure.not_measured("onboard", "seconds to first report per client", "s", reason),
            Figure.not_measured("onboard", f"clients onboarded per minute (batch of {p['batch']})", "clients/min",
                                reason, kind="throughput"),
        ], status="not available", error=reason, params=p)
    # The warm-up only needs the imports and caches of one pass: the smallest batch does.
    runs, _ = _measure(lambda: run(settings, rows=p["rows"], batch=p["batch"]),
                       warm_fn=lambda: run(settings, rows=min(p["rows"], 1_000), batch=1))
    return onboarding_figures(runs, p)


def _find(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


DATA_STEPS = ("snapshot", "land", "apply", "reports")


def onboarding_figures(runs: list[dict[str, Any]], p: dict[str, Any]) -> StageResult:
    """Adapt `run_onboarding_bench`'s dict: {"first_client": {...,"steps"}, "batch": {...}} (flat keys accepted)."""
    firsts = [r.get("first_client", r) for r in runs]
    batches = [r.get("batch", r) if isinstance(r.get("batch"), dict) else r for r in runs]
    first = [_find(f, "seconds_to_first_report", "first_report_s") for f in firsts]
    per_min = [_find(b, "clients_per_minute") for b in batches]
    figs, notes = [], []
    if all(v is not None for v in first):
        steps = [f.get("steps") or {} for f in firsts]
        data = [sum(st.get(k, 0.0) for k in DATA_STEPS) for st in steps]
        med_steps = {k: _med([st.get(k) for st in steps]) for k in steps[-1]}
        top = sorted(((v or 0, k) for k, v in med_steps.items()), reverse=True)[:3]
        figs.append(Figure(
            "onboard", f"seconds from `onboard` to the first report, one client ({p['rows']:,} rows)", "s", first,
            "its data steps alone (snapshot + land + apply + reports)" if any(data) else None,
            [round(x, 3) for x in data] if any(data) else [], higher_is_better=False, kind="time",
            bound="Fixed per-client steps, not data volume, at this size: the largest are "
                  + ", ".join(f"{k} {v:.1f} s" for v, k in top) + " (medians).",
            extra={"steps_s_median": med_steps, "total_s": [f.get("total_seconds") for f in firsts]}))
    if all(v is not None for v in per_min):
        totals = [f.get("total_seconds") for f in firsts]
        ref = [round(60 / t, 2) for t in totals if t]
        b = batches[-1]
        figs.append(Figure(
            "onboard", f"clients onboarded per minute, batch of {b.get('clients', p['batch'])} "
                       f"({b.get('rows_per_client', '?')} rows each, {b.get('parallel', '?')} at a time)",
            "clients/min", per_min,
            "one client at a time (60 / single onboarding)" if len(ref) == len(totals) else None,
            ref if len(ref) == len(totals) else [],
            bound="Parallel onboardings share 2 cores and one capture stream; each still pays its fixed steps "
                  "(registration, Dagster partition, snapshot, first apply and reports).",
            extra={"batch_seconds": [x.get("seconds") for x in batches],
                   "slowest_client_s": [x.get("slowest_client_seconds") for x in batches],
                   "failed": [x.get("failed") for x in batches]}))
    if not figs:
        notes.append(f"onboarding bench returned keys {sorted(runs[-1])}; not mapped to figures")
    if p["batch"] < 50:
        notes.append(f"quick: a batch of {p['batch']} clients (the full run onboards 50).")
    return StageResult("onboard", figs, notes=notes, params=p)
