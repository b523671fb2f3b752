"""The Dagster code location: every object under `dw_assets/defs/`, loaded by convention, plus global policy."""
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # The multiprocess executor re-imports the code location per step (~10 s each on 2 cores).
    return dg.Definitions.merge(loaded, dg.Definitions(executor=dg.in_process_executor))
