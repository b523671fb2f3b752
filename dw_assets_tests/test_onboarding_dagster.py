"""The registry sensor: a row inserted with status `onboarding` (no CLI) gets a partition and an onboarding run
that executes the same steps; an offboarded client loses its partition."""
from __future__ import annotations

import dagster as dg

from dw_assets.defs.onboarding import (
    ONBOARDING_JOB,
    client_onboarding,
    client_registry_sensor,
    needs_onboarding,
)
from dw_assets.model import load_model
from dw_assets.onboarding import registry
from dw_assets.onboarding.dagster_partitions import dagster_instance
from dw_assets.onboarding.onboard import onboarding_complete
from dw_assets.partitions import CLIENTS_PARTITION_NAME
from dw_assets.resources import DwSettings
from dw_assets_tests.pipeline_support import assert_silver_equals_source
from dw_assets_tests.test_onboarding_support import Sandbox, sandbox  # noqa: F401 - fixture


def _resource(settings) -> DwSettings:
    class SandboxSettings(DwSettings):
        def load(self):  # type: ignore[override]
            return settings

    return SandboxSettings()


def _tick(instance: dg.DagsterInstance, dw: DwSettings) -> dg.SensorResult:
    ctx = dg.build_sensor_context(instance=instance, resources={"dw": dw})
    result = client_registry_sensor(ctx)
    for req in result.dynamic_partitions_requests or []:  # what the daemon does with them
        if isinstance(req, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        else:
            for key in req.partition_keys:
                instance.delete_dynamic_partition(req.partitions_def_name, key)
    return result


def test_registry_row_without_cli_is_onboarded_by_the_sensor(sandbox: Sandbox):
    s = sandbox.settings
    [client] = sandbox.seed(rows=300, unregister=False)  # seeded: no partition, nothing to do
    dw = _resource(s)
    with dagster_instance(s) as instance:
        first = _tick(instance, dw)
        assert not first.run_requests and client not in instance.get_dynamic_partitions(CLIENTS_PARTITION_NAME)

        # Another tool marks the client for onboarding, straight in the registry.
        registry.set_status(s, client, "onboarding", changed_by="other-tool")
        tick = _tick(instance, dw)
        assert client in instance.get_dynamic_partitions(CLIENTS_PARTITION_NAME)
        [req] = tick.run_requests
        assert req.tags["dw/client"] == client

        run = client_onboarding.execute_in_process(run_config=req.run_config, instance=instance,
                                                   resources={"dw": dw}, tags=req.tags)
        assert run.success and run.dagster_run.job_name == ONBOARDING_JOB
        assert onboarding_complete(s, client) and registry.get_client(s, client).status == "active"
        assert_silver_equals_source(s, client, load_model())
        assert not _tick(instance, dw).run_requests  # complete: nothing more to request

        registry.set_status(s, client, "offboarded", changed_by="other-tool")
        _tick(instance, dw)
        assert client not in instance.get_dynamic_partitions(CLIENTS_PARTITION_NAME)


def test_needs_onboarding_rules():
    from datetime import datetime

    from dw_assets.onboarding.step_log import StepRecord

    now = datetime(2026, 1, 1)
    row = lambda status: registry.Client("acme", "acme", "acme__staging", status, "1", now, now)  # noqa: E731
    rec = lambda state: StepRecord("acme", "register", state, 1, now, None, None, "t", {})  # noqa: E731
    assert needs_onboarding(row("onboarding"), {})
    assert not needs_onboarding(row("active"), {})  # activated by hand: not ours to onboard
    assert needs_onboarding(row("active"), {"register": rec("done")})  # interrupted after activation
    assert not needs_onboarding(row("paused"), {"register": rec("done")})
    assert not needs_onboarding(row("seeded"), {}) and not needs_onboarding(row("offboarded"), {})
