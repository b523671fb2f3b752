"""The one place the apply step is dispatched by `settings.engine` (DW_ENGINE): every entry point (the ingest
pass, hence the Dagster ingest job and the ingest service; the per-client lake asset, onboarding, `dw lake apply`)
calls `apply_with_engine`.

`local`: the whole step in this process (`lakehouse.apply`). `spark`: the same landing read, bronze append and
manifest (steps 1-3, shared), then the set-based silver/history part on Spark Connect (`spark_apply`), both under
the client's apply lock, so one writer per client table holds on Sail too (it has no conflict detection).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pyarrow as pa

from dw_assets.lakehouse.apply import ApplyResult, apply_client, apply_files, apply_to_bronze
from dw_assets.lakehouse.apply_lock import apply_lock
from dw_assets.lakehouse.evolution import InformationSchemaSource, SourceSchema
from dw_assets.lakehouse.landing_files import LandingFile
from dw_assets.lakehouse.tables import ensure_client_tables
from dw_assets.model import StandardModel, load_model
from dw_assets.settings import Settings, SettingsError


def ensure_tables_with_engine(settings: Settings, client: str, model: StandardModel) -> list[str]:
    """Create the client's missing tables for the engine that will write them: on Spark without the properties
    Sail cannot write (change data feed), plus its tombstone and progress tables. Returns the URLs created."""
    created = []
    if settings.engine == "spark":
        from .spark_apply import ensure_spark_tables

        created = ensure_spark_tables(settings, client, model)
    return created + ensure_client_tables(settings, client, model)


def apply_with_engine(settings: Settings, client: str, model: StandardModel | None = None,
                      database: str | None = None, files: Sequence[LandingFile] | None = None,
                      source_schema: SourceSchema | None = None,
                      rows: Mapping[str, pa.Table] | None = None) -> ApplyResult:
    """Apply `client`'s new landing files (or just `files`) on the engine `settings.engine` names; `rows`: the
    rows of some of these files by key, as uploaded (the ingest service's hand-over, `apply_files`)."""
    if settings.engine != "spark":
        if files is not None or rows:
            return apply_files(settings, client, files, model, database=database, source_schema=source_schema,
                               rows=rows)
        return apply_client(settings, client, model, database=database, source_schema=source_schema)
    import time

    from .session import spark_session
    from .spark_apply import apply_client_spark, ensure_spark_tables

    model = model or load_model(settings.model_path)
    database = database or client
    with spark_session(settings) as spark, apply_lock(settings.home, client):
        started = time.perf_counter()
        # Created first without the properties Sail cannot write (the local engine's creation then finds them).
        created = ensure_spark_tables(settings, client, model)
        result = apply_to_bronze(settings, client, model, database, files, rows)
        result.created_tables = created + result.created_tables
        t0 = time.perf_counter()
        try:
            apply_client_spark(spark, settings, client, model, result=result,
                               source=source_schema or InformationSchemaSource(settings, database))
        except Exception as e:
            if "Unsupported table features" not in str(e):
                raise
            # A lake the local engine created (change data feed on): Sail 0.7.2 cannot write such tables.
            raise SettingsError(f"DW_ENGINE=spark: {client}'s lake tables need a feature this Spark cannot write "
                                f"({str(e).splitlines()[0]}): apply it with DW_ENGINE=local, or re-create its "
                                "tables under DW_ENGINE=spark") from None
        result.timings["silver"] = time.perf_counter() - t0
        result.seconds = time.perf_counter() - started
    return result
