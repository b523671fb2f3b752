"""Reports against the source: gold figures equal the same figures computed in MariaDB, the portfolio is the sum
of its clients, and the HTML pages exist and contain the tables.
"""
from __future__ import annotations

import html
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from dw_assets.reports.build import build_reports
from dw_assets.reports.gold import PORTFOLIO_SCOPE, GoldResult, read_gold
from dw_assets.reports.render import display_rows, format_value
from dw_assets.settings import Settings

from .test_reports_support import (BILLABLE, IN_BILLABLE, reports_settings, seeded_clients,  # noqa: F401 - fixtures
                                   source_query)

@pytest.fixture(scope="module")
def built(reports_settings: Settings, seeded_clients: dict[str, int]) -> dict[str, dict[str, GoldResult]]:
    summary = build_reports(reports_settings, sorted(seeded_clients))
    assert not summary.skipped
    return {scope: {r.name: r for r in results} for scope, results in summary.results.items()}


def rows(result: GoldResult) -> list[dict]:
    return result.table.to_pylist()


def test_daily_revenue_matches_source(reports_settings, seeded_clients, built):
    client = sorted(seeded_clients)[0]
    expected = {(d, cur): (n, rev) for d, cur, n, rev in source_query(reports_settings, client, f"""
        SELECT DATE(ordered_at), currency, COUNT(*), SUM(total_amount - discount_amount)
        FROM orders WHERE status {IN_BILLABLE} GROUP BY DATE(ordered_at), currency""", BILLABLE)}
    got = {(r["order_date"], r["currency"]): (r["orders"], r["revenue"]) for r in rows(built[client]["daily_revenue"])}
    assert len(expected) > 100
    assert got == expected


def test_cohort_sizes_match_source(reports_settings, seeded_clients, built):
    client = sorted(seeded_clients)[1]
    expected = dict(source_query(reports_settings, client, f"""
        SELECT DATE_FORMAT(first_order, '%%Y-%%m-01'), COUNT(*) FROM (
            SELECT o.customer_id, MIN(o.ordered_at) AS first_order
            FROM orders o JOIN customers c ON c.customer_id = o.customer_id
            WHERE o.status {IN_BILLABLE} GROUP BY o.customer_id) f
        GROUP BY 1""", BILLABLE))
    got = {r["cohort_month"].isoformat(): r["cohort_size"] for r in rows(built[client]["customer_cohorts"])
           if r["months_since_first"] == 0}
    assert len(expected) > 12 and got == expected
    # Every later month of a cohort has at most the cohort's customers.
    assert all(0 < r["active_customers"] <= r["cohort_size"] for r in rows(built[client]["customer_cohorts"]))


def test_top_products_match_source(reports_settings, seeded_clients, built):
    client = sorted(seeded_clients)[0]
    per_currency: dict[str, list[tuple[int, Decimal]]] = defaultdict(list)
    for cur, pid, rev in source_query(reports_settings, client, f"""
            SELECT o.currency, i.product_id, SUM(i.line_total) AS revenue
            FROM order_items i JOIN orders o ON o.order_id = i.order_id
            WHERE o.status {IN_BILLABLE} GROUP BY o.currency, i.product_id
            ORDER BY o.currency, revenue DESC, i.product_id""", BILLABLE):
        per_currency[cur].append((pid, rev))
    got: dict[str, list[tuple[int, Decimal]]] = defaultdict(list)
    for r in rows(built[client]["top_products"]):
        got[r["currency"]].append((r["product_id"], r["revenue"]))
    assert {c: v[:10] for c, v in per_currency.items()} == dict(got)
    for cur, products in per_currency.items():
        top = next(r for r in rows(built[client]["top_products"]) if r["currency"] == cur)
        total = sum(r for _, r in products)
        assert top["share_pct"] == pytest.approx(float(100 * products[0][1] / total), abs=0.01)


def test_payment_counts_match_source(reports_settings, seeded_clients, built):
    client = sorted(seeded_clients)[1]
    expected = {(m, c): (n, ok, bad) for m, c, n, ok, bad in source_query(reports_settings, client, """
        SELECT p.method, p.currency, COUNT(*), SUM(p.status = 'captured'), SUM(p.status = 'failed')
        FROM payments p JOIN orders o ON o.order_id = p.order_id GROUP BY p.method, p.currency""")}
    got = {(r["method"], r["currency"]): (r["payments"], r["succeeded"], r["failed"])
           for r in rows(built[client]["payment_outcomes"])}
    assert got == expected


