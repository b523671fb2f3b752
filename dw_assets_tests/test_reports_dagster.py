"""The reports' Dagster layer: asset keys, groups, kinds and lineage from the SQL, and materialisations that carry
a markdown preview, an inline chart and the freshness of the silver data they include.
"""
from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from dw_assets.defs.reports import report_assets
from dw_assets.model import load_model
from dw_assets.partitions import CLIENTS_PARTITION_NAME
from dw_assets.reports.catalog import load_reports
from dw_assets.reports.engine import PORTFOLIO_SCOPE
from dw_assets.resources import DwSettings
from dw_assets.settings import Settings

from .test_reports_support import reports_settings, seeded_clients  # noqa: F401 - fixtures

*GOLD_ASSETS, client_reports, portfolio_report = report_assets(load_model())


def test_asset_specs_follow_the_sql_files():
    specs = {s.name: s for s in load_reports()}
    by_key = {a.key: a for a in GOLD_ASSETS}
    assert set(by_key) == {dg.AssetKey(["gold", n]) for n in specs}
    for name, spec in specs.items():
        a = by_key[dg.AssetKey(["gold", name])]
        assert {d.asset_key for d in a.specs_by_key[a.key].deps} == {dg.AssetKey(["silver", t])
                                                                    for t in spec.silver_tables}
        assert a.partitions_def is not None and a.group_names_by_key[a.key] == "gold"
        assert a.specs_by_key[a.key].kinds == {"duckdb", "delta"}
        assert a.automation_conditions_by_key[a.key] is not None
        assert a.owners_by_key[a.key] and a.descriptions_by_key[a.key]
    assert client_reports.key == dg.AssetKey(["reports", "client_reports"]) and client_reports.partitions_def
    assert portfolio_report.key == dg.AssetKey(["reports", "portfolio"]) and portfolio_report.partitions_def is None
    for a in (client_reports, portfolio_report):
        assert a.group_names_by_key[a.key] == "reports" and "html" in a.specs_by_key[a.key].kinds
        assert {d.asset_key for d in a.specs_by_key[a.key].deps} == set(by_key)


def test_report_sql_names_only_model_tables():
    # Lineage is parsed from the SQL; a CTE must never be mistaken for a silver table.
    for spec in load_reports():
        assert spec.silver_tables and "billable" not in spec.silver_tables


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}


def test_materialize_gold_reports_and_portfolio(reports_settings: Settings, seeded_clients: dict[str, int],
                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DW_LAKE_URL", reports_settings.lake_url)
    monkeypatch.setenv("DW_REPORTS_DIR", reports_settings.reports_dir)
    monkeypatch.setenv("DW_REPORTS_URL", "http://reports.example:9000/")
    resources = {"dw": DwSettings(home=str(reports_settings.home))}
    clients = sorted(seeded_clients)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(CLIENTS_PARTITION_NAME, clients)
        for client in clients:
            res = dg.materialize([*GOLD_ASSETS, client_reports], partition_key=client, instance=instance,
                                 resources=resources)
            assert res.success
        meta = _materializations(res)
        gold = meta["gold/daily_revenue"]
        assert gold["dagster/row_count"].value > 100
        assert "| order_date |" in gold["preview"].value and "data:image/png;base64," in gold["preview"].value
        assert gold["newest_source_change"].value == pytest.approx(seeded_clients[clients[-1]] / 1000)
        assert gold["lag_seconds_at_build"].value >= 60
        page_meta = meta["reports/client_reports"]
        assert "| cohort_month |" in page_meta["customer_cohorts"].value
        assert Path(page_meta["index"].value).exists()
        assert page_meta["live_page"].value == f"http://reports.example:9000/clients/{clients[-1]}"  # its live page

        res = dg.materialize([portfolio_report], instance=instance, resources=resources)
        assert res.success
        meta = _materializations(res)["reports/portfolio"]
        assert meta["clients"].value == ", ".join(clients)
        assert "data:image/png;base64," in meta["top_products"].value
    root = Path(reports_settings.reports_dir)
    assert all((root / scope / "payment_outcomes.html").exists() for scope in [*clients, PORTFOLIO_SCOPE])


def test_gold_refresh_is_debounced_to_one_request_per_cron_tick():
    import datetime as dt

    from dw_assets.defs.reports import GOLD_REFRESH_CRON, gold_asset
    from dw_assets.partitions import clients_partitions

    assert GOLD_REFRESH_CRON == "*/10 * * * *"
    spec = next(r for r in load_reports() if r.name == "daily_revenue")
    silver = [dg.AssetSpec(dg.AssetKey(["silver", t]), partitions_def=clients_partitions) for t in spec.silver_tables]
    defs = dg.Definitions(assets=[gold_asset(spec), *silver], resources={"dw": DwSettings()})
    key = dg.AssetKey(["gold", spec.name])
    t0 = dt.datetime(2026, 11, 23, 12, 1, tzinfo=dt.timezone.utc)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(CLIENTS_PARTITION_NAME, ["acme", "beta"])
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=t0)
        assert result.total_requested == 0

        def silver_changed(client: str) -> None:
            instance.report_runless_asset_event(dg.AssetMaterialization(silver[0].key, partition=client))

        silver_changed("acme")
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                                   evaluation_time=t0 + dt.timedelta(minutes=2))
        assert result.total_requested == 0  # changed, but no tick since: wait (debounce)
        silver_changed("acme")
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                                   evaluation_time=t0 + dt.timedelta(minutes=10))
        assert result.get_requested_partitions(key) == {"acme"}  # one request for both changes; beta unchanged
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                                   evaluation_time=t0 + dt.timedelta(minutes=21))
        assert result.total_requested == 0  # ticks without changes request nothing


def test_refresh_cadence_comes_from_the_environment_and_a_bad_one_names_the_variable(monkeypatch):
    from dw_assets.defs.reports import refresh_cron

    monkeypatch.setenv("DW_REPORTS_REFRESH_CRON", "*/2 * * * *")
    assert refresh_cron("DW_REPORTS_REFRESH_CRON", "*/10 * * * *") == "*/2 * * * *"
    monkeypatch.setenv("DW_REPORTS_REFRESH_CRON", "every minute")
    with pytest.raises(ValueError, match="DW_REPORTS_REFRESH_CRON='every minute' is not a cron schedule"):
        refresh_cron("DW_REPORTS_REFRESH_CRON", "*/10 * * * *")
    monkeypatch.delenv("DW_REPORTS_REFRESH_CRON")
    assert refresh_cron("DW_REPORTS_REFRESH_CRON", "*/10 * * * *") == "*/10 * * * *"
