"""Dagster wiring of the reports stage: one client-partitioned gold asset per report SQL file, per-client HTML
reports, and the portfolio (all clients) report. The work itself lives in `dw_assets.reports`.

Refresh: gold and portfolio assets re-materialise when silver (or gold) changed, at most once per cron tick
(a debounce: a steady stream of silver commits yields one refresh per interval, not one per commit).
"""

import os

import dagster as dg

from dw_assets.model import StandardModel
from dw_assets.partitions import CLIENTS_PARTITION_NAME, clients_partitions
from dw_assets.reports.catalog import ReportSpec, load_reports
from dw_assets.reports.gold import PORTFOLIO_SCOPE, GoldResult, build_client_gold, build_portfolio_gold, read_gold
from dw_assets.reports.live.urls import live_url
from dw_assets.reports.render import chart_markdown, markdown_table, write_scope_reports
from dw_assets.resources import DwSettings
from dw_assets.settings import load_settings

OWNERS = ["team:analytics"]


def refresh_cron(variable: str, default: str) -> str:
    """A refresh cadence from the environment (read when the code location loads), checked here so that a typo
    names the variable instead of failing deep inside Dagster."""
    cron = os.environ.get(variable, "").strip() or default
    try:
        dg.AutomationCondition.cron_tick_passed(cron)
    except Exception:  # noqa: BLE001 - Dagster raises a bare invariant error
        raise ValueError(f"{variable}={cron!r} is not a cron schedule (five fields, for example "
                         f"{default!r})") from None
    return cron


# Debounce of the report refresh: at most one refresh per tick while silver keeps changing.
GOLD_REFRESH_CRON = refresh_cron("DW_REPORTS_REFRESH_CRON", "*/10 * * * *")
PORTFOLIO_REFRESH_CRON = refresh_cron("DW_PORTFOLIO_REFRESH_CRON", "*/30 * * * *")


def refresh_when_changed(cron: str) -> dg.AutomationCondition:
    """True once per cron tick if any dependency was updated since this asset was last requested.

    No wait for dependencies in progress: ingest runs drain for minutes under load, so silver is nearly always
    "in progress", and every Delta read is of a committed version anyway.
    """
    return (
        dg.AutomationCondition.cron_tick_passed(cron).since_last_handled()
        & dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"dependencies changed; at most once per '{cron}'")


def gold_metadata(result: GoldResult) -> dict[str, dg.MetadataValue | int | float | str]:
    meta: dict[str, dg.MetadataValue | int | float | str] = {
        "dagster/row_count": result.table.num_rows,
        "preview": dg.MetadataValue.md(markdown_table(result) + "\n\n" + chart_markdown(result)),
        "gold_table": dg.MetadataValue.path(result.url),
        "delta_version": result.version if result.version is not None else -1,
        "clients": ", ".join(result.clients),
        "compute_seconds": round(result.seconds, 3),
    }
    if result.newest_source_ts_ms is not None:
        meta["newest_source_change"] = dg.MetadataValue.timestamp(result.newest_source_ts_ms / 1000)
        meta["lag_seconds_at_build"] = round(result.lag_seconds or 0.0, 1)
    return meta


def report_metadata(results: list[GoldResult], reports_dir: str) -> dict[str, dg.MetadataValue | int | float | str]:
    scope = results[0].scope
    meta: dict[str, dg.MetadataValue | int | float | str] = {
        "html_dir": dg.MetadataValue.path(f"{reports_dir.rstrip('/')}/{scope}"),
        "index": dg.MetadataValue.path(f"{reports_dir.rstrip('/')}/index.html"),
    }
    for r in results:
        meta[r.name] = dg.MetadataValue.md(markdown_table(r) + "\n\n" + chart_markdown(r))
    lags = [r.lag_seconds for r in results if r.lag_seconds is not None]
    newest = [r.newest_source_ts_ms for r in results if r.newest_source_ts_ms is not None]
    if newest:
        meta["newest_source_change"] = dg.MetadataValue.timestamp(max(newest) / 1000)
    if lags:
        meta["max_lag_seconds_at_build"] = round(max(lags), 1)
    return meta


