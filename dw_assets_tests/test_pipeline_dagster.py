"""The sensor-driven path through Dagster: one ingest run lands and applies several clients; a client whose
production schema broke is stopped (its conformance check fails, its silver is not updated) while the others in
the same run are applied; a run keeps taking changes that arrive while it works, and ends once caught up."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import replace

import dagster as dg

from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.db import connect
import dw_assets.defs.landing as landing_defs
from dw_assets.defs.landing import LANDING_FILES, PRODUCTION_SCHEMA, ingest_batch_job
from dw_assets.identifiers import quote_ident
from dw_assets.lakehouse.paths import read_delta
from dw_assets.landing.lag import measure_lag
from dw_assets.model import load_model
from dw_assets.onboarding.registry import set_status
from dw_assets.resources import DwSettings
from dw_assets.workload import apply_batch, seed_clients
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.pipeline_support import assert_silver_equals_source


def _own_lake(stack_settings, tmp_path):
    settings = replace(stack_settings, home=tmp_path / "home", lake_url=str(tmp_path / "lake"),
                       landing_url=str(tmp_path / "landing"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "stack.json").write_text(stack_settings.state_file.read_text())
    return settings


@contextmanager
def _lake_env(settings):
    # The resource reads the test's state dir, whose lake/landing are overridden through the environment.
    env = {"DW_LAKE_URL": settings.lake_url, "DW_LANDING_URL": settings.landing_url}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _ingest(settings, instance, clients, **config):
    return ingest_batch_job.execute_in_process(
        run_config={"ops": {"ingest_client_batch": {"config": {"clients": clients, **config}}}},
        instance=instance, resources={"dw": DwSettings(home=str(settings.home))}, raise_on_error=False)


def test_ingest_run_applies_good_clients_and_stops_only_the_broken_one(stack_settings, tmp_path):
    settings = _own_lake(stack_settings, tmp_path)
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
        cur.execute(f"ALTER TABLE {quote_ident(table.name)} MODIFY {quote_ident(money.name)} VARCHAR(20)")
    CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, {good, broken}))).run()

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("clients", [good, broken])
    with _lake_env(settings):
        result = _ingest(settings, instance, [good, broken])
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


def test_ingest_run_drains_changes_committed_while_it_runs_then_ends(stack_settings, tmp_path, monkeypatch):
    settings = _own_lake(stack_settings, tmp_path)
    client = unique_client("drn")
    seed_clients(settings, [client], rows_per_client=300, seed=5)
    set_status(settings, client, "active", changed_by="test")
    model = load_model()
    source = fixed_source(settings, {client})

    def commit_and_capture(i: int) -> None:
        apply_batch(settings, client, seed=100 + i, rows=30)
        CaptureService(settings, CaptureOptions(once=True, databases=source)).run()

    commit_and_capture(0)
    # Changes committed while the run works: injected right after each of its first passes, so that the run's
    # look at the lag deterministically finds them (a background writer would race the pass).
    real_pass = landing_defs._ingest_pass
    committed_during = 3
    calls: list[int] = []

    def pass_then_commit(*args, **kwargs):
        out = real_pass(*args, **kwargs)
        calls.append(1)
        if len(calls) <= committed_during:
            commit_and_capture(len(calls))
        return out

    monkeypatch.setattr(landing_defs, "_ingest_pass", pass_then_commit)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("clients", [client])
    budget = 300.0
    with _lake_env(settings):
        started = time.monotonic()
        result = _ingest(settings, instance, [client], drain_seconds=budget)
        took = time.monotonic() - started
    assert result.success
    landed = [r for r in instance.fetch_materializations(LANDING_FILES, limit=100).records
              if r.run_id == result.run_id]
    # One pass for what was there, one for each change committed during the run, none after it caught up.
    assert len(landed) == committed_during + 1
    assert took < budget
    assert_silver_equals_source(settings, client, model)


def test_ingest_run_without_drain_budget_makes_one_pass_and_leaves_later_changes(stack_settings, tmp_path,
                                                                                monkeypatch):
    settings = _own_lake(stack_settings, tmp_path)
    client = unique_client("one")
    seed_clients(settings, [client], rows_per_client=100, seed=6)
    set_status(settings, client, "active", changed_by="test")
    source = fixed_source(settings, {client})
    CaptureService(settings, CaptureOptions(once=True, databases=source)).run()
    real_pass = landing_defs._ingest_pass

    def pass_then_commit(*args, **kwargs):
        out = real_pass(*args, **kwargs)
        apply_batch(settings, client, seed=7, rows=20)
        CaptureService(settings, CaptureOptions(once=True, databases=source)).run()
        return out

    monkeypatch.setattr(landing_defs, "_ingest_pass", pass_then_commit)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("clients", [client])
    with _lake_env(settings):
        result = _ingest(settings, instance, [client])  # drain_seconds defaults to 0: the Launchpad's one pass
    assert result.success
    assert len(instance.fetch_materializations(LANDING_FILES, limit=100).records) == 1
    assert measure_lag(settings, {client: client})[client].lag > 0  # left for the next run, not lost
