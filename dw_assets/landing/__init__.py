"""Landing: CDC topics -> Parquet files in the Confluent S3 sink layout, exactly once per file, plus landing lag.

Plain Python, usable without Dagster; `dw_assets/defs/landing.py` wires it into an asset, a job and a sensor.
"""
from .flush import FlushPolicy
from .lag import ClientLag, PartitionLag, measure_lag
from .landing_file import LandedFile
from .store import LandingStore, open_store
from .writer import LandingHooks, LandingReport, LandingWriter, land_client

__all__ = [
    "ClientLag", "FlushPolicy", "LandedFile", "LandingHooks", "LandingReport", "LandingStore", "LandingWriter",
    "PartitionLag", "land_client", "measure_lag", "open_store",
]
