"""The landing benchmark runs end to end (small sizes here; `dw bench landing` runs the full 500k / 500 clients)."""
from __future__ import annotations

import pytest

from dw_assets.landing.bench import run_landing_bench


@pytest.mark.slow
def test_landing_bench_reports_throughput_next_to_the_bare_consumer(stack_settings):
    out = run_landing_bench(stack_settings, events=40_000, clients=4, sensor_clients=50)
    assert out["events"] == 40_000 and out["rows"] < out["events"]  # tombstones are not rows
    assert out["landing_events_per_s"] > 0 and out["bare_consume_events_per_s"] > 0
    assert 0 < out["landing_vs_bare"] <= 2
    assert out["sensor"]["clients"] == 50 and out["sensor"]["lagging_clients"] == 10
