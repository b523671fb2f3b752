"""Landing benchmark: events/s from Kafka to Parquet against a bare confluent-kafka consume loop on the same topics,
and the lag sensor's evaluation time at hundreds of clients.

Creates its own uniquely named topics and a throw-away landing directory, and deletes both afterwards (Tansu's
memory storage never frees a topic otherwise).
"""
from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from ..contracts import client_topic_prefix
from ..settings import Settings
from .flush import FlushPolicy
from .lag import measure_lag
from .sample_events import create_topics, produce_changes, producer
from .sweep import DEFAULT_PARALLEL, land_clients
from .writer import LandingReport


def bare_consume(settings: Settings, topics: dict[str, int], expected: int, timeout: float = 120.0) -> float:
    """Seconds for one plain consumer to read `expected` messages from the start of `topics` (the reference)."""
    c = Consumer({**settings.kafka.client_config(), "group.id": f"dw-bench-bare-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100,
                  "max.partition.fetch.bytes": 8 * 1024 * 1024, "fetch.max.bytes": 64 * 1024 * 1024,
                  "queued.max.messages.kbytes": 256 * 1024})
    try:
        c.list_topics(timeout=10)
        started = time.perf_counter()
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, n in topics.items() for p in range(n)])
        seen = 0
        while seen < expected:
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"bare consume read {seen}/{expected} messages in {timeout}s")
            for m in c.consume(20_000, timeout=0.05):
                if m.error() is None:
                    m.value()  # touch it, as any real consumer would
                    seen += 1
        return time.perf_counter() - started
    finally:
        c.close()


def _delete_topics(settings: Settings, topics: list[str]) -> None:
    if not topics:
        return
    admin = AdminClient(settings.kafka.client_config())
    for f in admin.delete_topics(topics, operation_timeout=30).values():
        try:
            f.result(timeout=60)
        except Exception:  # noqa: BLE001 - best-effort clean-up
            pass


def measure_sensor_tick(settings: Settings, clients: int = 500, lagging_every: int = 5) -> dict[str, Any]:
    """Time the lag sweep the sensor runs each tick over `clients` clients, one topic each (every
    `lagging_every`-th client gets events, so some clients lag and most do not)."""
    from .run_planning import LagThresholds, plan_landing_runs

    tag = uuid.uuid4().hex[:6]
    names = [f"s{tag}_{i:04d}" for i in range(clients)]
    topics = [f"{client_topic_prefix(settings.kafka.topic_prefix, n)}orders" for n in names]
    try:
        t0 = time.perf_counter()
        create_topics(settings, topics)
        p = producer(settings)
        for i, t in enumerate(topics):
            if i % lagging_every == 0:
                for k in range(3):
                    p.produce(t, key=str(k).encode(), value=b'{"op":"c"}')
        p.flush(60)
        setup_s = time.perf_counter() - t0
        timings = []
        for _ in range(3):
            t1 = time.perf_counter()
            lags = measure_lag(settings, names)
            plan = plan_landing_runs(lags, LagThresholds(records=1, age_seconds=3600))
            timings.append(time.perf_counter() - t1)
        lagging = sum(1 for cl in lags.values() if cl.lag)
        return {"clients": clients, "partitions": clients * settings.kafka.partitions, "setup_s": round(setup_s, 2),
                "tick_s": round(min(timings), 3), "tick_s_all": [round(x, 3) for x in timings],
                "lagging_clients": lagging, "runs_planned": len(plan),
                "clients_in_runs": sum(len(r.clients) for r in plan)}
    finally:
        _delete_topics(settings, topics)


def run_landing_bench(settings: Settings, events: int = 500_000, clients: int = 10, *, tables: int = 2,
                      sensor_clients: int = 500, policy: FlushPolicy | None = None,
                      parallel: int = DEFAULT_PARALLEL) -> dict[str, Any]:
    """Produce `events` realistic change events across `clients` clients, then time (1) a bare consume loop over
    all of them and (2) landing every client to Parquet; plus the sensor tick at `sensor_clients` clients."""
    tag = uuid.uuid4().hex[:6]
    names = [f"bench_{tag}_{i}" for i in range(clients)]
    per_table = max(events // (clients * tables), 1)
    landing_dir = tempfile.mkdtemp(prefix="dw-landing-bench-")
    bench_settings = replace(settings, landing_url=landing_dir)
    all_topics: dict[str, int] = {}
    try:
        t0 = time.perf_counter()
        for n in names:
            counts = produce_changes(settings, n, [f"table_{j}" for j in range(tables)], per_table)
            all_topics.update({t: settings.kafka.partitions for t in counts})
        produce_s = time.perf_counter() - t0
        total = per_table * clients * tables

        cpu0 = time.process_time()
        bare_s = bare_consume(settings, all_topics, total)
        bare_cpu = time.process_time() - cpu0

        # CPU time next to wall time: on a shared 2-core machine wall figures swing with the neighbours' load.
        cpu1 = time.process_time()
        t1 = time.perf_counter()
        # Exactly what one multi-client landing run does.
        results = land_clients(bench_settings, {n: n for n in names}, parallel=parallel, policy=policy)
        failed = {c: r for c, r in results.items() if isinstance(r, BaseException)}
        if failed:
            raise RuntimeError(f"landing failed for {sorted(failed)}: {next(iter(failed.values()))!r}")
        reports = [r for r in results.values() if isinstance(r, LandingReport)]
        landing_s = time.perf_counter() - t1
        landing_cpu = time.process_time() - cpu1
        landed = sum(r.messages for r in reports)
        if landed != total:
            raise RuntimeError(f"landing consumed {landed} messages, expected {total}")
        files = sum(len(r.files) for r in reports)
        out: dict[str, Any] = {
            "events": total, "clients": clients, "topics": len(all_topics),
            "partitions": sum(all_topics.values()),
            "produce_events_per_s": round(total / produce_s),
            "bare_consume_events_per_s": round(total / bare_s),
            "landing_events_per_s": round(total / landing_s),
            "landing_vs_bare": round(bare_s / landing_s, 3),
            "bare_cpu_us_per_event": round(bare_cpu * 1e6 / total, 2),
            "landing_cpu_us_per_event": round(landing_cpu * 1e6 / total, 2),
            "landing_seconds": round(landing_s, 3),
            "landing_parallel_clients": parallel,
            "files": files,
            "rows": sum(r.records for r in reports),
            "parquet_mb": round(sum(r.bytes for r in reports) / 1e6, 2),
            "mean_file_rows": round(sum(r.records for r in reports) / max(files, 1)),
        }
    finally:
        shutil.rmtree(landing_dir, ignore_errors=True)
        _delete_topics(settings, list(all_topics))
    if sensor_clients:
        out["sensor"] = measure_sensor_tick(settings, sensor_clients)
    return out
