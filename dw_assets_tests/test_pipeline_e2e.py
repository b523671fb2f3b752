"""The whole flow on real services: seed → workload → CDC → Kafka → landing Parquet → bronze/silver Delta.

Silver must equal the source table row for row, DECIMAL and DATETIME(6) exactly.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.checks.reconciliation import reconcile
from dw_assets.lakehouse.apply import apply_client
from dw_assets.landing import land_client
from dw_assets.model import load_model
from dw_assets.workload import apply_batch, seed_clients
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.pipeline_support import assert_silver_equals_source


def _capture_once(settings, clients):
    CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, set(clients)))).run()


def test_seed_workload_cdc_landing_apply_gives_silver_equal_to_source(stack_settings, tmp_path):
    settings = replace(stack_settings, lake_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"),
                       home=tmp_path / "home")
    clients = [unique_client("e2e"), unique_client("e2e")]
    seed_clients(settings, clients, rows_per_client=1500, seed=7)
    _capture_once(settings, clients)  # snapshot
    for i in range(6):  # streamed changes: inserts, money/status updates, child deletes
        for c in clients:
            apply_batch(settings, c, seed=i, rows=60)
    _capture_once(settings, clients)
    model = load_model()
    for c in clients:
        land_client(settings, c)
        result = apply_client(settings, c)
        assert result.ok, result.failed
        assert_silver_equals_source(settings, c, model)
        assert reconcile(settings, c, rounds=1, settle_seconds=0).passed
    # A second pass with nothing new changes nothing.
    again = apply_client(settings, clients[0])
    assert again.ok and again.events == 0
