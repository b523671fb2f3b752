"""Where the lake's tables live and how to open them, for local directories and s3:// alike.

Every reader (apply, checks, reports, Dagster metadata) goes through `open_table`/`read_delta` so that storage
options and URL joining are decided in one place.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, Sequence

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import DeltaTable

from dw_assets.settings import S3Settings, Settings

Layer = Literal["bronze", "silver", "silver_history"]
LAYERS: tuple[Layer, ...] = ("bronze", "silver", "silver_history")


def is_s3(url: str) -> bool:
    return url.startswith("s3://") or url.startswith("s3a://")


def join(base: str, *parts: str) -> str:
    """Join URL/path segments; local bases become absolute paths (deltalake resolves relative ones oddly)."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base).resolve().joinpath(*parts))


def table_url(settings: Settings, layer: Layer, client: str, table: str) -> str:
    """`<lake>/<layer>/<client>/<table>`."""
    if layer not in LAYERS:
        raise ValueError(f"unknown lake layer {layer!r}: one of {', '.join(LAYERS)}")
    return join(settings.lake_url, layer, client, table)


BRONZE_EVENTS = "_events"  # not a model table name: those are plain identifiers without a leading underscore


def bronze_url(settings: Settings, client: str) -> str:
    """`<lake>/bronze/<client>/_events`: the client's one bronze table, partitioned by `_dw_table`."""
    return join(settings.lake_url, "bronze", client, BRONZE_EVENTS)


def layer_table(settings: Settings, layer: Layer, client: str, table: str) -> tuple[DeltaTable | None, pa.compute.Expression | None]:
    """The Delta table holding `layer`/`client`/`table` and the filter selecting the table's rows in it: bronze
    is one table per client (the partition `_dw_table`), except in a lake not yet migrated to it."""
    if layer == "bronze":
        dt = open_table(settings, bronze_url(settings, client))
        if dt is not None:
            return dt, pads.field("_dw_table") == table
    return open_table(settings, table_url(settings, layer, client, table)), None


def meta_url(settings: Settings, client: str, name: str) -> str:
    """`<lake>/meta/<client>/<name>`: the client's bookkeeping tables (manifest, progress, tombstones)."""
    return join(settings.lake_url, "meta", client, name)


def model_meta_url(settings: Settings) -> str:
    """`<lake>/meta/standard_model`: the model rows every client's tables were created from."""
    return join(settings.lake_url, "meta", "standard_model")


def storage_options(settings: Settings, url: str) -> dict[str, str] | None:
    return settings.s3.storage_options() if is_s3(url) else None


def table_exists(settings: Settings, url: str) -> bool:
    return DeltaTable.is_deltatable(url, storage_options=storage_options(settings, url))


def open_table(settings: Settings, url: str, version: int | None = None) -> DeltaTable | None:
    """The Delta table at `url` (optionally at a past version), or None when there is none yet."""
    if not table_exists(settings, url):
        return None
    return DeltaTable(url, version=version, storage_options=storage_options(settings, url))


def read_delta(settings: Settings, layer: Layer, client: str, table: str, version: int | None = None,
               columns: Sequence[str] | None = None, filter: pa.compute.Expression | None = None) -> pa.Table:
    """Read one lake table (optionally at a past version) into Arrow; the helper checks and reports use."""
    dt, where = layer_table(settings, layer, client, table)
    if dt is None:
        raise FileNotFoundError(f"no Delta table at {table_url(settings, layer, client, table)}")
    if version is not None:
        dt.load_as_version(version)
    if where is not None:
        filter = where if filter is None else where & filter
    return read_table(dt, columns=columns, filter=filter)


def read_table(dt: DeltaTable, columns: Sequence[str] | None = None,
               filter: pa.compute.Expression | None = None) -> pa.Table:
    """Read a DeltaTable through its pyarrow dataset (file pruning from the filter, deletion vectors n/a here)."""
    ds = dt.to_pyarrow_dataset()
    return ds.to_table(columns=list(columns) if columns is not None else None, filter=filter)


def filesystem(settings: Settings, url: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for listing and reading landing files."""
    if is_s3(url):
        return _s3_filesystem(settings.s3), url.split("://", 1)[1].rstrip("/")
    return pafs.LocalFileSystem(), str(Path(url).resolve())


@functools.lru_cache(maxsize=8)
def _s3_filesystem(s3: S3Settings) -> pafs.S3FileSystem:
    """One client per S3 configuration and process (thread-safe): the apply stats log entries per table and
    batch (`table_cache`), and a new client per call costs more than the request."""
    endpoint = s3.endpoint_url or None
    scheme = "https"
    if endpoint and "://" in endpoint:
        scheme, endpoint = endpoint.split("://", 1)
    return pafs.S3FileSystem(access_key=s3.access_key_id, secret_key=s3.secret_access_key, region=s3.region,
                             endpoint_override=endpoint, scheme=scheme)