def _sum_by(results: list[GoldResult], key: tuple[str, ...], measures: tuple[str, ...]) -> dict:
    """Sum `measures` by `key`; a key part `col=value` keeps only rows with that value."""
    where = dict(k.split("=") for k in key if "=" in k)
    key = tuple(k.split("=")[0] for k in key)
    out: dict = defaultdict(lambda: [0] * len(measures))
    for res in results:
        for r in rows(res):
            if any(str(r[c]) != v for c, v in where.items()):
                continue
            acc = out[tuple(r[k] for k in key)]
            for i, m in enumerate(measures):
                acc[i] += r[m] or 0
    return {k: tuple(v) for k, v in out.items()}


@pytest.mark.parametrize("report, key, measures", [
    # Rolling and lagged figures are left out: a client has rows only on days it sold, so its window sums
    # miss days on which only other clients sold; they are exact for the portfolio, not additive.
    ("daily_revenue", ("order_date", "currency"), ("orders", "revenue", "units", "customers", "new_customers")),
    ("customer_cohorts", ("cohort_month", "months_since_first"), ("active_customers", "orders")),
    # A cohort's size repeats on all its rows, but a client has a row only for months its customers ordered.
    ("customer_cohorts", ("cohort_month", "months_since_first=0"), ("cohort_size",)),
    ("payment_outcomes", ("method", "currency"), ("payments", "succeeded", "failed", "refunded", "pending",
                                                   "captured_amount", "refunded_amount", "recovered")),
    ("subscription_mrr", ("month", "currency"), ("active_subscriptions", "mrr", "new_mrr", "churned_mrr",
                                                  "churned_subscriptions")),
])
def test_portfolio_is_the_sum_of_clients(seeded_clients, built, report, key, measures):
    clients = [built[c][report] for c in sorted(seeded_clients)]
    portfolio = built[PORTFOLIO_SCOPE][report]
    assert portfolio.clients == tuple(sorted(seeded_clients))
    assert _sum_by([portfolio], key, measures) == _sum_by(clients, key, measures)


def test_portfolio_top_product_is_the_best_client_product(seeded_clients, built):
    portfolio = {r["currency"]: r for r in rows(built[PORTFOLIO_SCOPE]["top_products"]) if r["revenue_rank"] == 1}
    best: dict[str, dict] = {}
    for c in seeded_clients:
        for r in rows(built[c]["top_products"]):
            if r["revenue_rank"] == 1 and (r["currency"] not in best or r["revenue"] > best[r["currency"]]["revenue"]):
                best[r["currency"]] = r
    assert {k: (v["client"], v["product_id"]) for k, v in portfolio.items()} == \
           {k: (v["client"], v["product_id"]) for k, v in best.items()}


def test_gold_tables_read_back_with_freshness(reports_settings, seeded_clients, built):
    client = sorted(seeded_clients)[0]
    back = read_gold(reports_settings, client, "daily_revenue")
    assert back.table.equals(built[client]["daily_revenue"].table)
    assert back.newest_source_ts_ms == seeded_clients[client]
    assert back.lag_seconds is not None and 60 <= back.lag_seconds < 600
    assert back.table.column_names[0] == "client"
    assert Path(back.url).is_relative_to(Path(reports_settings.lake_url) / "gold" / client)
    # The portfolio's freshness is its newest client's.
    assert read_gold(reports_settings, PORTFOLIO_SCOPE, "daily_revenue").newest_source_ts_ms == \
           max(seeded_clients.values())


def test_html_reports_contain_their_tables(reports_settings, seeded_clients, built):
    root = Path(reports_settings.reports_dir)
    index = (root / "index.html").read_text()
    for scope, results in built.items():
        for name, res in results.items():
            page = root / scope / f"{name}.html"
            assert f'href="{scope}/{name}.html"' in index
            text = page.read_text()
            assert "<svg" in text and "<table>" in text, page
            shown, total = display_rows(res)
            assert text.count("<tr>") == shown.num_rows + 1 and total == res.table.num_rows
            for row in (shown.to_pylist()[0], shown.to_pylist()[-1]):  # pages may reorder and cap long tables
                for v in row.values():
                    assert html.escape(format_value(v)) in text, (page, v)
    client = sorted(seeded_clients)[0]
    top = rows(built[client]["top_products"])[0]
    assert format_value(top["revenue"]) in (root / client / "top_products.html").read_text()
    assert "Newest source change included" in (root / PORTFOLIO_SCOPE / "daily_revenue.html").read_text()
