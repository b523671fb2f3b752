"""The Dagster UI in a real browser, over data a short `dw demo` produced: the webserver (free port) answers,
GraphQL lists the assets, the client partitions and the check results, and headless Chromium screenshots of the
asset graph and of one client's checks land in test-artifacts/ (look at them).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from dw_assets.demo.dagster_processes import REPO_ROOT, DagsterProcesses
from dw_assets.settings import load_settings
from dw_assets.stack import Stack, StackConfig, find_free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
CLIENTS = ["client_001", "client_002"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def demo_env(home: Path, mariadb_port: int, kafka_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DW_") and k != "DAGSTER_HOME"}
    env.update(DW_HOME=str(home), DW_MARIADB_PORT=str(mariadb_port), DW_KAFKA_PORT=str(kafka_port))
    return env


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    payload = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"{url}/graphql", data=payload,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = json.loads(r.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


def screenshot(url: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        "--virtual-time-budget=15000", "--window-size=1600,1000", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=120)
    assert out.exists() and out.stat().st_size > 20_000, f"{out}: no screenshot or a blank page"


@pytest.fixture(scope="module")
def demo_home():
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed (/usr/bin/chromium): `apt-get install -y chromium`")
    # Short path: MariaDB's unix socket path must stay under 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="dwui"))
    env = demo_env(home, find_free_port(), find_free_port())
    try:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "dw"), "demo", "--duration", "20", "--no-ui",
             "--clients", str(len(CLIENTS)), "--rows-per-client", "500", "--rate", "200", "--summary-json", str(home / "summary.json")],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        yield home
    finally:
        Stack(StackConfig(home=home)).down()


@pytest.fixture(scope="module")
def ui_url(demo_home: Path):
    settings = load_settings(env={}, home=demo_home)
    ui = DagsterProcesses(settings, demo_home / "ui-test-logs")
    ui.start_webserver(find_free_port())
    try:
        ui.wait_webserver(timeout=240)
        assert ui.ui_url
        yield ui.ui_url
    finally:
        ui.stop()


def test_demo_summary_says_silver_equals_source(demo_home: Path):
    summary = json.loads((demo_home / "summary.json").read_text())
    assert summary["ok"] and [c["client"] for c in summary["clients"]] == CLIENTS
    assert all(c["silver_equals_source"] and c["files_landed"] > 0 for c in summary["clients"])


def test_graphql_shows_assets_partitions_and_check_results(ui_url: str):
    nodes = graphql(ui_url, "{ assetNodes { assetKey { path } } }")["assetNodes"]
    keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
    stages = {k.split("/")[0] for k in keys}
    assert {"cdc", "landing", "bronze", "silver", "gold", "reports"} <= stages, stages
    assert {"landing/landing_files", "silver/customers", "reports/client_reports"} <= keys

    node = graphql(ui_url, """query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) {
        ... on AssetNode { partitionKeys } } }""", {"k": {"path": ["silver", "customers"]}})["assetNodeOrError"]
    assert set(CLIENTS) <= set(node["partitionKeys"])

    mats = graphql(ui_url, """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) {
        ... on Asset { assetMaterializations(limit: 200) { partition } } } }""",
                   {"k": {"path": ["silver", "customers"]}})["assetOrError"]["assetMaterializations"]
    assert set(CLIENTS) <= {m["partition"] for m in mats}

    for client in CLIENTS:
        runs = graphql(ui_url, """query($k: AssetKeyInput!, $p: String) {
            assetCheckExecutions(assetKey: $k, checkName: "production_conforms_to_model", partition: $p, limit: 5) {
              status evaluation { success partition } } }""",
                       {"k": {"path": ["sources", "production_schema"]}, "p": client})["assetCheckExecutions"]
        assert runs, f"no check result recorded for {client}"
        assert runs[0]["evaluation"]["success"] and runs[0]["evaluation"]["partition"] == client


def test_screenshots_of_asset_graph_and_client_checks(ui_url: str):
    # Stage groups (cdc -> landing -> bronze -> silver -> gold -> reports), then one group's assets with their
    # check and partition status, one client's silver partition, and the schema checks' latest result.
    entries = graphql(ui_url, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
    [location] = [e["name"] for e in entries["workspaceOrError"]["locationEntries"]]
    screenshot(f"{ui_url}/asset-groups", ARTIFACTS / "ui-asset-graph.png")
    screenshot(f"{ui_url}/locations/{location}/asset-groups/silver", ARTIFACTS / "ui-silver-group.png")
    screenshot(f"{ui_url}/assets/silver/customers?view=partitions&partition={CLIENTS[0]}",
               ARTIFACTS / f"ui-{CLIENTS[0]}-silver-customers.png")
    screenshot(f"{ui_url}/assets/sources/production_schema?view=checks", ARTIFACTS / "ui-client-checks.png")
