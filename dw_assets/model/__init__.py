"""The standard data model: tables, columns, types and hints loaded from `standard_model.yaml`.

Other stages import from here: `load_model`, the dataclasses, `parse_type`/`arrow_type`, and `ddl` for schemas.
"""
from .model import (
    SHIPPED_MODEL_PATH,
    Column,
    ModelError,
    Reference,
    StandardModel,
    Table,
    TableOptions,
    WorkloadHints,
    load_model,
    parse_model,
)
from .types import TypeParseError, TypeSpec, arrow_type, parse_type

__all__ = [
    "SHIPPED_MODEL_PATH", "Column", "ModelError", "Reference", "StandardModel", "Table", "TableOptions",
    "TypeParseError", "TypeSpec", "WorkloadHints", "arrow_type", "load_model", "parse_model", "parse_type",
]
