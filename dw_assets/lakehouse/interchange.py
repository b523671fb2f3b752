"""Delta schemas every Spark engine can read back, whatever wrote the files.

deltalake's MERGE, DELETE and UPDATE run on DataFusion, which writes strings and binaries as Arrow view types
(`string_view`/`binary_view`, recorded in each Parquet file's ARROW:schema); appends keep plain `string`. Sail
0.7.2 reads a view column into a nullable Delta column, but refuses it for a NOT NULL one (`Cannot cast column
'x' from 'Utf8View' (physical) to 'Utf8' (logical)`); Databricks' readers ignore the Arrow hint. The lake
therefore declares string and binary columns nullable: NOT NULL stays enforced by the source database (silver
mirrors it) and by the model's checks, and every engine reads every file.
"""
from __future__ import annotations

import pyarrow as pa


def _is_stringlike(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_string_view(t) or pa.types.is_binary_view(t))


def spark_readable(field: pa.Field) -> pa.Field:
    """`field`, made nullable if it is a string or binary (see the module docstring)."""
    return field.with_nullable(True) if _is_stringlike(field.type) else field
