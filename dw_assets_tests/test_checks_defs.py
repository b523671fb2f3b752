"""The Dagster layer of the checks: blocking per client, checks-only runs, the sensor, the summary, `dw drift`."""

import argparse
import json

import dagster as dg
import pytest

from dw_assets.checks.commands import register
from dw_assets.defs import checks as check_defs
from dw_assets.definitions import defs
from dw_assets.identifiers import quote_qualified
from dw_assets.partitions import clients_partitions
from dw_assets.resources import DwSettings
from dw_assets_tests.test_checks_schema import execute, make_client


@pytest.fixture(scope="module")
def two_clients(stack_settings) -> tuple[str, str]:
    """One client whose production has a narrowed type (breaking), one that conforms."""
    broken, healthy = make_client(stack_settings, "dg"), make_client(stack_settings, "dg")
    execute(stack_settings,
            f"ALTER TABLE {quote_qualified(broken, 'orders')} MODIFY COLUMN `order_number` VARCHAR(16) NOT NULL")
    return broken, healthy


@dg.asset(partitions_def=clients_partitions, deps=[check_defs.PRODUCTION_SCHEMA], group_name="silver")
def silver_stand_in(context: dg.AssetExecutionContext) -> None:
    """Stands in for a silver asset that reads production data (wired by the lakehouse stage)."""


def test_checks_are_registered_on_the_production_schema_asset():
    d = defs()
    spec = next(s for s in d.resolve_all_asset_specs() if s.key == check_defs.PRODUCTION_SCHEMA)
    assert spec.group_name == "sources" and "mariadb" in spec.kinds and spec.partitions_def == clients_partitions
    keys = {k.name for k in d.resolve_asset_graph().asset_check_keys if k.asset_key == check_defs.PRODUCTION_SCHEMA}
    assert keys == {"production_conforms_to_model", "staging_matches_production"}
    assert d.resolve_job_def("schema_checks") is not None and d.resolve_sensor_def("schema_checks_sensor")


def test_blocking_check_stops_downstream_for_the_broken_client_only(stack, two_clients):
    broken, healthy = two_clients
    resources = {"dw": DwSettings(home=str(stack.home))}
    assets = [check_defs.production_schema, check_defs.production_conforms_to_model,
              check_defs.staging_matches_production, silver_stand_in]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(clients_partitions.name, [broken, healthy])
        bad = dg.materialize(assets, partition_key=broken, resources=resources, instance=instance,
                             raise_on_error=False)
        good = dg.materialize(assets, partition_key=healthy, resources=resources, instance=instance)
    evaluations = {e.check_name: e for e in bad.get_asset_check_evaluations()}
    failed = evaluations["production_conforms_to_model"]
    assert not failed.passed and failed.metadata["breaking"].value == 1
    # Staging still has the model's type, so it is "ahead" of production: a WARN, with the DDL to catch up.
    warned = evaluations["staging_matches_production"]
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert "order_number" in failed.metadata["differences"].value
    assert "MODIFY COLUMN `order_number` VARCHAR(32) NOT NULL" in failed.metadata["ddl"].value
    assert {m.asset_key for m in bad.get_asset_materialization_events()} == {check_defs.PRODUCTION_SCHEMA}
    assert dg.AssetKey("silver_stand_in") in {e.asset_key for e in good.get_asset_materialization_events()}
    assert all(e.passed for e in good.get_asset_check_evaluations())


def test_schema_checks_run_without_materializing_and_the_sensor_covers_every_client(stack, two_clients):
    broken, healthy = two_clients
    d = defs()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(clients_partitions.name, [broken, healthy])
        result = d.resolve_job_def("schema_checks").execute_in_process(
            instance=instance, tags={"dagster/partition": broken}, raise_on_error=False,
            resources={"dw": DwSettings(home=str(stack.home))})
        assert not result.get_asset_materialization_events()
        assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == \
            {"production_conforms_to_model": False, "staging_matches_production": False}

        ctx = dg.build_sensor_context(instance=instance, resources={"dw": DwSettings(home=str(stack.home))})
        out = check_defs.schema_checks_sensor(ctx)
        requested = {r.tags["dagster/partition"] for r in out.run_requests}
        assert {broken, healthy} <= requested
        assert all(r.tags["dw/client"] == r.tags["dagster/partition"] for r in out.run_requests)


def dw_drift(settings, *argv: str) -> int:
    """`dw drift ...` through the command's own parser (the full `dw` CLI loads every stage's commands)."""
    parser = argparse.ArgumentParser(prog="dw")
    register(parser.add_subparsers())
    args = parser.parse_args(["drift", *argv])
    return args.func(args, settings)


def test_drift_summary_asset_and_cli(stack, stack_settings, two_clients, capsys):
    broken, healthy = two_clients
    result = dg.materialize([check_defs.drift_summary_asset], resources={"dw": DwSettings(home=str(stack.home))})
    md = result.get_asset_materialization_events()[0].materialization.metadata
    assert md["breaking"].value >= 1 and broken in md["non_conforming_clients"].value
    assert md["clients"].value >= 2 and "1.0.0" in md["by_model_version"].value

    capsys.readouterr()
    assert dw_drift(stack_settings, "--client", healthy) == 0
    assert "conforms" in capsys.readouterr().out
    assert dw_drift(stack_settings, "--client", broken, "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["clients"][0]["breaking"] and out["summary"]["breaking"] == 1
