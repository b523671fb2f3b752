"""`dw bench reconcile`'s measurement on the session stack at a tiny size: the check passes on the pipeline's silver
and the bare reference queries count the same rows as the source holds."""
from __future__ import annotations

from dw_assets import db
from dw_assets.checks.bench import measure_reconcile, prepare_reconcile_bench
from dw_assets.identifiers import quote_qualified
from dw_assets.model import load_model
from dw_assets_tests.conftest import unique_client


def test_reconcile_bench_measures_a_passing_check_and_its_references(stack_settings, tmp_path):
    settings = stack_settings.with_overrides(lake_url=str(tmp_path / "lake"), landing_url=str(tmp_path / "landing"))
    client = unique_client("rcb")
    prepared = prepare_reconcile_bench(settings, rows=300, client=client)
    r = measure_reconcile(settings, client)
    with db.connection(settings) as conn, conn.cursor() as cur:
        total = 0
        for t in load_model().tables:
            cur.execute(f"SELECT COUNT(*) FROM {quote_qualified(client, t.name)}")
            total += cur.fetchone()[0]
    assert r["passed"] and r["rows"] == total > 0 and r["tables"] == len(load_model().tables)
    assert prepared["client"] == client
