"""Scale: the per-tick and per-load costs that grow with the number of clients, at 500 clients (50 quick).

Registers the clients (model schema in production and staging databases, registry rows, one topic per model table,
a dynamic partition each in a temporary Dagster instance), then measures: loading the Dagster definitions in a
fresh process, one tick of the Kafka-lag sensor, the schema-drift sweep, and the capture service's peak memory.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from dw_assets import db
from dw_assets.settings import Settings

from .harness import Figure, StageResult, run_child
from .smoke import smoke
from .stages import REPEATS, WARMUP

log = logging.getLogger(__name__)

FULL_CLIENTS, QUICK_CLIENTS, SMOKE_CLIENTS = 500, 20, 5
SEED_ROWS = 30  # per client
LAGGING_EVERY = 5  # every 5th client gets a few events, so the sensor plans some runs
DEFS_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
from dw_assets.definitions import defs
t1 = time.perf_counter()
d = defs()
repo = d.get_repository_def()
keys = list(repo.asset_graph.get_all_asset_keys())
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "assets": len(keys),
                  "sensors": len(repo.sensor_defs), "jobs": len(repo.get_all_jobs())}))
"""


def _times(fn, repeats: int = REPEATS, warmup: int = WARMUP) -> tuple[list[float], list[Any]]:
    outs, secs = [], []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        if i >= warmup:
            secs.append(round(dt, 4))
            outs.append(out)
    return secs, outs


def _setup(settings: Settings, names: list[str]) -> dict[str, float]:
    from confluent_kafka import Producer

    from dw_assets.contracts import data_topic
    from dw_assets.landing.sample_events import create_topics
    from dw_assets.model import load_model
    from dw_assets.onboarding.registry import set_status
    from dw_assets.workload import seed_clients

    model = load_model()
    timings = {}
    t0 = time.perf_counter()
    # A few rows per client: the workload of the capture-memory figure updates and deletes existing rows.
    # One connection: concurrent registry writes deadlock (status changes lock the client row FOR UPDATE).
    seed_clients(settings, names, rows_per_client=SEED_ROWS, seed=5, model=model)
    for name in names:
        set_status(settings, name, "active", changed_by="dw bench")
    timings["seed_s"] = time.perf_counter() - t0
    log.info("seeded and activated %d clients in %.1f s", len(names), timings["seed_s"])
    # The capture service creates a table's topic lazily with TopicRegistry.ensure (one round trip and a
    # metadata refresh each); at this count the topics are created in batches up front instead.
    topics = [data_topic(settings.kafka.topic_prefix, n, t.name) for n in names for t in model.tables]
    t0 = time.perf_counter()
    for i in range(0, len(topics), 200):
        create_topics(settings, topics[i:i + 200])
    timings["create_topics_s"] = time.perf_counter() - t0
    timings["topics"] = len(topics)
    p = Producer({**settings.kafka.client_config(), "linger.ms": 20})
    for i, n in enumerate(names):
        if i % LAGGING_EVERY == 0:
            for k in range(3):
                p.produce(data_topic(settings.kafka.topic_prefix, n, model.tables[0].name), key=str(k).encode(),
                          value=b'{"op":"c"}')
    p.flush(60)
    return timings


