"""Databricks through Pipes: the task Dagster submits (spec, job parameters, Pipes bootstrap), run as Databricks
would run it - the very job script, here on Spark-on-Sail - and the materializations it reports read back.

The workspace client is real; only its REST edge (`ApiClient.do`) is replaced by a fake workspace whose Unity
Catalog Volume is a local directory and whose `runs/submit` runs the submitted Python task."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import dagster as dg
import pytest
from dagster_databricks.pipes import PipesDatabricksServerlessClient, PipesUnityCatalogVolumesMessageReader
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound

from dw_assets.defs.databricks import DatabricksSettingError, build_databricks_silver_assets, databricks_apply_task
from dw_assets.engine.session import read_delta_arrow, spark_session
from dw_assets.resources import DwSettings
from dw_assets.settings import Settings
from dw_assets_tests.lakehouse_support import tiny_model
from dw_assets_tests.test_lakehouse_apply import scenario

JOB = Path(__file__).resolve().parents[1] / "dw_assets" / "engine" / "databricks_job.py"


class FakeWorkspaceRest:
    """The Files and Jobs REST endpoints the Pipes client calls."""

    def __init__(self, spark_remote: str):
        self.spark_remote = spark_remote
        self.submitted: list[dict] = []
        self.task_output = ""

    def do(self, method, path=None, url=None, query=None, headers=None, body=None, raw=False, files=None,
           data=None, auth=None, response_headers=None):
        if path.endswith("/jobs/runs/submit"):
            self.submitted.append(body)
            return self._run(body)
        if path.endswith("/jobs/runs/get"):
            return {"run_id": 7, "run_page_url": "https://dbc.example/jobs/runs/7",
                    "state": {"life_cycle_state": "TERMINATED", "result_state": self.result}}
        kind, rest = path.split("/fs/", 1)[1].split("/", 1)  # /api/2.0/fs/{files|directories}/<path>
        local = Path("/" + unquote(rest))
        if method == "PUT" and kind == "directories":
            local.mkdir(parents=True, exist_ok=True)
        elif method == "PUT":
            local.write_bytes(data.read())
        elif method == "GET" and kind == "files":
            if not local.exists():
                raise NotFound(f"no file {local}")
            return {"contents": open(local, "rb"), "content-length": str(local.stat().st_size)}
        elif method == "GET":
            if not local.is_dir():
                raise NotFound(f"no directory {local}")
            return {"contents": [{"path": str(p), "name": p.name, "is_directory": p.is_dir()} for p in local.iterdir()]}
        elif method == "DELETE" and kind == "directories":
            local.rmdir()
        elif method == "DELETE":
            local.unlink()
        return {}

    def _run(self, body: dict) -> dict:
        (task,) = body["tasks"]
        t = task["spark_python_task"]
        done = subprocess.run([sys.executable, t["python_file"], *t["parameters"], "--spark-remote", self.spark_remote],
                              capture_output=True, text=True, timeout=300)
        self.task_output = done.stdout + done.stderr
        self.result = "SUCCESS" if done.returncode == 0 else "FAILED"
        return {"run_id": 7}


def test_apply_runs_as_a_databricks_task_and_reports_materializations(sail, tmp_path: Path, monkeypatch):
    local = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    scenario(local, tmp_path)
    (client,) = [p.name for p in (tmp_path / "lake" / "bronze").iterdir()]
    lake = tmp_path / "uc_lake"  # the workspace's lake: bronze as landed, silver left to Databricks
    shutil.copytree(tmp_path / "lake" / "bronze", lake / "bronze")
    model_file = tmp_path / "model.yaml"
    model = tiny_model(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    (home / "stack.json").write_text('{"lake": {"url": "%s"}}' % lake)

    rest = FakeWorkspaceRest(sail)
    workspace = WorkspaceClient(host="https://dbc.example", token="dapi-test")
    workspace.api_client.do = rest.do  # the REST edge; everything above it is the real SDK
    volume = str(tmp_path / "Volumes" / "main" / "dw" / "pipes")
    Path(volume).mkdir(parents=True)
    pipes = PipesDatabricksServerlessClient(
        client=workspace, volume_path=volume, poll_interval_seconds=0.1,
        message_reader=PipesUnityCatalogVolumesMessageReader(client=workspace, volume_path=volume, interval=0.2))
    # No Unity Catalog DDL on Sail: it cannot write change-data-feed tables (the DDL is tested on its own below).
    assets = build_databricks_silver_assets(model, python_file=str(JOB), catalog="main", create_tables=False,
                                            wheel="/Volumes/main/dw/wheels/dw_assets-0.1.0-py3-none-any.whl")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("clients", [client])
    monkeypatch.setenv("DW_MODEL_PATH", str(model_file))
    result = dg.materialize([assets], instance=instance, partition_key=client,
                            resources={"dw": DwSettings(home=str(home)), "databricks": pipes})
    assert result.success, rest.task_output

    (submitted,) = rest.submitted
    (task,) = submitted["tasks"]
    params = task["spark_python_task"]["parameters"]
    assert task["task_key"] == f"dw_apply_{client}" and task["environment_key"] == "dw"
    assert params[:6] == ["--client", client, "--lake-url", str(lake), "--catalog", "main"]
    assert "--dagster-pipes-context" in params and "--dagster-pipes-messages" in params
    assert submitted["environments"][0]["spec"]["dependencies"][0].endswith(".whl")

    mats = {m.asset_key.to_user_string(): m for m in result.asset_materializations_for_node("databricks_silver")}
    assert set(mats) == {"silver/accounts", "silver/entries"}
    acc = mats["silver/accounts"].metadata
    assert acc["unity_catalog_table"].value == f"`main`.`{client}`.`silver_accounts`"
    assert acc["truncated"].value is True and acc["merged"].value > 0
    assert all(m.partition == client for m in mats.values())
    # What the task wrote: silver as the local engine has it.
    with spark_session(remote=sail) as spark:
        rows = read_delta_arrow(spark, str(lake / "silver" / client / "accounts"))
    assert sorted(rows["account_id"].to_pylist()) == [100, 102]


def test_missing_workspace_setting_is_named_and_the_default_task_creates_tables():
    with pytest.raises(DatabricksSettingError, match="python_file"):
        databricks_apply_task("c1", "s3://lake", python_file="", catalog="main")
    task = databricks_apply_task("c1", "s3://lake", python_file="/Workspace/dw/databricks_job.py", catalog="main")
    assert "--create-tables" in task.spark_python_task.parameters


def test_unity_catalog_tables_carry_the_properties_the_local_engine_cannot(tmp_path: Path):
    from dw_assets.engine.unity_catalog import create_table_statements

    model = tiny_model(tmp_path)
    accounts = next(t for t in model.tables if t.name == "accounts")
    settings = Settings(lake_url="s3://lake/root")
    schema, silver, history = create_table_statements(settings, "main", "acme", accounts)
    assert schema == "CREATE SCHEMA IF NOT EXISTS `main`.`acme`"
    assert silver.startswith("CREATE TABLE IF NOT EXISTS `main`.`acme`.`silver_accounts` (`account_id` BIGINT NOT NULL, "
                             "`displayName` STRING, `balance` DECIMAL(14,2) NOT NULL, `opened_at` TIMESTAMP_NTZ NOT NULL, "
                             "`updated_at` TIMESTAMP")
    assert "LOCATION 's3://lake/root/silver/acme/accounts'" in silver
    for prop in ("'delta.enableChangeDataFeed' = 'true'", "'delta.columnMapping.mode' = 'name'",
                 "'delta.minReaderVersion' = '2'", "'delta.minWriterVersion' = '5'"):
        assert prop in silver and prop in history
    assert "`main`.`acme`.`silver_history_accounts`" in history and "`is_current` BOOLEAN NOT NULL" in history
