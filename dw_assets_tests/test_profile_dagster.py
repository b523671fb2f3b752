"""The `profiling/compute_profile` asset: a real profile on Spark (Sail) at 1 and 2 cores, whose metadata shows
each job type's table, chart and recommendation, with the Databricks cluster types only as labelled
extrapolations of the measured core scaling."""
import json
from pathlib import Path

import dagster as dg

from dw_assets.defs.profiling import compute_profile
from dw_assets.resources import DwSettings


def test_compute_profile_asset_shows_table_chart_and_extrapolations(tmp_path):
    config = {"jobs": ["apply_bulk"], "engines": ["spark"], "cores": [1, 2], "scales": [1], "modes": ["alone"],
              "quick": True}
    result = dg.materialize([compute_profile], resources={"dw": DwSettings(home=str(tmp_path))},
                            run_config={"ops": {"profiling__compute_profile": {"config": config}}})
    assert result.success
    mat = result.asset_materializations_for_node("profiling__compute_profile")[0]
    meta = mat.metadata
    table = meta["apply_bulk"].value
    assert "| x1 | spark | 1 | alone | 3 |" in table and "| x1 | spark | 2 | alone | 3 |" in table
    assert "extrapolated" in table and "model: core scaling 1->2 cores" in table
    assert "data:image/png;base64," in table
    assert meta["recommendations_checked"].value == 1
    assert "bulk apply (x1): spark at" in meta["recommendations"].value
    profile = json.loads(Path(meta["json"].value).read_text())
    cells = profile["jobs"]["apply_bulk"]["cells"]
    measured = [c for c in cells if c["kind"] == "measured"]
    assert {c["cores"] for c in measured} == {1, 2} and all(c["sail_cpu_s"] > 0 for c in measured)
    extrapolated = [c for c in cells if c["kind"] == "extrapolated"]
    assert extrapolated and all(set(c["from_cells"]) == {m["id"] for m in measured} for c in extrapolated)
    assert Path(meta["html"].value).read_text().count("<svg") == 1
