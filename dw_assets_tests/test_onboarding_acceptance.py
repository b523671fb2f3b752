"""Onboarding on real services: from an empty registry to reports, refusal on a breaking schema difference, and
idempotence (a second run changes nothing)."""
from __future__ import annotations

import pytest
from deltalake import DeltaTable

from dw_assets import cli, db
from dw_assets.identifiers import quote_qualified
from dw_assets.lakehouse.paths import LAYERS, table_url
from dw_assets.model import load_model
from dw_assets.onboarding import dagster_partitions, registry
from dw_assets.onboarding.client_options import ClientOptions, get_options
from dw_assets.onboarding.kafka_topics import client_topic_names, model_topics
from dw_assets.onboarding.onboard import onboard_client
from dw_assets.onboarding.step_log import step_records
from dw_assets.onboarding.steps import RECORDED_STEPS
from dw_assets_tests.pipeline_support import assert_silver_equals_source
from dw_assets_tests.test_onboarding_support import Sandbox, landing_files, sandbox  # noqa: F401 - fixture

from confluent_kafka.admin import AdminClient


def _partition_counts(settings, topics):
    md = AdminClient(settings.kafka.client_config()).list_topics(timeout=10)
    return {t: len(md.topics[t].partitions) for t in topics}


def test_onboard_from_empty_registry_in_order(sandbox: Sandbox):
    s = sandbox.settings
    [client] = sandbox.seed(rows=600)
    model = load_model()
    with pytest.raises(registry.RegistryError):
        registry.get_client(s, client)

    result = onboard_client(s, client, options=ClientOptions(topic_partitions=2, flush_records=5000),
                            run_by="test")
    assert [st.state for st in result.steps] == ["done"] * len(result.steps)

    # 1. registry row: status, model version, times, options and the history of who did what
    row = registry.get_client(s, client)
    assert (row.status, row.model_version, row.production_db) == ("active", model.version, client)
    assert row.created_at <= row.updated_at
    assert get_options(s, client) == ClientOptions(topic_partitions=2, flush_records=5000)
    history = [(h["old_status"], h["new_status"], h["changed_by"]) for h in registry.status_history(s, client)]
    assert history == [(None, "onboarding", "test"), ("onboarding", "active", "test (snapshot)")]
    # 2. topics: one per model table, with the client's partition count
    topics = client_topic_names(s, client)
    assert topics == sorted(model_topics(s, client, model))
    assert set(_partition_counts(s, topics).values()) == {2}
    # 3. Dagster partition
    assert dagster_partitions.has_partition(s, client)
    # 4. Delta tables with the model's properties
    for t in model.tables:
        silver = DeltaTable(table_url(s, "silver", client, t.name))
        cfg = silver.metadata().configuration
        assert cfg.get("delta.enableChangeDataFeed") == str(t.options.change_data_feed).lower()
        assert cfg.get("dw.columnMapping.mode") == t.options.column_mapping
        assert [f.name for f in silver.schema().fields][: len(t.columns)] == list(t.column_names)
    # 5. snapshot rows in silver equal the source
    assert_silver_equals_source(s, client, model)
    # 6. reports: gold tables, HTML pages, and the materializations Dagster shows for the partition
    from dw_assets.reports.catalog import load_reports
    from dw_assets.reports.gold import read_gold

    specs = load_reports()
    assert specs
    for spec in specs:
        assert read_gold(s, client, spec.name).table.num_rows >= 0
    pages = result.steps[-2].detail["pages"]
    assert pages and all(p.endswith(".html") for p in pages)
    with dagster_partitions.dagster_instance(s) as instance:
        import dagster as dg

        ev = instance.get_latest_materialization_event(dg.AssetKey(["reports", "client_reports"]))
        assert ev is not None and ev.dagster_event.partition == client
    assert {n for n, r in step_records(s, client).items() if r.done} == set(RECORDED_STEPS)

    # A second run changes nothing: same topics, Delta versions and landing files; no status change recorded.
    versions = {t.name: DeltaTable(table_url(s, "silver", client, t.name)).version() for t in model.tables}
    files = landing_files(s, client)
    again = onboard_client(s, client, run_by="test")
    assert again.already_complete and not again.ran
    assert client_topic_names(s, client) == topics
    assert {t.name: DeltaTable(table_url(s, "silver", client, t.name)).version() for t in model.tables} == versions
    assert landing_files(s, client) == files
    assert len(registry.status_history(s, client)) == len(history)


def test_breaking_difference_refuses_before_registering(sandbox: Sandbox, monkeypatch, capsys):
    s = sandbox.settings
    [client] = sandbox.seed(rows=50)
    model = load_model()
    table = model.tables[-1]
    victim = next(c for c in table.columns if not c.primary_key and c.name not in table.primary_key)
    with db.connection(s) as conn, conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {quote_qualified(client, table.name)} DROP COLUMN `{victim.name}`")
    monkeypatch.setattr(cli, "load_settings", lambda home=None: s)
    monkeypatch.setenv("COLUMNS", "250")  # rich folds table cells to the terminal width

    assert cli.main(["clients", "onboard", client]) == 2
    err = capsys.readouterr().err
    print(err)
    assert "refused" in err and "breaking" in err and victim.name in err and "missing_column" in err
    with pytest.raises(registry.RegistryError):
        registry.get_client(s, client)
    assert step_records(s, client) == {}
    assert client_topic_names(s, client) == []
    assert not dagster_partitions.has_partition(s, client)
    assert not any(DeltaTable.is_deltatable(table_url(s, layer, client, t.name))
                   for layer in LAYERS for t in model.tables)
