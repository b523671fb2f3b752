"""The Dagster code location: every object under `dw_assets/defs/`, loaded by convention."""
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(project_root=Path(__file__).parent.parent)
