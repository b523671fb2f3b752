import dagster as dg

from dw_assets.resources import DwSettings


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"dw": DwSettings()})
