"""Databricks through Pipes: the Spark engine's apply step as a Databricks task launched from Dagster.

`databricks_apply_task` is the task Databricks receives (the packaged `dw_assets/engine/databricks_job.py`, its
job parameters); `build_databricks_silver_assets` makes the per-client silver assets that submit it through
`PipesDatabricksServerlessClient` (or `PipesDatabricksClient` on a classic cluster) and record the
materializations the task reports back. A deployment on Databricks uses these in place of the local apply.
"""

from typing import Any

import dagster as dg

from dw_assets.model import StandardModel
from dw_assets.partitions import clients_partitions
from dw_assets.resources import DwSettings

JOB_FILE = "databricks_job.py"


class DatabricksSettingError(ValueError):
    """A workspace setting the task needs is missing; the message names it."""


def databricks_apply_task(client: str, lake_url: str, *, python_file: str, catalog: str,
                          model_path: str | None = None, create_tables: bool = True,
                          environment_key: str = "dw") -> Any:
    """The SubmitTask for one client: a serverless Python task running the job script with its parameters."""
    from databricks.sdk.service import jobs

    for name, value in (("python_file", python_file), ("catalog", catalog), ("lake_url", lake_url)):
        if not value:
            raise DatabricksSettingError(f"the Databricks task needs {name} (DW_DATABRICKS_* settings)")
    params = ["--client", client, "--lake-url", lake_url, "--catalog", catalog]
    if model_path:
        params += ["--model", model_path]
    if create_tables:  # Unity Catalog tables with the model's properties (engine/unity_catalog.py)
        params.append("--create-tables")
    return jobs.SubmitTask.from_dict({
        "task_key": f"dw_apply_{client}",
        "environment_key": environment_key,
        "spark_python_task": {"python_file": python_file, "parameters": params},
    })


def serverless_environment(wheel: str, environment_key: str = "dw") -> dict[str, Any]:
    """`submit_args` naming the serverless environment: the project's wheel and the Pipes client library."""
    from databricks.sdk.service import jobs

    return {"environments": [jobs.JobEnvironment.from_dict({
        "environment_key": environment_key, "spec": {"client": "2", "dependencies": [wheel, "dagster-pipes"]}})]}


def build_databricks_silver_assets(model: StandardModel, *, python_file: str, catalog: str, wheel: str,
                                   create_tables: bool = True, name: str = "databricks_silver") -> dg.AssetsDefinition:
    """Silver of every model table for one client partition, applied on Databricks."""
    specs = [dg.AssetSpec(["silver", t.name], kinds={"databricks", "delta"}, partitions_def=clients_partitions,
                          description=f"Current state of {t.name}, applied by the Spark engine on Databricks")
             for t in model.tables]

    @dg.multi_asset(name=name, specs=specs, can_subset=False)
    def _silver(context: dg.AssetExecutionContext, dw: DwSettings, databricks: dg.ResourceParam[Any]):
        settings = dw.load()
        client = context.partition_key
        task = databricks_apply_task(client, settings.lake_url, python_file=python_file, catalog=catalog,
                                     model_path=settings.model_path, create_tables=create_tables)
        return databricks.run(task=task, context=context, submit_args=serverless_environment(wheel)).get_results()

    return _silver