def _definitions_figure(settings: Settings, n: int, env: dict[str, str]) -> Figure:
    import json

    def load() -> dict[str, Any]:
        import subprocess

        out = subprocess.run([sys.executable, "-c", DEFS_SNIPPET], capture_output=True, text=True, env=env,
                             timeout=300, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    # Fresh processes: nothing carries over from one run to the next, so there is no warm-up run (the files are
    # in the page cache and compiled already: the worker imported the same packages).
    secs, outs = _times(load, warmup=0)
    ref, _ = _times(lambda: run_child([sys.executable, "-c", "import dagster"], env=env, timeout=120), warmup=0)
    return Figure("scale", f"Dagster definitions load, fresh process ({n} clients registered)", "s", secs,
                  "`python -c 'import dagster'`", ref, higher_is_better=False, kind="time",
                  bound="Importing Dagster and the stage libraries (DuckDB, deltalake, Polars, confluent-kafka) "
                        "dominates; the asset factory builds from the model, not per client, so the client count "
                        "does not enter.",
                  extra={"import_s": [round(o["import_s"], 3) for o in outs],
                         "build_s": [round(o["build_s"], 3) for o in outs], "assets": outs[0]["assets"],
                         "sensors": outs[0]["sensors"], "jobs": outs[0]["jobs"]})


def _sensor_figure(settings: Settings, names: list[str]) -> tuple[Figure, dict[str, Any]]:
    import dagster as dg

    from dw_assets.defs.landing import landing_lag_sensor
    from dw_assets.landing.lag import measure_lag
    from dw_assets.partitions import clients_partitions
    from dw_assets.resources import DwSettings

    instance = dg.DagsterInstance.ephemeral()
    t0 = time.perf_counter()
    instance.add_dynamic_partitions(clients_partitions.name, names)
    add_s = time.perf_counter() - t0

    def tick() -> Any:
        ctx = dg.build_sensor_context(instance=instance, resources={"dw": DwSettings(home=str(settings.home))})
        return landing_lag_sensor(ctx)

    secs, outs = _times(tick)
    ref, _ = _times(lambda: measure_lag(settings, {n: n for n in names}))
    res = outs[-1]
    runs = len(getattr(res, "run_requests", None) or [])
    fig = Figure("scale", f"Kafka-lag sensor tick, {len(names)} clients × 8 tables "
                          f"({len(names) * 8 * settings.kafka.partitions:,} partitions)", "s", secs,
                 "lag sweep alone (measure_lag)", ref, higher_is_better=False, kind="time",
                 bound="Reading committed and end offsets of every client partition from the broker (batched "
                       "requests, cached watermarks after a short fetch); Dagster's own share is the registry read "
                       "and the run bookkeeping. Dagster times a sensor tick out at 60 s.",
                 extra={"run_requests": runs, "lagging_clients": len(names[::LAGGING_EVERY])})
    return fig, {"add_dynamic_partitions_s": round(add_s, 3)}


def _drift_figure(settings: Settings, names: list[str]) -> Figure:
    from dw_assets.checks.drift_report import drift_report, drift_summary
    from dw_assets.identifiers import staging_db_for

    dbs = [d for n in names for d in (n, staging_db_for(n))]

    def bare() -> int:
        marks = ", ".join(["%s"] * len(dbs))
        with db.connection(settings) as conn, conn.cursor() as cur:
            cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, IS_NULLABLE, "
                        "COLUMN_DEFAULT, COLUMN_KEY, EXTRA FROM information_schema.COLUMNS "
                        f"WHERE TABLE_SCHEMA IN ({marks})", dbs)
            n = len(cur.fetchall())
            cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM "
                        f"information_schema.STATISTICS WHERE TABLE_SCHEMA IN ({marks})", dbs)
            return n + len(cur.fetchall())

    secs, outs = _times(lambda: drift_report(settings))
    ref, _ = _times(bare)
    summary = drift_summary(outs[-1], settings.standard_model())
    return Figure("scale", f"schema drift sweep, {len(names)} clients (production + staging, 8 tables each)", "s",
                  secs, "one information_schema query over the same databases", ref, higher_is_better=False,
                  kind="time",
                  bound="information_schema reads per database (production vs model, staging vs production) on one "
                        "connection; MariaDB answers information_schema by opening each table's definition, so "
                        "the cost is per table, the bare query pays it once.",
                  extra={"clients_checked": len(outs[-1]), "summary": {k: v for k, v in summary.items()
                                                                       if not isinstance(v, (list, dict))}})


def _capture(settings: Settings, clients_file: Path, state: Path, work: Path, tag: str) -> Any:
    r = run_child([sys.executable, "-m", "dw_assets.bench.roles", "capture", "--once", "--home", str(settings.home),
                   "--state-home", str(state), "--clients", f"@{clients_file}", "--out", str(work / f"{tag}.json")],
                  timeout=900, log=work / f"{tag}.log")
    if r.returncode != 0 or r.timed_out:
        raise RuntimeError(f"capture run {tag} failed (code {r.returncode}); see {work / (tag + '.log')}")
    import json

    return r, json.loads((work / f"{tag}.json").read_text())


