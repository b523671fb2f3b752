"""Parity of the report engines: on one silver (built by the real apply from landing files, with updates and
deletes), `dw reports build` under DW_ENGINE=spark (Sail) writes the same gold, row for row and type for type,
as the local DuckDB engine, per client and for the portfolio; for the shipped model and for a model of the test's
own with a report of its own."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.lakehouse.tables import SOURCE_TS
from dw_assets.model import StandardModel, load_model
from dw_assets.reports.build import build_reports
from dw_assets.reports.catalog import load_reports
from dw_assets.reports.engine import PORTFOLIO_SCOPE
from dw_assets.reports.gold import build_client_gold, build_portfolio_gold, read_gold
from dw_assets.reports.synthetic_lake import TableGenerator, expected_row_counts
from dw_assets.settings import Settings, load_settings
from dw_assets_tests.debezium_encoding import Modes, encode
from dw_assets_tests.lakehouse_support import KEYS, TINY_MODEL, account, entry

NO_SOURCE = StaticSourceSchema({})
CLIENTS = ("north", "south")


def _settings(tmp_path: Path, html: str, **env: str) -> Settings:
    return load_settings(env={"DW_LAKE_URL": str(tmp_path / "lake"), "DW_LANDING_URL": str(tmp_path / "landing"),
                              "DW_REPORTS_DIR": str(tmp_path / html), **env}, home=tmp_path)


def _land_generated(settings: Settings, client: str, model: StandardModel, seed: int) -> None:
    """Every model table of `client` as Debezium-encoded creates, then a batch that updates every 10th row (with
    the next row's values) and deletes every 13th: MERGE rewrites files, as in production."""
    gen = TableGenerator(np.random.default_rng(seed), dict(expected_row_counts(model, 400)))
    feed = LandingFeed(settings, client, {t.name: list(t.primary_key) for t in model.tables})
    for table in model.tables:  # parents first: children's keys derive from them
        rows = [{c.name: encode(c.type, r[c.name], Modes()) for c in table.columns}
                for r in gen.table(table).drop_columns([SOURCE_TS]).to_pylist()]
        feed.write(table.name, feed.events(table.name, [("c", r) for r in rows]))
        keys = set(table.primary_key)
        changes = [("u", {**{k: v for k, v in rows[i + 1].items() if k not in keys},
                          **{k: rows[i][k] for k in keys}}) for i in range(0, len(rows) - 1, 10)]
        changes += [("d", rows[i]) for i in range(5, len(rows), 13)]
        feed.write(table.name, feed.events(table.name, changes))


def _gold(settings: Settings, model: StandardModel, scopes: list[str]) -> dict[tuple[str, str], pa.Table]:
    return {(scope, spec.name): read_gold(settings, scope, spec.name, model).table
            for scope in scopes for spec in load_reports(model)}


def _rows(t: pa.Table) -> list[tuple]:
    return sorted((tuple(r.values()) for r in t.to_pylist()), key=repr)


def _build(settings: Settings, model: StandardModel, pages: bool) -> None:
    """`dw reports build` (gold and pages) or, where pages would only cost time, the gold of every scope."""
    if pages:
        built = build_reports(settings, list(CLIENTS), model=model)
        assert not built.skipped and built.index is not None
        assert len(built.pages) == (len(CLIENTS) + 1) * len(load_reports(model))
        return
    for client in CLIENTS:
        build_client_gold(settings, client, model=model)
    build_portfolio_gold(settings, CLIENTS, model=model)


def _assert_same_gold(tmp_path: Path, sail: str, model: StandardModel, pages: bool) -> dict[tuple[str, str], pa.Table]:
    scopes = [*CLIENTS, PORTFOLIO_SCOPE]
    local = _settings(tmp_path, "html_local")
    _build(local, model, pages)
    expected = _gold(local, model, scopes)
    spark = _settings(tmp_path, "html_spark", DW_ENGINE="spark", DW_SPARK_REMOTE=sail)
    _build(spark, model, pages)  # the same calls: the engine comes from the settings
    got = _gold(spark, model, scopes)
    # Both builds wrote the same gold tables: the Spark build's is the second commit of each.
    assert {read_gold(spark, scope, name, model).version for scope, name in expected} == {1}
    for key, table in expected.items():
        assert got[key].schema == table.schema, key
        assert _rows(got[key]) == _rows(table), key
    return expected


def test_shipped_reports_give_the_same_gold_on_spark(sail, tmp_path: Path):
    model = load_model()
    settings = _settings(tmp_path, "html")
    for i, client in enumerate(CLIENTS):
        _land_generated(settings, client, model, seed=i)
        assert apply_client(settings, client, model, source_schema=NO_SOURCE).ok
    gold = _assert_same_gold(tmp_path, sail, model, pages=False)
    assert len(gold) == 3 * len(load_reports(model)) == 15
    assert all(t.num_rows for t in gold.values())  # every report has rows to compare
    clients = set(gold[(PORTFOLIO_SCOPE, "top_products")]["client"].to_pylist())
    assert clients == set(CLIENTS)


BALANCES_SQL = """/*---
title: Balances by level
---*/
WITH totals AS (
    SELECT e.client, e.account_id, sum(e.amount) AS entered, count(*) AS entries
    FROM entries AS e
    GROUP BY e.client, e.account_id
)
SELECT
    a.level,
    CAST(date_trunc('month', a.opened_at) AS DATE) AS opened_month,
    count(*) AS accounts,
    count(DISTINCT (a.client, a.active)) AS client_flags,
    sum(a.balance) AS balance,
    coalesce(sum(t.entered), 0) AS entered,
    CAST(CAST(sum(a.balance) AS DOUBLE) / count(*) AS DECIMAL(14, 2)) AS avg_balance,
    round(100.0 * CAST(sum(t.entries) AS DOUBLE) / sum(sum(t.entries)) OVER (), 2) AS share_of_entries_pct
FROM accounts AS a
LEFT JOIN totals AS t ON t.client = a.client AND t.account_id = a.account_id
GROUP BY a.level, CAST(date_trunc('month', a.opened_at) AS DATE)
ORDER BY a.level
"""


def test_a_models_own_report_gives_the_same_gold_on_spark(sail, tmp_path: Path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "balances.sql").write_text(BALANCES_SQL)
    (tmp_path / "model.yaml").write_text(TINY_MODEL + "reports: reports\n")
    model = load_model(tmp_path / "model.yaml")
    settings = _settings(tmp_path, "html")
    for n, client in enumerate(CLIENTS):
        feed = LandingFeed(settings, client, KEYS)
        feed.write("accounts", feed.events("accounts", [
            ("c", account(i, f"{i * (n + 2)}.{i % 100:02d}", level="ab"[i % 2], active=int(i % 3 == 0),
                         opened_at=f"2024-0{1 + i % 3}-02T03:04:05.123456")) for i in range(1, 40)]))
        feed.write("entries", feed.events("entries", [("c", entry(i % 39 + 1, i, f"{i}.{i % 7}5")) for i in range(80)]))
        feed.write("accounts", feed.events("accounts", [("u", account(3, "0.05", level="b")), ("d", account(4))]))
        assert apply_client(settings, client, model, source_schema=NO_SOURCE).ok
    gold = _assert_same_gold(tmp_path, sail, model, pages=True)
    portfolio = gold[(PORTFOLIO_SCOPE, "balances")]
    assert sum(portfolio["accounts"].to_pylist()) == 2 * 38
