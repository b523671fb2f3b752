"""Offboarding on real services: with --drop-data nothing of the client remains (topic, partition, table, file,
landing offsets); without it the topics and partition go but the data stays readable, and re-onboarding is refused
until the data is dropped. Also: pause/resume through the CLI."""
from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition

from dw_assets import cli
from dw_assets.contracts import landing_group
from dw_assets.lakehouse.paths import LAYERS, read_delta, table_url
from dw_assets.model import load_model
from dw_assets.onboarding import dagster_partitions, registry
from dw_assets.onboarding.client_data import existing_data
from dw_assets.onboarding.kafka_topics import client_topic_names, model_topics
from dw_assets.onboarding.onboard import onboard_client
from dw_assets.onboarding.step_log import step_records
from dw_assets.onboarding.validation import OnboardingRefused
from dw_assets_tests.test_onboarding_support import Sandbox, landing_files, sandbox, source_counts  # noqa: F401

from deltalake import DeltaTable

# Each of these onboards clients end to end (tens of seconds): outside the quick subset.
pytestmark = pytest.mark.slow


def _committed(settings, client: str, topics: list[str]) -> list[int]:
    c = Consumer({**settings.kafka.client_config(), "group.id": landing_group(client), "enable.auto.commit": False})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(t, p) for t in topics for p in range(3)], timeout=10)]
    finally:
        c.close()


@pytest.fixture
def two_onboarded(sandbox: Sandbox, monkeypatch) -> tuple[Sandbox, list[str]]:
    s = sandbox.settings
    clients = sandbox.seed(rows=200, n=2)
    for c in clients:
        onboard_client(s, c, run_by="test")
    monkeypatch.setattr(cli, "load_settings", lambda home=None: s)
    return sandbox, clients


def test_offboard_drop_data_leaves_nothing(two_onboarded):
    sandbox, (gone, kept) = two_onboarded
    s = sandbox.settings
    model = load_model()
    topics = client_topic_names(s, gone)
    assert existing_data(s, gone, gone).lake_dirs and landing_files(s, gone)

    assert cli.main(["clients", "offboard", gone, "--drop-data", "--yes"]) == 0

    assert registry.get_client(s, gone).status == "offboarded"
    assert client_topic_names(s, gone) == []
    assert not dagster_partitions.has_partition(s, gone)
    assert not existing_data(s, gone, gone)
    assert landing_files(s, gone) == []
    assert not any(DeltaTable.is_deltatable(table_url(s, layer, gone, t.name)) for layer in LAYERS
                   for t in model.tables)
    assert step_records(s, gone) == {}
    assert all(o < 0 for o in _committed(s, gone, topics))  # landing offsets forgotten
    # The other client is untouched.
    assert client_topic_names(s, kept) == sorted(model_topics(s, kept, model))
    assert dagster_partitions.has_partition(s, kept) and landing_files(s, kept)
    # Re-onboarding from scratch works and gives the full data again.
    again = onboard_client(s, gone, run_by="test")
    assert not again.already_complete and registry.get_client(s, gone).status == "active"
    counts = source_counts(s, gone, [t.name for t in model.tables])
    assert {t: read_delta(s, "silver", gone, t).num_rows for t in counts} == counts


def test_offboard_without_drop_data_keeps_data_readable(two_onboarded, capsys):
    sandbox, (client, _) = two_onboarded
    s = sandbox.settings
    model = load_model()
    before = {t.name: read_delta(s, "silver", client, t.name).num_rows for t in model.tables}
    files = landing_files(s, client)

    assert cli.main(["clients", "offboard", client]) == 0
    assert "data kept" in capsys.readouterr().out

    assert client_topic_names(s, client) == [] and not dagster_partitions.has_partition(s, client)
    assert {t.name: read_delta(s, "silver", client, t.name).num_rows for t in model.tables} == before
    assert landing_files(s, client) == files
    # Onboarding again would mix a new snapshot into the old lake: refused until the data is dropped.
    with pytest.raises(OnboardingRefused, match="--drop-data"):
        onboard_client(s, client, run_by="test")
    assert registry.get_client(s, client).status == "offboarded"


def test_pause_and_resume_from_the_cli(two_onboarded, capsys):
    sandbox, (client, other) = two_onboarded
    s = sandbox.settings
    assert cli.main(["clients", "pause", client]) == 0
    assert registry.get_client(s, client).status == "paused"
    assert registry.get_client(s, other).status == "active"
    assert cli.main(["clients", "resume", client]) == 0
    assert cli.main(["clients", "resume", client]) == 2  # not paused any more
    assert cli.main(["clients", "show", client]) == 0
    out = capsys.readouterr().out
    assert "onboarding complete" in out and "paused" in out
