"""The ingest service's runless Dagster events: summed per asset partition, written to a real instance, and
never more than their CPU share of a core (a slow flush stretches the interval to the next)."""
from __future__ import annotations

from pathlib import Path

import dagster as dg

from dw_assets.ingest.dagster_events import RunlessEvents
from dw_assets.settings import load_settings


def test_events_are_summed_per_partition_and_a_slow_flush_stretches_the_interval(tmp_path: Path):
    settings = load_settings(env={}, home=tmp_path)
    events = RunlessEvents(settings, interval_s=0.01, cpu_share=0.1)
    try:
        clients = [f"c{i}" for i in range(4)]
        for c in clients:
            for table in ("orders", "customers", "products"):
                events.add(("silver", table), c, {"events_applied": 2}, {"batch": 1})
                events.add(("silver", table), c, {"events_applied": 3}, {"batch": 2})
        assert events.flush() == 12  # one event per asset partition, not one per micro-batch
        # 12 writes to the SQLite instance took far more than 1 ms: the next flush waits for 10x their time.
        assert events.next_interval_s > 0.01
        assert not events.due()
    finally:
        events.close()
    instance = dg.DagsterInstance.from_config(settings.dagster_home)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["silver", "orders"]), asset_partitions=["c2"]), limit=10).records
    assert len(records) == 1
    md = records[0].asset_materialization.metadata
    assert md["events_applied"].value == 5 and md["batches"].value == 2 and md["batch"].value == 2