def _capture_memory_figure(settings: Settings, names: list[str], work: Path, workload_s: float
                           ) -> tuple[Figure, list[str]]:
    """Peak RSS of `capture --once` streaming the same binlog range with N clients captured vs with one."""
    from dw_assets.cdc.checkpoint import STREAMING, Checkpoint, CheckpointStore, Position, state_dir
    from dw_assets.workload import run_workload

    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        f, pos = cur.fetchone()[:2]
    start = Position.of(f, int(pos))
    wl = run_workload(settings, names, rate=2000, duration=workload_s, connections=3)
    all_file, one_file = work / "clients-all.txt", work / "clients-one.txt"
    all_file.write_text("\n".join(names))
    one_file.write_text(names[0])

    def stream(clients: list[str], clients_file: Path, tag: str) -> list[tuple[float, float, int]]:
        # Each run: a fresh process streaming from the workload's first event, its databases already captured
        # (no snapshot in the figure). No warm-up: nothing carries over between fresh processes.
        out = []
        for i in range(REPEATS):
            state = work / f"state-{tag}-{i}"
            CheckpointStore(state_dir(replace(settings, home=state))).save(
                Checkpoint(start.file, start.pos, None, None, {c: STREAMING for c in clients}))
            r, stats = _capture(settings, clients_file, state, work, f"{tag}-{i}")
            out.append((r.peak_rss_mb, r.wall_s, stats.get("events", 0)))
        return out

    many = stream(names, all_file, "capture-stream-all")
    one = stream(names[:1], one_file, "capture-stream-one")
    notes = [f"capture memory: {wl.row_changes:,} row changes over {len(names)} clients ({wl.achieved_rate:,.0f}/s "
             f"for {workload_s:.0f} s), streamed {REPEATS} times by each configuration, each a fresh process "
             "starting at the workload's first event (no snapshot, no warm-up)."]
    fig = Figure("scale", f"capture service peak RSS, streaming {len(names)} clients", "MB", [m[0] for m in many],
                 "same binlog range, 1 client captured", [m[0] for m in one], higher_is_better=False, kind="memory",
                 bound="A compiled row decoder and a topic entry per captured table plus librdkafka's per-partition "
                       "producer state; the binlog itself is streamed, never buffered beyond one transaction.",
                 extra={"events": [m[2] for m in many], "wall_s": [round(m[1], 2) for m in many],
                        "events_per_s": [round(m[2] / m[1]) for m in many if m[1]],
                        "events_one_client": [m[2] for m in one]})
    return fig, notes


def run_scale_bench(settings: Settings, quick: bool = False, clients: int | None = None,
                    work_dir: Path | None = None) -> StageResult:
    n = clients or ((SMOKE_CLIENTS if smoke() else QUICK_CLIENTS) if quick else FULL_CLIENTS)
    names = [f"sc_{i:04d}" for i in range(n)]
    work = Path(work_dir or settings.home / "bench-scale")
    work.mkdir(parents=True, exist_ok=True)
    result = StageResult("scale", params={"clients": n})
    setup = _setup(settings, names)
    result.notes.append(
        f"{n} clients: {2 * n} databases × 8 tables created, seeded with ~{SEED_ROWS} rows each and "
        f"activated in {setup['seed_s']:.1f} s, {setup['topics']:,} topics created in "
        f"{setup['create_topics_s']:.1f} s"
        + (f" (quick: {QUICK_CLIENTS} clients to stay in the 5-minute budget; the full run uses {FULL_CLIENTS})."
           if quick else "."))
    log.info("set-up done: %s", setup)
    env = _clean_env(settings)
    result.figures.append(_definitions_figure(settings, n, env))
    log.info("definitions load measured")
    sensor, extra = _sensor_figure(settings, names)
    result.figures.append(sensor)
    log.info("sensor tick measured")
    result.notes.append(f"{n} dynamic partitions added to an ephemeral Dagster instance in "
                        f"{extra['add_dynamic_partitions_s']:.2f} s.")
    result.figures.append(_drift_figure(settings, names))
    log.info("drift sweep measured")
    fig, notes = _capture_memory_figure(settings, names, work, 3 if quick else 10)
    result.figures.append(fig)
    result.notes += notes
    return result


def _clean_env(settings: Settings) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DW_") and k != "DAGSTER_HOME"}
    env["DW_HOME"] = str(settings.home)
    return env
