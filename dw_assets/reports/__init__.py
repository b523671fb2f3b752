"""Reports: gold tables computed from silver with SQL over DuckDB, per client and across clients (portfolio),
rendered as static HTML with charts. `catalog` finds the reports (one .sql file each), `engine` runs them,
`gold` writes them to the lake, `render` writes the HTML; `build` strings the steps together for the CLI.
"""
from .catalog import ReportSpec, load_reports
from .gold import PORTFOLIO_SCOPE, GoldResult, build_client_gold, build_portfolio_gold, gold_url, read_gold

__all__ = ["PORTFOLIO_SCOPE", "GoldResult", "ReportSpec", "build_client_gold", "build_portfolio_gold", "gold_url",
           "load_reports", "read_gold"]
