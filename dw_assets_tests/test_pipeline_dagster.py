"""The sensor-driven path through Dagster: one ingest run lands and applies several clients; a client whose
production schema broke is stopped (its conformance check fails, its silver is not updated) while the others in
the same run are applied."""
from __future__ import annotations

from dataclasses import replace

import dagster as dg

from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.db import connect
from dw_assets.defs.landing import PRODUCTION_SCHEMA, ingest_batch_job
from dw_assets.lakehouse.paths import read_delta
from dw_assets.model import load_model
from dw_assets.onboarding.registry import set_status
from dw_assets.resources import DwSettings
from dw_assets.workload import apply_batch, seed_clients
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.pipeline_support import assert_silver_equals_source


def test_ingest_run_applies_good_clients_and_stops_only_the_broken_one(stack_settings, tmp_path):
    settings = replace(stack_settings, home=tmp_path / "home", lake_url=str(tmp_path / "lake"),
                       landing_url=str(tmp_path / "landing"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "stack.json").write_text(stack_settings.state_file.read_text())
    good, broken = unique_client("ok"), unique_client("brk")
    seed_clients(settings, [good, broken], rows_per_client=400, seed=3)
    for c in (good, broken):
        set_status(settings, c, "active", changed_by="test")
        apply_batch(settings, c, seed=1, rows=40)
    model = load_model()
    table = model.tables[0]
    money = next(c for c in table.columns if c.type.base == "decimal")
    with connect(settings, database=broken) as conn, conn.cursor() as cur:
        # A type narrowing the lake cannot apply: breaking.
        cur.execute(f"ALTER TABLE `{table.name}` MODIFY `{money.name}` VARCHAR(20)")
    CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, {good, broken}))).run()

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("clients", [good, broken])
    # The resource reads the test's state dir, whose lake/landing are overridden through the environment.
    import os
    env = {"DW_LAKE_URL": settings.lake_url, "DW_LANDING_URL": settings.landing_url}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = ingest_batch_job.execute_in_process(
            run_config={"ops": {"ingest_client_batch": {"config": {"clients": [good, broken]}}}},
            instance=instance, resources={"dw": DwSettings(home=str(settings.home))}, raise_on_error=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert not result.success  # the broken client fails the run, after the good one was applied
    assert_silver_equals_source(settings, good, model)
    try:
        broken_rows = read_delta(settings, "silver", broken, table.name).num_rows
    except FileNotFoundError:
        broken_rows = 0
    assert broken_rows == 0
    checks = [r.dagster_event for r in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    by_client = {e.event_specific_data.partition: e.event_specific_data.passed for e in checks
                 if e.event_specific_data.asset_key == PRODUCTION_SCHEMA}
    assert by_client == {good: True, broken: False}, [e.event_specific_data for e in checks]
    silver_parts = {r.partition_key for r in instance.fetch_materializations(
        dg.AssetKey(["silver", table.name]), limit=10).records}
    assert silver_parts == {good}