def gold_asset(spec: ReportSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(["gold", spec.name]),
        # Lineage comes from the SQL itself: the silver tables its FROM/JOIN clauses name.
        deps=[dg.AssetKey(["silver", t]) for t in spec.silver_tables],
        partitions_def=clients_partitions,
        group_name="gold",
        kinds={"duckdb", "delta"},
        owners=OWNERS,
        description=f"{spec.title}: {spec.description} (SQL: {spec.path or spec.name + '.sql'})",
        automation_condition=refresh_when_changed(GOLD_REFRESH_CRON),
    )
    def _gold(context: dg.AssetExecutionContext, dw: DwSettings) -> dg.MaterializeResult:
        [result] = build_client_gold(dw.load(), context.partition_key, [spec.name])
        return dg.MaterializeResult(metadata=gold_metadata(result))

    return _gold


def client_reports_asset(model: StandardModel, gold_keys: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(["reports", "client_reports"]),
        deps=gold_keys,
        partitions_def=clients_partitions,
        group_name="reports",
        kinds={"html"},
        owners=OWNERS,
        description="One static HTML page per report for the client (<reports_dir>/<client>/<report>.html, chart "
                    "and table), rendered from the client's gold tables, and the reports index page; metadata "
                    "`live_page` links the client's live page (`dw reports serve`, DW_REPORTS_URL).",
        automation_condition=dg.AutomationCondition.eager(),
    )
    def client_reports(context: dg.AssetExecutionContext, dw: DwSettings) -> dg.MaterializeResult:
        settings = dw.load()
        results = [read_gold(settings, context.partition_key, spec.name, model) for spec in load_reports(model)]
        pages = write_scope_reports(settings.reports_dir, results)
        context.log.info("wrote %d pages for %s", len(pages), context.partition_key)
        meta = report_metadata(results, settings.reports_dir)
        meta["live_page"] = dg.MetadataValue.url(live_url(context.partition_key))  # `dw reports serve`
        return dg.MaterializeResult(metadata=meta)

    return client_reports


def portfolio_asset(gold_keys: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(["reports", "portfolio"]),
        deps=gold_keys,
        group_name="reports",
        kinds={"duckdb", "delta", "html"},
        owners=OWNERS,
        description="Every report across all clients (one DuckDB query over the UNION ALL of their silver "
                    f"tables), written to <lake>/gold/{PORTFOLIO_SCOPE}/<report> and "
                    f"<reports_dir>/{PORTFOLIO_SCOPE}/<report>.html, plus the index page.",
        automation_condition=refresh_when_changed(PORTFOLIO_REFRESH_CRON),
    )
    def portfolio_report(context: dg.AssetExecutionContext, dw: DwSettings) -> dg.MaterializeResult:
        settings = dw.load()
        # The portfolio spans exactly the clients its upstream gold assets are partitioned by.
        clients = context.instance.get_dynamic_partitions(CLIENTS_PARTITION_NAME)
        if not clients:
            raise dg.Failure(f"no '{CLIENTS_PARTITION_NAME}' partitions yet: nothing to report across")
        results = build_portfolio_gold(settings, clients)
        write_scope_reports(settings.reports_dir, results)
        meta = report_metadata(results, settings.reports_dir)
        meta["clients"] = ", ".join(results[0].clients)
        return dg.MaterializeResult(metadata=meta)

    return portfolio_report


def report_assets(model: StandardModel) -> list[dg.AssetsDefinition]:
    """The gold asset of each of the model's reports (validated against it: a report reading a table the model
    lacks fails here, naming the file and table), then `reports/client_reports` and `reports/portfolio`; none
    for a model without reports."""
    gold = [gold_asset(spec) for spec in load_reports(model)]
    if not gold:
        return []
    keys = [a.key for a in gold]
    return [*gold, client_reports_asset(model, keys), portfolio_asset(keys)]


@dg.definitions
def reports_definitions() -> dg.Definitions:
    return dg.Definitions(assets=report_assets(load_settings().standard_model()))
