"""The apply benchmark runs and reports its figure next to the bare-MERGE reference (small sizes here; the
full 1,000,000 x 100,000 run is marked slow)."""
from __future__ import annotations

import pytest

from dw_assets.lakehouse.bench import run_apply_bench
from dw_assets.settings import Settings


def test_apply_bench_small():
    r = run_apply_bench(Settings(), rows=20_000, changes=2_000)
    assert r["silver_inserted"] == 400 and r["silver_deleted"] > 0
    assert r["changes_per_s"] > 0 and r["reference_changes_per_s"] > 0 and r["ratio_apply_to_reference"] > 0


@pytest.mark.slow
def test_apply_bench_full():
    r = run_apply_bench(Settings())
    assert r["rows"] == 1_000_000 and r["changes"] == 100_000
    assert r["silver_inserted"] == 20_000


def test_microbatch_bench_counts_commits():
    """One client micro-batch over 8 tables (3 with history): one bronze and one manifest commit, then one per
    changed silver and history table, whatever the table size."""
    from dw_assets.lakehouse.microbatch_bench import run_microbatch_bench

    r = run_microbatch_bench(Settings(), batches=2, rows=2_000, large_rows=4_000)
    assert r["changes"] == 200 and r["tables"] == 8
    assert r["small"]["commits"] == r["large"]["commits"] == [2 + 8 + 3] * 2
    assert r["small"]["median_s"] > 0 and r["reference"]["merge_s"] > 0
