"""The ingest service (`dw ingest run`) on real services: it lands and applies every client continuously; kill -9
during a workload and a restart lose and double nothing (silver equals source, bronze holds each change once, no
landing file covers an offset twice); SIGTERM stops it cleanly; a client with a breaking schema stops alone;
the lag sensor leaves a live service's clients alone and takes over when its heartbeat is stale; the service and
a sensor-started run never write one client at once.

One stack for the module (own MariaDB and broker); the kill scenario runs once and several tests read it.
"""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest

from dw_assets.ingest.heartbeat import Heartbeat, read_heartbeats, served_clients, write_heartbeat
from dw_assets.model import load_model
from dw_assets.settings import Settings
from dw_assets.stack import Stack, StackConfig
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.fault_harness import (Exit, ServicePipeline, Workload, bronze_duplicates, create_topics,
                                           scenario_settings, stack_port, wait_converged)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    st = Stack(StackConfig(home=tmp_path_factory.mktemp("ingest"), mariadb_port=stack_port(),
                           kafka_port=stack_port()))
    st.up()
    try:
        yield st
    finally:
        st.down()


@dataclass
class KillOutcome:
    settings: Settings
    clients: list[str]
    converged: bool = False
    differences: list[str] = field(default_factory=list)
    bronze_extra: dict[str, dict[str, int]] = field(default_factory=dict)
    killed: Exit | None = None
    stopped: list[Exit] = field(default_factory=list)
    changes: int = 0
    history_apart: dict[str, int] = field(default_factory=dict)  # "client.table" -> current versions != silver


def _wait_new_file(root: Path, pattern: str, timeout: float = 30.0) -> bool:
    before = set(root.glob(pattern))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(root.glob(pattern)) - before:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def killed(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> KillOutcome:
    """Snapshot through the service, a workload, SIGKILL of the service right after a landing upload, restart,
    converge, then SIGTERM of everything."""
    from dw_assets.workload import seed_clients

    work = tmp_path_factory.mktemp("kill")
    settings = scenario_settings(stack, work / "home")
    clients = [unique_client("ik"), unique_client("ik")]
    model = load_model()
    models = {c: model for c in clients}
    logs = work / "logs"
    logs.mkdir()
    p = ServicePipeline(settings, models, {c: None for c in clients}, logs)
    out = KillOutcome(settings, clients)
    try:
        seed_clients(settings, clients, rows_per_client=150, seed=5, replace=True)
        create_topics(settings, models)
        for role in p.roles:
            p.start(role)
        warm, result = wait_converged(p, 120)
        assert warm, f"the snapshot did not reach silver through the service: {result} {p.exits}"
        workload = Workload(settings, models, rate=400, duration=10).start()
        time.sleep(2)
        _wait_new_file(Path(settings.landing_url), "topics/*/partition=*/*.parquet")
        out.killed = p.kill("ingest")
        p.restart("ingest")
        workload.wait()
        out.changes = workload.changes
        out.converged, result = wait_converged(p, 120)
        out.differences = [r.describe(c) for c, rs in result.items() for r in rs if not r.equal]
    finally:
        out.stopped = p.stop_all(grace=60)
    out.bronze_extra = {c: bronze_duplicates(settings, c, model) for c in clients}
    out.history_apart = {f"{c}.{t.name}": _history_apart(settings, c, t) for c in clients for t in model.tables
                         if t.options.scd2}
    return out


def _history_apart(settings: Settings, client: str, table) -> int:
    """Rows in which the history's current versions and silver differ (either side)."""
    from dw_assets.lakehouse.paths import read_delta

    cols = table.column_names
    silver = read_delta(settings, "silver", client, table.name).select(cols)
    history = read_delta(settings, "silver_history", client, table.name)
    current = history.filter(history["is_current"]).select(cols).cast(silver.schema)
    a, b = set(map(tuple, map(dict.values, silver.to_pylist()))), set(map(tuple, map(dict.values, current.to_pylist())))
    return len(a ^ b)


def test_kill_9_during_a_workload_then_restart_gives_silver_equal_to_source(killed: KillOutcome):
    assert killed.killed is not None and killed.killed.returncode == -9
    assert killed.changes > 1000
    assert killed.converged, killed.differences


def test_after_kill_9_bronze_holds_each_change_once(killed: KillOutcome):
    assert not any(killed.bronze_extra.values()), killed.bronze_extra


def test_after_kill_9_no_landing_offset_is_in_two_files(killed: KillOutcome):
    """Exactly-once landing across the kill: per partition, files' offset ranges never overlap."""
    import pyarrow.parquet as pq

    from dw_assets.landing.store import open_store

    store = open_store(killed.settings)
    ranges: dict[str, list[tuple[int, int]]] = {}
    for path in Path(killed.settings.landing_url).glob("topics/*/partition=*/*.parquet"):
        key = str(path.relative_to(killed.settings.landing_url))
        t = pq.read_table(io.BytesIO(store.get(key)), columns=["kafka_offset"])
        offsets = t["kafka_offset"].to_pylist()
        ranges.setdefault(str(path.parent), []).append((min(offsets), max(offsets)))
    assert ranges
    for part, rs in ranges.items():
        rs.sort()
        for (a0, a1), (b0, b1) in zip(rs, rs[1:]):
            assert b0 > a1, f"{part}: offsets {b0}..{min(a1, b1)} landed twice"


def test_after_a_clean_stop_history_is_current_with_silver(killed: KillOutcome):
    """The SCD2 history's current versions are silver's rows, across the kill -9 and the restart."""
    assert killed.history_apart and not any(killed.history_apart.values()), killed.history_apart


def test_sigterm_stops_the_service_cleanly(killed: KillOutcome):
    ingest = [e for e in killed.stopped if e.role == "ingest"]
    assert ingest and ingest[0].returncode == 0, ingest
    beats = read_heartbeats(killed.settings)
    assert [hb.state for hb in beats] == ["stopped"]
    assert sorted(beats[0].clients) == sorted(killed.clients)


# ---- in-process service -------------------------------------------------------------------------------------
@pytest.fixture
def settings(stack: Stack, tmp_path: Path) -> Settings:
    return scenario_settings(stack, tmp_path / "home")


def _start_service(settings: Settings, clients: dict[str, str], **kw):
    from dw_assets.ingest.service import IngestService, ServiceOptions

    kw.setdefault("dagster", False)
    service = IngestService(settings, ServiceOptions(clients=clients, reports=False, gate_recheck_s=1.0, **kw))
    t = threading.Thread(target=service.run, name="test-ingest", daemon=True)
    t.start()
    return service, t


def _capture(settings: Settings, clients: list[str]) -> None:
    from dw_assets.cdc.capture import CaptureOptions, CaptureService
    from dw_assets.cdc.sources import fixed_source

    CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, set(clients)))).run()


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _silver_names(settings: Settings, client: str) -> list:
    from dw_assets.lakehouse.paths import read_delta

    return sorted(read_delta(settings, "silver", client, "customers", columns=["full_name"])["full_name"].to_pylist())


