"""`dw profile`: the Pareto frontier on hand-made points, recommendations only from measured medians of >= 3
runs, the price file's errors, and the quick profile CI runs (real subprocess runs of every job type)."""
import json
from pathlib import Path

import pytest

from dw_assets.cli import main
from dw_assets.profile.analysis import UnbackedRecommendation, summarize, verify
from dw_assets.profile.jobs import JOBS
from dw_assets.profile.pareto import pareto_frontier
from dw_assets.profile.prices import load_prices
from dw_assets.profile.runner import Run


def test_pareto_frontier_keeps_ties_and_drops_dominated_points():
    points = [
        ("fast_dear", 1.0, 10.0),
        ("tie_a", 2.0, 5.0), ("tie_b", 2.0, 5.0),  # exact tie: both stay
        ("same_latency_dearer", 2.0, 6.0),  # dominated by the tie (equal latency, higher cost)
        ("slow_cheap", 4.0, 1.0),
        ("same_cost_slower", 5.0, 1.0),  # dominated by slow_cheap (equal cost, higher latency)
        ("worse_on_both", 3.0, 7.0),
        ("fast_dear_twin_slower", 1.5, 10.0),
    ]
    assert pareto_frontier(points) == ["fast_dear", "tie_a", "tie_b", "slow_cheap"]
    assert pareto_frontier([]) == []
    assert pareto_frontier([("only", 1.0, 1.0)]) == ["only"]


def _run(engine: str, cores: int, index: int, wall: float, job: str = "apply_bulk") -> Run:
    return Run(job, engine, cores, 1, "alone", index, {}, wall_s=wall, cpu_s=wall * cores * 0.9,
               worker_cpu_s=wall, peak_rss_mb=100.0, bytes_read=1, bytes_written=1)


def test_recommendation_is_the_cheapest_near_the_fastest_and_backed_by_its_runs():
    prices = load_prices()
    runs = ([_run("local", 1, i, w) for i, w in enumerate([1.0, 1.2, 0.9])]  # median 1.0, cost of 1 core
            + [_run("local", 2, i, w) for i, w in enumerate([0.85, 0.9, 0.95])]  # faster, but 2 cores cost more
            + [_run("spark", 1, i, w) for i, w in enumerate([4.0, 4.4, 4.2])]
            + [_run("spark", 2, i, w) for i, w in enumerate([2.6, 2.4, 2.5])])
    profile = summarize(runs, {}, prices, slack=1.25)
    rec, = profile["jobs"]["apply_bulk"]["recommendations"]
    assert rec["cell"] == "apply_bulk/local/1c/x1/alone" and rec["wall_s"] == 1.0  # within 1.25x of 0.9, cheaper
    assert "cheaper than spark at 2 cores" in rec["text"]
    assert set(rec["frontier"]) == {"apply_bulk/local/1c/x1/alone", "apply_bulk/local/2c/x1/alone"}
    cells = {c["id"]: c for c in profile["jobs"]["apply_bulk"]["cells"]}
    assert cells["apply_bulk/local/2c/x1/alone"]["cost"] == pytest.approx(2 * 0.9 / 3600 * prices.vm.price_per_core_hour)
    # Databricks appears only extrapolated from Spark at 1 and 2 cores: serial share 2*2.5/4.2 - 1
    extrapolated = [c for c in cells.values() if c["kind"] == "extrapolated"]
    assert len(extrapolated) == len(prices.clusters) and all("Amdahl" in c["model"] for c in extrapolated)
    s = 2 * 2.5 / 4.2 - 1
    c4 = next(c for c in extrapolated if c["cores"] == 4)
    assert c4["wall_s"] == pytest.approx(4.2 * (s + (1 - s) / 4))
    assert verify(profile) == 1
    # A recommendation resting on two runs, or on a figure that is not its runs' median, is refused.
    cells["apply_bulk/local/1c/x1/alone"]["wall_s_runs"] = [1.0, 1.2]
    with pytest.raises(UnbackedRecommendation, match="2 run"):
        verify(profile)
    cells["apply_bulk/local/1c/x1/alone"]["wall_s_runs"] = [1.0, 1.2, 1.3]
    with pytest.raises(UnbackedRecommendation, match="median"):
        verify(profile)


