"""Onboarding interrupted at each step (an injected fault before a step's work, or after it but before it is
recorded) and run again completes with no duplicate topic, partition, table, landing file or row."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from dw_assets.lakehouse.paths import read_delta, filesystem, join
from dw_assets.model import load_model
from dw_assets.onboarding import registry
from dw_assets.onboarding.dagster_partitions import dagster_instance
from dw_assets.onboarding.kafka_topics import client_topic_names, model_topics
from dw_assets.onboarding.onboard import FaultPoint, InjectedFault, onboard_client
from dw_assets.onboarding.steps import RECORDED_STEPS
from dw_assets.partitions import CLIENTS_PARTITION_NAME
from dw_assets_tests.pipeline_support import assert_silver_equals_source
from dw_assets_tests.test_onboarding_support import Sandbox, landing_files, sandbox, source_counts  # noqa: F401

import pyarrow.fs as pafs

# Each of these onboards clients end to end (tens of seconds): outside the quick subset.
pytestmark = pytest.mark.slow


def assert_onboarded_once(s, client: str) -> None:
    model = load_model()
    names = [t.name for t in model.tables]
    assert client_topic_names(s, client) == sorted(model_topics(s, client, model))
    with dagster_instance(s) as instance:
        assert instance.get_dynamic_partitions(CLIENTS_PARTITION_NAME).count(client) == 1
    fs, root = filesystem(s, join(s.lake_url, "silver", client))
    assert sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(root))) == sorted(names)
    assert_silver_equals_source(s, client, model)
    counts = source_counts(s, client, names)
    # Every snapshot event exactly once in bronze and in the landing files (no duplicated file or event).
    assert {t: read_delta(s, "bronze", client, t).num_rows for t in names} == counts
    assert sum(pq.read_metadata(f).num_rows for f in landing_files(s, client)) == sum(counts.values())
    history = [(h["old_status"], h["new_status"]) for h in registry.status_history(s, client)]
    assert history == [(None, "onboarding"), ("onboarding", "active")]


def _interrupt_everywhere(s, client: str, when: str, steps: tuple[str, ...]) -> None:
    for step in steps:
        with pytest.raises(InjectedFault):
            onboard_client(s, client, run_by="test", fail_at=FaultPoint(step, when))  # type: ignore[arg-type]
    final = onboard_client(s, client, run_by="test")
    assert not final.already_complete and registry.get_client(s, client).status == "active"


@pytest.mark.parametrize("when", ["before", "after"])
def test_resume_after_a_fault_at_every_step(sandbox: Sandbox, when: str):
    s = sandbox.settings
    [client] = sandbox.seed(rows=300)
    _interrupt_everywhere(s, client, when, RECORDED_STEPS)
    assert_onboarded_once(s, client)
    again = onboard_client(s, client, run_by="test")
    assert again.already_complete


def test_fault_point_parsing():
    assert FaultPoint.parse("land") == FaultPoint("land", "before")
    assert FaultPoint.parse("7:after") == FaultPoint(RECORDED_STEPS[5], "after")
    for bad in ("nope", "0", "99", "land:during"):
        with pytest.raises(ValueError):
            FaultPoint.parse(bad)