def test_a_client_with_a_breaking_schema_stops_alone(settings: Settings):
    from dw_assets.checks.silver_equality import compare_silver_with_source
    from dw_assets.db import connection
    from dw_assets.identifiers import quote_ident
    from dw_assets.workload import apply_batch, seed_clients

    good, bad = unique_client("ig"), unique_client("ib")
    seed_clients(settings, [good, bad], rows_per_client=50, seed=3, replace=True)
    _capture(settings, [good, bad])
    # With runless Dagster events: every micro-batch shows up as materializations of the client's partition.
    service, t = _start_service(settings, {good: good, bad: bad}, dagster=True, dagster_interval_s=1.0)
    model = load_model()
    try:
        _wait(lambda: all(r.equal for c in (good, bad) for r in compare_silver_with_source(settings, c, model)),
              90, "the snapshot in silver")
        before_bad = _silver_names(settings, bad)
        with connection(settings) as conn, conn.cursor() as cur:
            # Dropping a model column is breaking: silver would silently lose it.
            cur.execute(f"ALTER TABLE {quote_ident(bad)}.`customers` DROP COLUMN `notes`")
            cur.execute(f"UPDATE {quote_ident(bad)}.`customers` SET `full_name` = 'after the drop' LIMIT 5")
            conn.commit()
        apply_batch(settings, good, seed=1, rows=40)
        _capture(settings, [good, bad])
        _wait(lambda: all(r.equal for r in compare_silver_with_source(settings, good, model)), 60,
              "the good client's silver to equal its source")
        _wait(lambda: bad in {c for hb in read_heartbeats(settings) for c in hb.stopped}, 30,
              "the heartbeat to show the broken client stopped")
        _wait(lambda: "breaking" in read_heartbeats(settings)[0].stopped.get(bad, ""), 30,
              "the gate to name the breaking difference")
        # Silver of the broken client did not take the changes made after the breaking one.
        assert _silver_names(settings, bad) == before_bad
    finally:
        service.stop()
        t.join(60)
    assert not t.is_alive()
    instance = dg.DagsterInstance.from_config(settings.dagster_home)
    for key in (["landing", "landing_files"], ["bronze", "orders"], ["silver", "orders"], ["silver", "customers"]):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[good]), limit=100).records
        assert records, f"no runless materialization of {key} for {good}"
        assert all(r.run_id == "" for r in records)  # reported without a run


