"""Reports without a database: the SQL catalogue, the engine over a small synthetic lake (scopes, schema drift,
missing tables, both read paths), charts, the CLI and the benchmark at a tiny size.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from dw_assets import cli
from dw_assets.lakehouse.changes import qi
from dw_assets.lakehouse.paths import table_url
from dw_assets.model import load_model
from dw_assets.reports import charts, silver_source
from dw_assets.reports.bench import run_portfolio_bench
from dw_assets.reports.catalog import ReportDefinitionError, load_reports, parse_report, referenced_tables
from dw_assets.reports.engine import PORTFOLIO_SCOPE, NoSilverData, ReportEngine, Scope
from dw_assets.reports.gold import build_portfolio_gold, read_gold
from dw_assets.reports.synthetic_lake import write_synthetic_lake
from dw_assets.settings import Settings, load_settings

CLIENTS = ["alpha", "beta"]


@pytest.fixture(scope="module")
def lake_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("reports_units")
    s = load_settings(env={"DW_LAKE_URL": str(root / "lake"), "DW_REPORTS_DIR": str(root / "html")}, home=root)
    tables = sorted({t for r in load_reports() for t in r.silver_tables})
    write_synthetic_lake(s, CLIENTS, 4000, tables)
    return s


def spec_named(name: str):
    return next(r for r in load_reports() if r.name == name)


# ---- catalogue ------------------------------------------------------------------------------------------------


def test_referenced_tables_skip_ctes_and_find_subqueries():
    sql = """WITH a AS (SELECT * FROM orders o JOIN order_items i USING (order_id))
             SELECT * FROM a JOIN products p ON true WHERE p.x IN (SELECT 1 FROM payments)"""
    assert referenced_tables(sql) == {"orders", "order_items", "products", "payments"}


@pytest.mark.parametrize("text, error", [
    ("SELECT 1 FROM orders", "front matter"),
    ("/*---\ntitle: [unclosed\n---*/\nSELECT 1 FROM orders", "not valid YAML"),
    ("/*---\ntitle: x\ncolour: red\n---*/\nSELECT 1 FROM orders", "unknown front matter"),
    ("/*---\ntitle: x\n---*/\nSELECT * FROM invoices_archive", "not in model"),
    ("/*---\ntitle: x\n---*/\nSELECT 1", "reads no model table"),
    ("/*---\ntitle: x\n---*/\nSELEC nonsense", "syntax error"),
])
def test_bad_report_files_are_refused(tmp_path: Path, text: str, error: str):
    p = tmp_path / "bad_report.sql"
    p.write_text(text)
    with pytest.raises(ReportDefinitionError, match=error):
        parse_report(p, load_model())


def test_shipped_reports_parse():
    names = {r.name for r in load_reports()}
    assert {"daily_revenue", "customer_cohorts", "top_products", "payment_outcomes", "subscription_mrr"} <= names
    for r in load_reports():
        assert r.title and r.description and r.chart.get("kind") in charts.CHART_KINDS
        assert r.silver_tables and "billable" not in r.silver_tables  # CTE names are not lineage


# ---- engine -----------------------------------------------------------------------------------------------------


def test_client_and_portfolio_scopes_run_the_same_sql(lake_settings: Settings):
    spec = spec_named("daily_revenue")
    totals = []
    for client in CLIENTS:
        with ReportEngine(lake_settings, Scope.client(client)) as e:
            run = e.run(spec)
            totals.append(e.query("SELECT sum(total_amount - discount_amount) FROM orders "
                                  "WHERE status IN ('paid', 'shipped', 'delivered')").column(0)[0].as_py())
            assert run.table.num_rows > 0 and run.clients == (client,)
            assert run.newest_source_ts_ms is not None
    with ReportEngine(lake_settings, Scope.portfolio(CLIENTS)) as e:
        run = e.run(spec)
        assert e.query("SELECT DISTINCT client FROM orders ORDER BY 1").column(0).to_pylist() == CLIENTS
    assert sum(run.table.column("revenue").to_pylist()) == sum(totals)


def test_missing_columns_read_as_typed_nulls_and_missing_tables_as_empty(tmp_path: Path):
    fact = load_model().table("orders")  # tests may name the shipped model's tables
    s = load_settings(env={"DW_LAKE_URL": str(tmp_path / "lake")}, home=tmp_path)
    keys_only = pa.table({c.name: pa.array([1, 2], pa.int64()) for c in fact.key_columns})
    write_deltalake(table_url(s, "silver", "gamma", fact.name), keys_only)
    with ReportEngine(s, Scope.client("gamma")) as e:
        e.ensure_tables([fact.name, "payments"])
        described = {r["column_name"]: r["column_type"] for r in e.query(f"DESCRIBE {qi(fact.name)}").to_pylist()}
        assert described["total_amount"] == "DECIMAL(12,2)" and described["ordered_at"] == "TIMESTAMP"
        assert e.query(f"SELECT count(*), count(total_amount) FROM {qi(fact.name)}").to_pylist() == \
               [{"count_star()": 2, "count(total_amount)": 0}]
        assert e.query("SELECT count(*) AS n FROM payments").to_pylist() == [{"n": 0}]
    with ReportEngine(s, Scope.client("delta")) as e, pytest.raises(NoSilverData):
        e.run(load_reports()[0])


def test_direct_parquet_and_dataset_paths_agree(lake_settings: Settings, monkeypatch: pytest.MonkeyPatch):
    spec = spec_named("top_products")
    with ReportEngine(lake_settings, Scope.portfolio(CLIENTS)) as e:
        direct = e.run(spec).table
    monkeypatch.setattr(silver_source, "direct_parquet_files", lambda dt: None)  # force the Arrow dataset path
    with ReportEngine(lake_settings, Scope.portfolio(CLIENTS)) as e:
        assert e.run(spec).table.equals(direct)


def test_portfolio_gold_lives_apart_from_clients(lake_settings: Settings):
    results = build_portfolio_gold(lake_settings, CLIENTS, ["payment_outcomes"])
    assert results[0].url.endswith(f"gold/{PORTFOLIO_SCOPE}/payment_outcomes")
    back = read_gold(lake_settings, PORTFOLIO_SCOPE, "payment_outcomes")
    assert back.clients == tuple(CLIENTS) and back.table.num_rows == results[0].table.num_rows
    with pytest.raises(ValueError):
        Scope.portfolio([])


# ---- charts -----------------------------------------------------------------------------------------------------


def test_every_report_chart_draws(lake_settings: Settings):
    with ReportEngine(lake_settings, Scope.portfolio(CLIENTS)) as e:
        for spec in load_reports():
            table = e.run(spec).table
            svg = charts.draw(table, spec.chart, "svg", "test")
            png = charts.draw(table, spec.chart, "png")
            assert svg and b"<svg" in svg and png and png[:4] == b"\x89PNG", spec.name
            assert charts.draw(table.slice(0, 0), spec.chart) is None
    with pytest.raises(charts.ChartSpecError):
        charts.draw(pa.table({"a": [1]}), {"kind": "pie"})
    with pytest.raises(charts.ChartSpecError, match="does not have"):
        charts.draw(pa.table({"a": [1]}), {"kind": "line", "x": "a", "y": "b"})


# ---- CLI and benchmark ------------------------------------------------------------------------------------------


def test_cli_builds_named_clients_and_the_portfolio(lake_settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("DW_LAKE_URL", lake_settings.lake_url)
    monkeypatch.setenv("DW_REPORTS_DIR", lake_settings.reports_dir)
    argv = ["--home", str(lake_settings.home), "reports", "build", "--report", "top_products"]
    assert cli.main(argv + ["--client", "alpha", "--client", "beta"]) == 0
    out = capsys.readouterr().out
    assert "top_products" in out and PORTFOLIO_SCOPE in out
    root = Path(lake_settings.reports_dir)
    assert (root / "alpha" / "top_products.html").exists() and (root / PORTFOLIO_SCOPE / "top_products.html").exists()
    assert 'href="beta/top_products.html"' in (root / "index.html").read_text()
    assert cli.main(argv + ["--client", "alpha", "--report", "no_such_report"]) == 2
    assert cli.main(argv + ["--client", "Bad Name"]) == 2


def test_bench_reports_seconds_and_rate(tmp_path: Path):
    s = load_settings(env={}, home=tmp_path)
    out = run_portfolio_bench(s, order_rows=5000, clients=2)
    assert 4000 < out["order_rows"] < 6000 and out["seconds"] > 0 and out["rows_per_second"] > 0
    assert set(out["per_report_seconds"]) == {r.name for r in load_reports()}
    assert Path(out["lake"]).is_relative_to(tmp_path)
    again = run_portfolio_bench(s, order_rows=5000, clients=2)
    assert again["generate_seconds"] == 0  # the synthetic lake is reused
