"""The benchmark harness without services: figures, ratios, percentiles, the result files, child RSS."""
from __future__ import annotations

import json
import sys

from dw_assets.bench.e2e import _overlap, _rate_between
from dw_assets.bench.harness import (
    Figure, StageResult, markdown_table, percentile, render_markdown, run_child, write_results,
)
from dw_assets.bench.runner import merge_dagster
from dw_assets.bench.stages import onboarding_figures


def _machine() -> dict:
    return {"date": "2026-11-23 00:00 UTC", "cores": 2, "memory_gb": 23.5, "cpu": "cpu", "commit": "abc",
            "python": "3.11", "mariadb": "10.11", "versions": {"dagster": "1.13.27"}, "load_average_start": [1.0]}


def test_figure_median_ratio_and_round_trip():
    f = Figure("cdc", "capture", "rows/s", [3.0, 1.0, 2.0], "ref", [4.0, 4.0, 5.0], bound="one thread")
    assert f.median == 2.0 and f.reference_median == 4.0 and f.ratio == 0.5
    d = f.as_dict()
    assert d["min"] == 1.0 and d["max"] == 3.0 and d["ratio"] == 0.5
    assert Figure.from_dict(json.loads(json.dumps(d))) == f


def test_not_measured_figure_has_a_reason_line():
    f = Figure.not_measured("onboard", "first report", "s", "module missing")
    assert f.ratio is None and f.as_dict()["median"] is None
    assert "not measured" in markdown_table([f], _machine()) and "module missing" in markdown_table([f], _machine())


def test_percentile_interpolates():
    assert percentile([], 50) is None
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile(list(range(101)), 95) == 95


def test_window_helpers():
    assert _overlap(0, 10, 5, 20) == 0.5
    assert _overlap(3, 3, 0, 5) == 1.0 and _overlap(3, 3, 4, 5) == 0.0
    assert _rate_between([(0, 0), (10, 100)], 2, 4) == 10


def test_result_files_carry_machine_figures_processes_and_notes(tmp_path):
    stage = StageResult("cdc", [Figure("cdc", "capture", "rows/s", [1, 2, 3], "ref", [2, 2, 2], bound="b")],
                        notes=["a note"], processes={"bench worker": 100.0, "mariadbd": 90.0})
    failed = StageResult("scale", status="failed", error="boom")
    result = {"command": "dw bench", "quick": True, "machine": _machine(), "seconds": 12.0,
              "stages": [stage.as_dict(), failed.as_dict()]}
    js, md = write_results(result, tmp_path / "out" / "latest.json")
    assert md == tmp_path / "out" / "latest.md"
    loaded = json.loads(js.read_text())
    assert loaded["stages"][0]["figures"][0]["ratio"] == 1.0
    text = md.read_text()
    assert "| cdc | capture (rows/s, ↑) | 2.00 |" in text
    assert "bench worker 100" in text and "a note" in text and "boom" in text
    assert text == render_markdown(loaded)


def test_child_peak_rss_comes_from_wait4():
    r = run_child([sys.executable, "-c", "b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                  timeout=60)
    assert r.returncode == 0 and not r.timed_out
    assert r.peak_rss_mb is not None and r.peak_rss_mb >= 150


def test_child_timeout_kills_the_process():
    r = run_child([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert r.timed_out and r.returncode != 0


def test_dagster_figures_take_the_continuous_percentile_as_reference():
    cont = StageResult("e2e", [Figure("e2e", "freshness commit → silver p50 (x)", "s", [2, 3, 4], "idle", [1, 1, 1],
                                      extra={"key": "silver_s_p50"})])
    dag = StageResult("e2e", [Figure("e2e", "freshness dagster p50", "s", [20, 30, 40],
                                     extra={"reference_key": "silver_s_p50"})], processes={"dagster-daemon": 700.0})
    merge_dagster(cont, dag)
    f = cont.figures[-1]
    assert f.reference_runs == [2, 3, 4] and f.ratio == 10
    assert cont.processes["dagster mode: dagster-daemon"] == 700.0


def test_onboarding_dict_is_adapted_or_reported():
    runs = [{"first_client": {"seconds_to_first_report": s, "total_seconds": 6.0,
                              "steps": {"partition": 1.0, "snapshot": 1.0, "apply": 0.5}},
             "batch": {"clients": 5, "clients_per_minute": 10 + s}} for s in (3.0, 4.0, 5.0)]
    r = onboarding_figures(runs, {"rows": 1000, "batch": 5})
    assert [f.median for f in r.figures] == [4.0, 14.0]
    assert r.figures[0].reference_median == 1.5 and r.figures[1].reference_median == 10.0
    unknown = onboarding_figures([{"x": 1}], {"rows": 1000, "batch": 5})
    assert not unknown.figures and "not mapped" in unknown.notes[0]


def test_update_merges_stages_in_order_and_records_the_rerun():
    from dw_assets.bench.runner import merge_into

    def run(stages, date):
        return {"quick": False, "command": "dw bench", "machine": {**_machine(), "date": date},
                "stages": [StageResult(s, seconds=10.0).as_dict() for s in stages]}

    merged = merge_into(run(["cdc", "scale"], "d1"), run(["scale", "apply"], "d2"))
    assert [s["stage"] for s in merged["stages"]] == ["cdc", "apply", "scale"]
    assert merged["machine"]["date"] == "d1" and merged["updates"][0]["stages"] == ["apply", "scale"]
    assert "Re-run and merged: apply, scale (d2" in render_markdown(merged)


def test_report_freshness_is_read_from_the_instance_and_unrefreshed_markers_are_censored(tmp_path):
    import time
    from types import SimpleNamespace

    import dagster as dg

    from dw_assets.bench.e2e import report_latencies

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    instance.add_dynamic_partitions("clients", ["a", "b"])

    @dg.asset(key=["reports", "client_reports"], partitions_def=dg.DynamicPartitionsDefinition(name="clients"))
    def client_reports() -> None:
        return None

    before = time.time()
    assert dg.materialize([client_reports], instance=instance, partition_key="a").success
    instance.dispose()
    covered = SimpleNamespace(client="a", committed_at=before - 5, seen_at=before - 2)
    other_client = SimpleNamespace(client="b", committed_at=before - 5, seen_at=before - 2)
    after_refresh = SimpleNamespace(client="a", committed_at=time.time() + 5, seen_at=time.time() + 6)
    unseen = SimpleNamespace(client="a", committed_at=before - 5, seen_at=None)
    latencies, censored = report_latencies(str(tmp_path), [covered, other_client, after_refresh, unseen])
    assert len(latencies) == 1 and latencies[0][0] == covered.committed_at
    assert 5 <= latencies[0][1] < 5 + (time.time() - before) + 1
    assert censored == 2