def test_a_breaking_ddl_stops_an_idle_client_within_the_gate_ttl(settings: Settings):
    """The service reads each conforming client's production schema again ahead of its gate result expiring,
    outside the micro-batches: a breaking DDL stops the client within the TTL even when no row changes follow."""
    from dw_assets.db import connection
    from dw_assets.identifiers import quote_ident
    from dw_assets.workload import seed_clients

    client = unique_client("ig")
    seed_clients(settings, [client], rows_per_client=20, seed=5, replace=True)
    _capture(settings, [client])
    service, t = _start_service(settings, {client: client}, gate_ttl_s=2.0)
    try:
        _wait(lambda: any(client in hb.clients for hb in read_heartbeats(settings))
              and service.heartbeat.batches >= 1, 60, "the snapshot applied")
        time.sleep(3)  # the gate's result has been read again at least once by now, conforming
        assert client not in {c for hb in read_heartbeats(settings) for c in hb.stopped}
        with connection(settings) as conn, conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {quote_ident(client)}.`customers` DROP COLUMN `notes`")  # no row changes
            conn.commit()
        _wait(lambda: "breaking" in {c: r for hb in read_heartbeats(settings) for c, r in hb.stopped.items()}.get(
            client, ""), 20, "the heartbeat to show the idle client stopped by the gate")
    finally:
        service.stop()
        t.join(60)
    assert not t.is_alive()


def _lagging_client(settings: Settings) -> str:
    from dw_assets.landing.sample_events import produce_changes

    client = unique_client("is")
    produce_changes(settings, client, ["orders"], 20)
    return client


def _sensor_tick(settings: Settings, client: str, instance: dg.DagsterInstance):
    from dw_assets.defs.landing import build_landing_lag_sensor
    from dw_assets.landing.run_planning import LagThresholds
    from dw_assets.resources import DwSettings

    sensor = build_landing_lag_sensor(client_source=lambda s: {client: client}, thresholds=LagThresholds(records=1),
                                      shards=1)
    with dg.build_sensor_context(instance=instance, resources={"dw": DwSettings(home=str(settings.home))}) as ctx:
        return sensor(ctx)


def test_sensor_requests_nothing_while_the_heartbeat_is_fresh_and_takes_over_when_stale(settings: Settings):
    client = _lagging_client(settings)
    instance = dg.DagsterInstance.ephemeral()
    hb = Heartbeat(shard="0/1", clients=[client])
    write_heartbeat(settings, hb)
    fresh = _sensor_tick(settings, client, instance)
    assert not getattr(fresh, "run_requests", None)
    assert served_clients(settings) == {client}
    # The service died (kill -9): its heartbeat stops changing and ages past the threshold.
    hb.updated_at = time.time() - settings.ingest_heartbeat_stale_seconds - 1
    path = next((settings.home / "ingest").glob("heartbeat.*.json"))
    import json

    path.write_text(json.dumps(hb.as_dict()))
    assert served_clients(settings) == set()
    stale = _sensor_tick(settings, client, instance)
    assert [r.run_config["ops"]["ingest_client_batch"]["config"]["clients"] for r in stale.run_requests] == [[client]]


def test_the_service_and_a_sensor_run_never_write_one_client_at_once(settings: Settings):
    """While the service serves a client, a run of the ingest job for it lands nothing (the landing lock is the
    service's) and applies only under the apply lock; once the service stopped, the run lands again."""
    from dw_assets.defs.landing import LANDING_FILES, ingest_batch_job
    from dw_assets.landing.sample_events import produce_changes
    from dw_assets.resources import DwSettings

    client = _lagging_client(settings)
    service, t = _start_service(settings, {client: client})
    config = {"ops": {"ingest_client_batch": {"config": {"clients": [client], "apply": False}}}}
    resources = {"dw": DwSettings(home=str(settings.home))}
    try:
        _wait(lambda: client in served_clients(settings), 30, "the service's heartbeat")
        produce_changes(settings, client, ["orders"], 20, start_id=100)
        instance = dg.DagsterInstance.ephemeral()
        r = ingest_batch_job.execute_in_process(run_config=config, resources=resources, instance=instance)
        assert r.success
        landed = [e for e in r.all_events if e.is_step_materialization
                  and e.asset_key == LANDING_FILES]
        assert landed == []  # the service holds the client's landing lock: the run wrote nothing
    finally:
        service.stop()
        t.join(60)
    produce_changes(settings, client, ["orders"], 5, start_id=200)
    r = ingest_batch_job.execute_in_process(run_config=config, resources=resources,
                                            instance=dg.DagsterInstance.ephemeral())
    assert [e.asset_key for e in r.all_events if e.is_step_materialization] == [LANDING_FILES]


def test_the_service_picks_up_clients_activated_and_paused_in_the_registry(settings: Settings):
    from dw_assets.landing import land_client
    from dw_assets.landing.sample_events import produce_changes
    from dw_assets.onboarding.registry import register_client, set_status

    client = unique_client("ir")
    produce_changes(settings, client, ["orders"], 5)
    service, t = _start_service(settings, None)  # None: the registry's active clients
    try:
        register_client(settings, client, status="active")
        _wait(lambda: client in served_clients(settings), 30, "the activated client to be served")
        set_status(settings, client, "paused", changed_by="test")
        _wait(lambda: client not in served_clients(settings), 30, "the paused client to be let go")
        land_client(settings, client)  # its landing lock is free again (no LandingBusy)
    finally:
        service.stop()
        t.join(60)
