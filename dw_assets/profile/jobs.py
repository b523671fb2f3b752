"""The job types `dw profile` measures, each with its data prepared once per scale (not measured), the per-run
setup in the worker (not measured) and the measured part, on the local engine or Spark (Spark Connect).

Apply jobs use the benchmark models of the lakehouse stage (no table of the user's model is named here); the
report jobs run the model's own report SQL over a synthetic silver lake of the model's shape.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from dw_assets.settings import Settings

CLIENT = "profile_client"
REPORT_CLIENTS = 10
ENGINES = ("local", "spark")


@dataclass(frozen=True)
class JobType:
    name: str
    title: str
    what: str  # one line: what a run does, for the table's caption
    base_sizes: dict[str, int]  # at scale 1; `--quick` takes a tenth

    def sizes(self, scale: float) -> dict[str, int]:
        return {k: max(1, int(v * scale)) for k, v in self.base_sizes.items()}


JOBS: dict[str, JobType] = {j.name: j for j in (
    JobType("apply_microbatch", "apply micro-batch",
            "one client batch of changes over 8 tables (3 with SCD2) into loaded silver: the ingest service's unit",
            {"rows_per_table": 10_000, "changes": 200}),
    JobType("apply_bulk", "bulk apply", "inserts then updates of random keys into an empty silver table",
            {"rows": 20_000, "updates": 2_000}),
    JobType("scd2_history", "SCD2 history", "the bulk apply on a table that keeps SCD2 history",
            {"rows": 20_000, "updates": 2_000}),
    JobType("client_reports", "client reports",
            "every report of the model for one client (gold tables: queries plus Delta writes)",
            {"fact_rows": 200_000}),
    JobType("portfolio_reports", "portfolio reports", "every report of the model across all clients",
            {"fact_rows": 200_000}),
)}


def _settings(home: Path, lake: Path, landing: Path | None = None) -> Settings:
    return Settings(home=home, lake_url=str(lake), landing_url=str(landing or home / "landing"),
                    reports_dir=str(home / "html"))


def _bulk_model(scd2: bool):
    from dw_assets.lakehouse.bench import BENCH_MODEL
    from dw_assets.model import parse_model

    raw = copy.deepcopy(BENCH_MODEL)
    raw["tables"][0]["options"]["scd2"] = scd2
    return parse_model(raw, source="<profile-bulk>")


def _model_for(job: str, model_path: str | None):
    if job == "apply_microbatch":
        from dw_assets.lakehouse.microbatch_bench import micro_model

        return micro_model()
    if job in ("apply_bulk", "scd2_history"):
        return _bulk_model(job == "scd2_history")
    from dw_assets.model import load_model

    return load_model(model_path)


def _apply_local(settings: Settings, model) -> None:
    from dw_assets.lakehouse.apply import apply_client
    from dw_assets.lakehouse.evolution import StaticSourceSchema

    r = apply_client(settings, CLIENT, model, source_schema=StaticSourceSchema({}))
    if not r.ok:
        raise RuntimeError(f"apply failed: {r.failed}")


def _done(base: Path, part: str) -> bool:
    return (base / f"{part}.done").exists()


def _mark(base: Path, part: str, sizes: dict[str, int]) -> None:
    (base / f"{part}.done").write_text(json.dumps(sizes))


# --- preparation (once per job, scale; in the profiling process) -------------------------------------------

def prepare(job: str, base: Path, sizes: dict[str, int], spark=None, model_path: str | None = None) -> str | None:
    """Write the job's input under `base` (reused when already there); with `spark`, also the Spark runs' input.
    Returns why the job cannot run (e.g. the model has no reports), else None."""
    base.mkdir(parents=True, exist_ok=True)
    model = _model_for(job, model_path)
    if job in ("client_reports", "portfolio_reports"):
        return _prepare_reports(base, sizes, model)
    if not _done(base, "local"):
        (_prepare_microbatch if job == "apply_microbatch" else _prepare_bulk)(base, sizes, model)
        _mark(base, "local", sizes)
    if spark is not None and job == "apply_microbatch" and not _done(base, "spark"):
        from dw_assets.engine.spark_apply import apply_client_spark

        # Silver as the Spark engine left it after the load; the Spark apply of a batch reads the whole bronze.
        apply_client_spark(spark, _settings(base, base / "spark_loaded"), CLIENT, model,
                           bronze_settings=_settings(base, base / "loaded", base / "landing"))
        _mark(base, "spark", sizes)
    return None


def _prepare_bulk(base: Path, sizes: dict[str, int], model) -> None:
    from dw_assets.contracts import data_topic
    import numpy as np

    from dw_assets.lakehouse.bench import _events, _write

    s = _settings(base, base / "bronze", base / "landing")
    t = model.tables[0].name
    topic = data_topic(s.kafka.topic_prefix, CLIENT, t)
    rows, updates = sizes["rows"], sizes["updates"]
    _write(s, topic, _events(np.arange(rows), "c", 1_000, topic, 0, CLIENT, 1, snapshot=False, table=t), 0)
    ids = np.random.default_rng(2).integers(0, rows, updates)
    _write(s, topic, _events(ids, "u", 10_000_000, topic, rows, CLIENT, 3, snapshot=False, table=t), rows)
    _apply_local(s, model)  # the bronze the Spark runs read (the Spark engine's input)


def _prepare_microbatch(base: Path, sizes: dict[str, int], model) -> None:
    from dw_assets.contracts import data_topic
    from dw_assets.lakehouse.bench import _events, _write
    from dw_assets.lakehouse.microbatch_bench import _batch
    import numpy as np

    s = _settings(base, base / "loaded", base / "landing")
    rows = sizes["rows_per_table"]
    offsets: dict[str, int] = {}
    for t in model.tables:
        topic = data_topic(s.kafka.topic_prefix, CLIENT, t.name)
        _write(s, topic, _events(np.arange(rows), "r", 1_000, topic, 0, CLIENT, 11, snapshot=True, table=t.name), 0)
        offsets[topic] = rows
    _apply_local(s, model)
    _batch(s, model, CLIENT, 0, rows, sizes["changes"], offsets, 11)
    # The same lake with the batch applied: its bronze holds load + batch, what a Spark run applies from.
    shutil.copytree(base / "loaded", base / "with_batch")
    _apply_local(replace(s, lake_url=str(base / "with_batch")), model)


def _prepare_reports(base: Path, sizes: dict[str, int], model) -> str | None:
    from dw_assets.reports.catalog import load_reports
    from dw_assets.reports.synthetic_lake import write_synthetic_lake

    specs = load_reports(model)
    if not specs:
        return f"model {model.version} has no reports"
    tables = sorted({t for s in specs for t in s.silver_tables})
    write_synthetic_lake(_settings(base, base / "lake"), report_clients(), sizes["fact_rows"], tables, model)
    return None


def report_clients() -> list[str]:
    return [f"profile_{i:02d}" for i in range(1, REPORT_CLIENTS + 1)]


# --- one run (in the worker process) -----------------------------------------------------------------------

def setup_run(job: str, engine: str, base: Path, work: Path, model_path: str | None) -> Callable[[Any], dict]:
    """Everything a run needs before the clock starts; returns the measured part, called with the Spark
    session (None for the local engine)."""
    model = _model_for(job, model_path)
    work.mkdir(parents=True, exist_ok=True)
    if job in ("apply_bulk", "scd2_history"):
        if engine == "local":
            s = _settings(work, work / "lake", base / "landing")
            return lambda spark: (_apply_local(s, model), {})[1]
        target, bronze = _settings(work, work / "lake"), _settings(base, base / "bronze", base / "landing")
        return lambda spark: _spark_apply(spark, target, model, bronze)
    if job == "apply_microbatch":
        src = "loaded" if engine == "local" else "spark_loaded"
        shutil.copytree(base / src, work / "lake")
        if engine == "local":
            s = _settings(work, work / "lake", base / "landing")
            return lambda spark: (_apply_local(s, model), {})[1]
        target, bronze = _settings(work, work / "lake"), _settings(base, base / "with_batch", base / "landing")
        return lambda spark: _spark_apply(spark, target, model, bronze)
    # Reports read the shared synthetic silver; gold of a client and of the portfolio are separate tables.
    from dw_assets.reports.engine import Scope

    s = _settings(work, base / "lake")
    clients = report_clients()
    scope = Scope.client(clients[0]) if job == "client_reports" else Scope.portfolio(clients)
    return lambda spark: _reports(s, scope, model, engine, spark)


def _reports(settings: Settings, scope, model, engine: str, spark) -> dict:
    """Every report of the model for `scope` on `engine` (the Spark one on the worker's session), written to gold."""
    from dw_assets.reports.engine import open_report_engine
    from dw_assets.reports.gold import select_reports, write_gold

    rows = 0
    with open_report_engine(settings, scope, model, engine=engine, session=spark) as runner:
        for spec in select_reports(None, model):
            rows += write_gold(settings, runner.run(spec)).table.num_rows
    return {"gold_rows": rows}


def _spark_apply(spark, target: Settings, model, bronze: Settings) -> dict:
    from dw_assets.engine.spark_apply import apply_client_spark

    r = apply_client_spark(spark, target, CLIENT, model, bronze_settings=bronze)
    return {"events": sum(t.events for t in r.tables.values())}


def runnable(job: str, engine: str) -> str | None:
    """Why `job` cannot run on `engine` here (None: it can)."""
    if engine == "spark" and importlib.util.find_spec("pyspark") is None:
        return "the Spark Connect client (pyspark-client) is not installed"
    return None