def test_two_runs_per_cell_give_no_recommendation():
    profile = summarize([_run("local", 1, i, 1.0) for i in range(2)], {}, load_prices(), slack=1.25)
    assert profile["jobs"]["apply_bulk"]["recommendations"] == []


def test_bad_price_file_is_one_line_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "prices.yaml"
    bad.write_text("vm: {price_per_core_hour: -1}\n")
    assert main(["--home", str(tmp_path), "profile", "--quick", "--prices", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "price_per_core_hour must be a positive number" in err and str(bad) in err
    assert not (tmp_path / "profile").exists()  # nothing ran, nothing written
    assert main(["--home", str(tmp_path), "profile", "--quick", "--runs", "2"]) == 2
    assert "at least 3 runs" in capsys.readouterr().err


def test_quick_profile_recommends_only_from_measured_runs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--home", str(tmp_path), "profile", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    profile = json.loads((out / "profile.json").read_text())
    assert set(profile["jobs"]) == set(JOBS)
    for name, job in profile["jobs"].items():
        rec, = job["recommendations"]  # one scale in the quick profile
        cell = next(c for c in job["cells"] if c["id"] == rec["cell"])
        assert cell["kind"] == "measured" and cell["runs"] >= 3 and not cell["failed_runs"]
        own = [r for r in profile["runs"] if (r["job"], r["engine"], r["cores"], r["mode"]) ==
               (name, cell["engine"], cell["cores"], "alone")]
        assert sorted(r["wall_s"] for r in own) == sorted(cell["wall_s_runs"]) and len(own) >= 3
        assert all(r["cpu_s"] > 0 and r["peak_rss_mb"] > 0 and r["bytes_written"] > 0 for r in own)
        assert rec["text"] in printed and Path(out / f"{name}.svg").read_text().lstrip().startswith("<?xml")
        # Spark was not asked for: the Databricks rows say "not measured", they carry no figure
        assert all("wall_s" not in c for c in job["cells"] if c["engine"].startswith("databricks:"))
    assert verify(profile) == len(JOBS)
    page = (out / "profile.html").read_text()
    assert page.count("<svg") == len(JOBS) and "examples to replace" in page
    assert "recommendation(s) checked" in printed


def test_recorded_runs_are_repriced_without_running(tmp_path, capsys):
    from dataclasses import asdict

    journal = tmp_path / "runs.jsonl"
    runs = [_run("local", 1, i, w) for i, w in enumerate([1.0, 1.1, 0.9])] + \
           [_run("local", 2, i, w) for i, w in enumerate([0.5, 0.6, 0.55])]
    journal.write_text("".join(json.dumps(asdict(r)) + "\n" for r in runs))
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: EUR\nvm: {price_per_core_hour: 3.6}\n")
    out = tmp_path / "out"
    assert main(["--home", str(tmp_path), "profile", "--from-runs", str(journal), "--prices", str(prices),
                 "--out", str(out)]) == 0
    profile = json.loads((out / "profile.json").read_text())
    assert profile["recorded"] and len(profile["runs"]) == 6 and not (out / "work").exists()
    rec, = profile["jobs"]["apply_bulk"]["recommendations"]
    # 2 cores at 0.55 s cost 2 x 0.55 s x 3.6/3600 = 0.0011 EUR; 1 core at 1.0 s, 0.001 EUR but 1.8x slower
    assert rec["cell"] == "apply_bulk/local/2c/x1/alone" and rec["cost"] == pytest.approx(0.0011)
    assert "EUR" in capsys.readouterr().out
    assert main(["--home", str(tmp_path), "profile", "--from-runs", str(tmp_path / "missing.jsonl")]) == 2
