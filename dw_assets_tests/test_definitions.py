"""The Dagster code location loads, follows the project's conventions, and `dg check defs` is clean."""
import subprocess
import sys
from pathlib import Path

import dagster as dg

from dw_assets.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_in_process_executor():
    d = defs()
    assert d.executor is not None and d.executor.name == "in_process"
    for spec in d.resolve_all_asset_specs():
        assert spec.group_name and spec.group_name != "default", f"{spec.key} has no stage group"
        assert spec.description, f"{spec.key} has no description"
        assert spec.owners, f"{spec.key} has no owner"
        assert spec.kinds, f"{spec.key} has no kinds"


def test_dg_check_defs_is_clean():
    dg_bin = Path(sys.executable).parent / "dg"
    out = subprocess.run([str(dg_bin), "check", "defs"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All definitions loaded successfully" in out.stdout + out.stderr
    for line in (out.stdout + out.stderr).splitlines():
        assert "SupersessionWarning" not in line and "DeprecationWarning" not in line, line
