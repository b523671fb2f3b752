"""Read a client's silver Delta tables (local path or s3://) for reconciliation and freshness.

Locations and opening come from `dw_assets.lakehouse.paths`; the bookkeeping columns are recognised from the
candidates below (the lakehouse's own names first), so a renamed or added marker needs a change here only.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, QueryBuilder

from dw_assets.lakehouse import paths
from dw_assets.lakehouse.tables import SOURCE_TS
from dw_assets.settings import Settings

# Bookkeeping columns in silver rows (never part of the source comparison). Silver deletes rows for real
# today; the soft-delete and SCD2 "current" markers are honoured should a table ever keep them.
TS_COLUMNS = (SOURCE_TS, "_dw_ts_ms", "source_ts_ms")
DELETED_COLUMNS = ("_dw_deleted", "_dw_is_deleted", "__deleted")  # soft-deleted rows when true
CURRENT_COLUMNS = ("_dw_is_current", "_dw_current")  # SCD2 history: only current rows count


def silver_uri(settings: Settings, client: str, table: str) -> str:
    return paths.table_url(settings, "silver", client, table)


def storage_options(settings: Settings, uri: str) -> dict[str, str] | None:
    return paths.storage_options(settings, uri)


def open_silver(settings: Settings, client: str, table: str) -> DeltaTable | None:
    """The client's silver table, or None if it was never written."""
    return paths.open_table(settings, silver_uri(settings, client, table))


def first_present(names: tuple[str, ...], schema_names: list[str]) -> str | None:
    return next((n for n in names if n in schema_names), None)


def read_current_rows(dt: DeltaTable, columns: list[str]) -> pa.Table:
    """The live rows of a silver table (soft-deleted and superseded SCD2 rows dropped), only `columns`."""
    names = [f.name for f in dt.schema().fields]
    deleted = first_present(DELETED_COLUMNS, names)
    current = first_present(CURRENT_COLUMNS, names)
    wanted = list(dict.fromkeys(columns + [c for c in (deleted, current) if c]))
    table = _read(dt, wanted)
    if deleted:
        table = table.filter(pc.invert(pc.fill_null(table[deleted], False)))
    if current:
        table = table.filter(pc.fill_null(table[current], True))
    return table.select(columns)


def _read(dt: DeltaTable, columns: list[str]) -> pa.Table:
    # Field notes: pyarrow readers return all NULLs for column-mapping `name` tables; DataFusion reads them.
    if dt.metadata().configuration.get("delta.columnMapping.mode", "none") != "none":
        cols = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
        return QueryBuilder().register("t", dt).execute(f"SELECT {cols} FROM t").read_all()
    return paths.read_table(dt, columns=columns)


def max_applied_ts_ms(dt: DeltaTable) -> int | None:
    """The newest source ts_ms applied to this table (from its bookkeeping column), None if unknown/empty."""
    names = [f.name for f in dt.schema().fields]
    ts = first_present(TS_COLUMNS, names)
    if ts is None:
        return None
    value = pc.max(_read(dt, [ts])[ts]).as_py()
    return int(value) if value is not None else None
