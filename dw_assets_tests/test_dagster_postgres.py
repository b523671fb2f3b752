"""Dagster on the stack's own PostgreSQL: the lag sensor's run request runs, and the run, its events and the
materializations it records live in PostgreSQL (DW_DAGSTER_STORAGE=postgres)."""
from __future__ import annotations

from dataclasses import replace

import dagster as dg
import psycopg2
import pytest

from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.defs.landing import LANDING_FILES, build_landing_lag_sensor, ingest_batch_job
from dw_assets.landing.run_planning import LagThresholds
from dw_assets.model import load_model
from dw_assets.onboarding.registry import set_status
from dw_assets.resources import DwSettings
from dw_assets.stack import dagster_home, find_free_port
from dw_assets.stack.postgres import PostgresInstance
from dw_assets.workload import apply_batch, seed_clients
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.pipeline_support import assert_silver_equals_source


@pytest.mark.slow  # a real capture, landing and apply (~80 s on a loaded 2-core machine)
def test_sensor_run_and_materializations_are_kept_in_postgres(stack_settings, tmp_path, monkeypatch):
    pg = PostgresInstance(tmp_path / "pg", find_free_port())
    pid, password = pg.start(None)
    try:
        home = tmp_path / "home"
        home.mkdir()
        (home / "stack.json").write_text(stack_settings.state_file.read_text())
        settings = replace(stack_settings, home=home, lake_url=str(tmp_path / "lake"),
                           landing_url=str(tmp_path / "landing"), dagster_home=str(home / "dagster"))
        monkeypatch.setenv("DW_LAKE_URL", settings.lake_url)
        monkeypatch.setenv("DW_LANDING_URL", settings.landing_url)
        dagster_home.prepare(home / "dagster", pg.url(password))
        instance = dg.DagsterInstance.from_config(str(home / "dagster"))

        client = unique_client("pg")
        seed_clients(settings, [client], rows_per_client=200, seed=11)
        set_status(settings, client, "active", changed_by="test")
        apply_batch(settings, client, seed=12, rows=30)
        CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, {client}))).run()

        sensor = build_landing_lag_sensor(client_source=lambda s: {client: client},
                                          thresholds=LagThresholds(records=1), shards=1)
        resources = {"dw": DwSettings(home=str(home))}
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            tick = sensor(ctx)
        assert len(tick.run_requests) == 1
        request = tick.run_requests[0]
        result = ingest_batch_job.execute_in_process(run_config=request.run_config, instance=instance,
                                                     tags=request.tags, resources=resources)
        assert result.success
        assert_silver_equals_source(settings, client, load_model())

        # Read back through a fresh instance and straight from PostgreSQL: nothing of it is in SQLite files.
        again = dg.DagsterInstance.from_config(str(home / "dagster"))
        assert again.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert [r.run_id for r in again.fetch_materializations(LANDING_FILES, limit=5).records] == [result.run_id]
        with psycopg2.connect(pg.url(password)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,))
            assert cur.fetchone() == (1,)
            cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                        (result.run_id, "ASSET_MATERIALIZATION"))
            assert cur.fetchone()[0] >= 2  # landing files and the client's silver tables
        assert not list((home / "dagster").glob("**/*.db"))
    finally:
        pg.stop(pid)
