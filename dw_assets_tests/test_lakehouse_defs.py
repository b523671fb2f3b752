"""The lakehouse's Dagster layer: one apply step per client materializes every table's bronze and silver asset
with metadata; the maintenance job runs across clients."""
from __future__ import annotations

from pathlib import Path

import dagster as dg

from dw_assets.defs.lakehouse import _lake_apply_asset, defs, lake_maintenance
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.model import load_model
from dw_assets.resources import DwSettings
from dw_assets.settings import load_settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.lakehouse_support import KEYS, account, entry, tiny_model


def test_specs_follow_the_model():
    model = load_model()
    d = dg.Definitions.merge(defs(), dg.Definitions(resources={"dw": DwSettings()}))
    keys = {s.key for s in d.resolve_all_asset_specs()}
    for t in model.tables:
        assert dg.AssetKey(["bronze", t.name]) in keys and dg.AssetKey(["silver", t.name]) in keys
        assert (dg.AssetKey(["silver_history", t.name]) in keys) == t.options.scd2


def test_apply_asset_materializes_all_tables(tmp_path: Path, stack_settings):
    model = tiny_model(tmp_path)
    client = unique_client("lkdg")
    # The asset looks the client's production database up in the registry of the stack's MariaDB.
    (tmp_path / "stack.json").write_text(stack_settings.state_file.read_text())
    settings = load_settings(env={}, home=tmp_path)
    feed = LandingFeed(settings, client, KEYS)
    feed.write("accounts", feed.events("accounts", [("c", account(1)), ("c", account(2)), ("d", {"account_id": 1})]))
    feed.write("entries", feed.events("entries", [("c", entry(2, 1))]))
    asset = _lake_apply_asset(model)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("clients", [client])
        res = dg.materialize([asset], partition_key=client, instance=instance,
                             resources={"dw": DwSettings(home=str(tmp_path))})
        assert res.success
        mats = {m.asset_key.to_user_string(): m for m in res.get_asset_materialization_events()}
        assert set(mats) == {"bronze/accounts", "silver/accounts", "silver_history/accounts", "bronze/entries",
                             "silver/entries"}
        md = mats["silver/accounts"].materialization.metadata
        assert md["rows_inserted"].value == 1 and md["rows"].value == 1 and "latest_source_ts" in md
        assert "name 2" in md["preview"].value
        assert mats["bronze/accounts"].materialization.metadata["rows_appended"].value == 3
        job = dg.Definitions(jobs=[lake_maintenance], resources={"dw": DwSettings(home=str(tmp_path))}
                             ).resolve_job_def("lake_maintenance")
        out = job.execute_in_process(instance=instance, run_config={
            "ops": {"maintain_lake_tables": {"config": {"retention_hours": 0}}}})
        assert out.success
