"""The Databricks task: apply one client's committed bronze changes to silver with the Spark engine, reporting
each table's materialization back to Dagster through Pipes.

Run by Databricks as a `spark_python_task` (the Pipes bootstrap parameters arrive as CLI arguments, the context
and messages through a Unity Catalog Volume); run the same way locally against Sail with `--spark-remote`.
Job parameters: --client, --lake-url, --catalog (Unity Catalog tables <catalog>.<client schema>.<table>).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from dagster_pipes import (
    PipesCliArgsParamsLoader,
    PipesUnityCatalogVolumesContextLoader,
    PipesUnityCatalogVolumesMessageWriter,
    open_dagster_pipes,
)


def unity_catalog_name(catalog: str, client: str, layer: str, table: str) -> str:
    """<catalog>.<client schema>.<layer>_<table>, each part backquoted (the source system's metadata layout)."""
    from dw_assets.engine.apply_sql import bq

    return ".".join(bq(p) for p in (catalog, client, f"{layer}_{table}"))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--client", required=True)
    p.add_argument("--lake-url", required=True, help="the lake's root (s3://… or abfss://… on Databricks)")
    p.add_argument("--catalog", default="main", help="Unity Catalog catalog of the client schemas")
    p.add_argument("--create-tables", action="store_true",
                   help="create the Unity Catalog schema and tables (with CDF and column mapping) first")
    p.add_argument("--model", default=None, help="the model file (default: the shipped standard model)")
    p.add_argument("--spark-remote", default=None, help="sc://host:port; default: the cluster's own session")
    args, _pipes = p.parse_known_args(argv)  # the Pipes bootstrap arguments are read by PipesCliArgsParamsLoader
    return args


def _session(remote: str | None):
    from dw_assets.engine.session import ensure_spark_home

    ensure_spark_home()
    if remote:
        from pyspark.sql.connect.session import SparkSession

        return SparkSession.builder.remote(remote).create()
    from pyspark.sql import SparkSession as ClusterSession  # on Databricks: the cluster's session

    return ClusterSession.builder.getOrCreate()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from dw_assets.model import load_model
    from dw_assets.settings import Settings

    from dw_assets.engine.spark_apply import apply_client_spark

    with open_dagster_pipes(context_loader=PipesUnityCatalogVolumesContextLoader(),
                            message_writer=PipesUnityCatalogVolumesMessageWriter(),
                            params_loader=PipesCliArgsParamsLoader()) as pipes:
        if not args.client.replace("_", "").isalnum():
            raise SystemExit(f"--client {args.client!r} is not a valid client schema name")
        spark = _session(args.spark_remote)
        try:
            spark.conf.set("spark.sql.session.timeZone", "UTC")
            settings = Settings(lake_url=args.lake_url)
            model = load_model(args.model) if args.model else load_model()
            if args.create_tables:
                from dw_assets.engine.unity_catalog import create_table_statements

                for t in model.tables:
                    for statement in create_table_statements(settings, args.catalog, args.client, t):
                        spark.sql(statement).collect()
            pipes.log.info(f"applying {args.client} on {args.lake_url} (catalog {args.catalog})")
            result = apply_client_spark(spark, settings, args.client, model)
        finally:
            spark.stop()
        for t in model.tables:
            applied = result.tables.get(t.name)
            pipes.report_asset_materialization(
                asset_key=f"silver/{t.name}",
                metadata={"events": applied.events if applied else 0,
                          "merged": applied.silver.metrics.get("offered", 0) if applied else 0,
                          "truncated": bool(applied and applied.silver.metrics.get("truncated")),
                          "unity_catalog_table": unity_catalog_name(args.catalog, args.client, "silver", t.name)},
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
