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
