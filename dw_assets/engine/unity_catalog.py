"""Unity Catalog tables for a client on Databricks: `<catalog>.<client schema>.<layer>_<table>`, created from the
model with the properties the local engine cannot honour (change data feed, `delta.columnMapping.mode`, the
reader/writer versions they need), as external tables at the lake paths the Spark apply writes.
"""
from __future__ import annotations

import pyarrow as pa

from dw_assets.lakehouse.paths import table_url
from dw_assets.lakehouse.tables import history_schema, silver_schema
from dw_assets.model import Table
from dw_assets.settings import Settings

from .apply_sql import bq


def spark_type(t: pa.DataType) -> str:
    """The Spark SQL type of a lake column type."""
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz else "TIMESTAMP_NTZ"
    for test, name in ((pa.types.is_boolean, "BOOLEAN"), (pa.types.is_int8, "TINYINT"), (pa.types.is_int16, "SMALLINT"),
                       (pa.types.is_int32, "INT"), (pa.types.is_int64, "BIGINT"), (pa.types.is_float32, "FLOAT"),
                       (pa.types.is_float64, "DOUBLE"), (pa.types.is_date32, "DATE"), (pa.types.is_string, "STRING"),
                       (pa.types.is_large_string, "STRING"), (pa.types.is_binary, "BINARY"),
                       (pa.types.is_large_binary, "BINARY")):
        if test(t):
            return name
    raise ValueError(f"no Spark SQL type for the lake type {t}")


def uc_properties(table: Table) -> dict[str, str]:
    props = table.options.delta_properties()
    if table.options.column_mapping != "none":  # column mapping needs reader 2 / writer 5
        props.update({"delta.minReaderVersion": "2", "delta.minWriterVersion": "5"})
    if table.options.change_data_feed:
        props.setdefault("delta.minWriterVersion", "4")
    return props


def create_table_statements(settings: Settings, catalog: str, client: str, table: Table) -> list[str]:
    """CREATE SCHEMA and CREATE TABLE IF NOT EXISTS for the client's silver (and history) of `table`."""
    out = [f"CREATE SCHEMA IF NOT EXISTS {bq(catalog)}.{bq(client)}"]
    layers = [("silver", silver_schema(table))] + ([("silver_history", history_schema(table))]
                                                   if table.options.scd2 else [])
    props = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(uc_properties(table).items()))
    for layer, schema in layers:
        cols = ", ".join(f"{bq(f.name)} {spark_type(f.type)}{'' if f.nullable else ' NOT NULL'}" for f in schema)
        location = table_url(settings, layer, client, table.name).replace("'", "")
        out.append(f"CREATE TABLE IF NOT EXISTS {bq(catalog)}.{bq(client)}.{bq(f'{layer}_{table.name}')} ({cols}) "
                   f"USING DELTA LOCATION '{location}' TBLPROPERTIES ({props})")
    return out
