"""Onboardings started at once on a fresh Dagster home: the instance is created once (one Alembic head), every
process adds its partition, and the instance opens cleanly afterwards."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dw_assets.onboarding import dagster_partitions
from dw_assets.settings import Settings
from dw_assets.stack.stack import REPO_ROOT

# Each process waits for the go file, then does what onboarding's partition step and report step do.
CHILD = """
import sys, time
from pathlib import Path
from dw_assets.onboarding import dagster_partitions
from dw_assets.settings import Settings
home, client, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
s = Settings(home=Path(home).parent, dagster_home=home)
dagster_partitions.add_partition(s, client)
dagster_partitions.report_materializations(s, client, {("reports", "client_reports"): {"pages": 1}})
"""


@pytest.mark.slow
def test_concurrent_first_use_of_a_fresh_dagster_home(tmp_path: Path):
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")  # as `dw stack up` prepares it
    go = tmp_path / "go"
    clients = [f"c{i}" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(home), c, str(go)], stderr=subprocess.PIPE, text=True)
             for c in clients]
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    for db in home.rglob("*.db"):
        with sqlite3.connect(db) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" in tables:
                assert con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1, db
    s = Settings(home=tmp_path, dagster_home=str(home))
    assert all(dagster_partitions.has_partition(s, c) for c in clients)
