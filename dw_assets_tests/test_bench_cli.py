"""`dw bench all --smoke` through the CLI: every stage in the JSON and the markdown table, every throughput figure
with a reference and a ratio. No thresholds: the machine is shared, the figures are what they are. Smoke sizes (a
tenth of --quick) keep it to a few minutes: the structure is what is tested here, not the figures."""
from __future__ import annotations

import json

import pytest

from dw_assets.bench.worker import STAGES
from dw_assets.cli import main


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_all_smoke_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setenv("DW_BENCH_SMOKE", "0")  # `--smoke` sets it in this process: restored afterwards
    out = tmp_path / "bench" / "latest.json"
    rc = main(["--home", str(tmp_path / "home"), "bench", "all", "--smoke", "--json", str(out)])
    result = json.loads(out.read_text())
    md = out.with_suffix(".md").read_text()
    assert result["smoke"] is True and "smoke run" in md
    stages = {s["stage"]: s for s in result["stages"]}
    assert set(stages) == set(STAGES)
    failed = {k: s["error"] for k, s in stages.items() if s["status"] == "failed"}
    assert rc == (1 if failed else 0)
    assert not failed, failed
    for key in ("cores", "memory_gb", "cpu", "versions", "commit", "date"):
        assert key in result["machine"]
    for name, s in stages.items():
        assert s["figures"], f"{name} has no figure (not even a 'not measured' line)"
        assert f"| {name} |" in md
        for f in s["figures"]:
            if f["status"] != "measured":
                assert f["reason"], f"{name}: {f['name']} not measured without a reason"
                continue
            # Counts (files after a replay) are deterministic: one run; the e2e stage is one sustained workload
            # (its percentiles, the service's peak RSS and CPU per 1,000 changes come from it); every other
            # timing has at least 3.
            assert len(f["runs"]) >= 3 or f["kind"] in ("latency", "count") or name == "e2e", \
                f"{name}: {f['name']} has {len(f['runs'])} runs"
            assert f["bound"], f"{name}: {f['name']} says nothing on what bounds it"
            if f["kind"] == "throughput":
                assert f["reference_name"] and f["reference_runs"], f"{name}: {f['name']} has no reference"
                assert f["ratio"] is not None, f"{name}: {f['name']} has no ratio"
        assert "mariadbd" in s["processes"] or s["status"] == "not available"
