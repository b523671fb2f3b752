"""The `cdc/cdc_topics` asset: a partition materializes as a bounded catch-up with per-topic end offsets."""
from __future__ import annotations

import dagster as dg

from dw_assets.defs.cdc import cdc_topics
from dw_assets.identifiers import quote_ident
from dw_assets.onboarding.registry import register_client
from dw_assets.partitions import clients_partitions
from dw_assets.resources import DwSettings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.test_cdc_support import cdc_settings, sql  # noqa: F401


def test_asset_spec():
    assert cdc_topics.key == dg.AssetKey(["cdc", "cdc_topics"])
    assert cdc_topics.partitions_def == clients_partitions
    assert {"mariadb", "kafka"} <= set(cdc_topics.specs_by_key[cdc_topics.key].kinds)


def test_materialize_partition(cdc_settings, monkeypatch):
    s = cdc_settings
    client = unique_client("cdcd")
    register_client(s, client, status="active")
    with __import__("dw_assets.db", fromlist=["connect"]).connect(s) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {quote_ident(client)}")
    sql(s, client, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1), (2)")
    # The resource reads settings from the environment/home; hand it this test's settings.
    monkeypatch.setattr(DwSettings, "load", lambda self: s)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(clients_partitions.name, [client])
        result = dg.materialize([cdc_topics], partition_key=client, instance=instance,
                                resources={"dw": DwSettings()})
    assert result.success
    mat = result.asset_materializations_for_node("cdc__cdc_topics")[0]
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["events_captured"] == 2
    assert md["end_offsets"] == {f"{s.kafka.topic_prefix}.{client}.t": 2}
    assert md["snapshot_state"] == "streaming"
