"""DW_ENGINE=spark end to end on real services: seed → workload → CDC → Tansu → landing and lake on S3 (moto) →
the ingest pass every entry point calls (the Dagster ingest job, the ingest service, onboarding) → silver written
by Sail, equal to the source row for row; a second pass with nothing new changes nothing."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.engine.spark_apply import read_progress
from dw_assets.ingest import ingest_pass
from dw_assets.lakehouse.paths import open_table, table_url
from dw_assets.model import load_model
from dw_assets.settings import Settings
from dw_assets.stack.process import find_free_port
from dw_assets.stack.sail import SailServer
from dw_assets.workload import apply_batch, seed_clients
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.pipeline_support import assert_silver_equals_source


def _capture_once(settings, clients):
    CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, set(clients)))).run()


@pytest.fixture
def sail_on_s3(s3_settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A Sail that reaches the test's S3 endpoint (the stack passes it the same way)."""
    server = SailServer(tmp_path / "sail", find_free_port())
    pid = server.start(s3=s3_settings.s3)
    try:
        yield server.remote
    finally:
        server.stop(pid)


def test_ingest_pass_on_spark_gives_silver_equal_to_source(s3_settings, sail_on_s3, tmp_path):
    settings = replace(s3_settings, home=tmp_path / "home", engine="spark", spark_remote=sail_on_s3)
    model = load_model()
    clients = [unique_client("spk"), unique_client("spk")]
    seed_clients(settings, clients, rows_per_client=300, seed=3)
    _capture_once(settings, clients)  # snapshot
    outcomes = ingest_pass(settings, {c: c for c in clients}, model=model)
    assert all(o.error is None for o in outcomes.values()), {c: o.error for c, o in outcomes.items()}
    for i in range(3):  # streamed changes: inserts, updates, deletes
        for c in clients:
            apply_batch(settings, c, seed=i, rows=40)
    _capture_once(settings, clients)
    outcomes = ingest_pass(settings, {c: c for c in clients}, model=model)
    assert all(o.error is None for o in outcomes.values()), {c: o.error for c, o in outcomes.items()}
    for c in clients:
        assert_silver_equals_source(settings, c, model)
        # Written by the Spark engine: its progress marker is at the client's last batch, and the silver tables
        # carry no change data feed (Sail cannot write one).
        progress = read_progress(settings, c)
        assert {t: b for t, (b, _) in progress.items()} == {t.name: outcomes[c].apply.batch for t in model.tables}
        silver = open_table(settings, table_url(settings, "silver", c, model.tables[0].name))
        assert "delta.enableChangeDataFeed" not in silver.metadata().configuration
    again = ingest_pass(settings, {clients[0]: clients[0]}, model=model)[clients[0]]
    assert again.error is None and again.apply.events == 0
    assert all(t.events == 0 for t in again.apply.tables.values())
