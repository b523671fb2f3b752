"""Where one client's data lives outside MariaDB and Kafka, and its removal on `offboard --drop-data`.

Lake: `<lake>/{bronze,silver,silver_history,gold,meta}/<client>/`; landing: `<landing>/topics/<prefix>.<db>.*/`;
reports: `<reports_dir>/<client>/`. Local paths and s3:// alike go through pyarrow filesystems.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

from dw_assets.contracts import client_topic_prefix
from dw_assets.lakehouse.paths import LAYERS, filesystem, join
from dw_assets.settings import Settings

# Lake directories named after the client: the layers, the gold tables (reports) and the bookkeeping tables.
LAKE_AREAS: tuple[str, ...] = (*LAYERS, "gold", "meta")


@dataclass
class ClientDataLocations:
    lake_dirs: list[str] = field(default_factory=list)
    landing_dirs: list[str] = field(default_factory=list)
    report_dirs: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return self.lake_dirs + self.landing_dirs + self.report_dirs

    def __bool__(self) -> bool:
        return bool(self.all)


def _is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def _landing_topic_dirs(settings: Settings, database: str) -> list[str]:
    fs, root = filesystem(settings, settings.landing_url)
    prefix = client_topic_prefix(settings.kafka.topic_prefix, database)
    entries = fs.get_file_info(pafs.FileSelector(f"{root}/topics", allow_not_found=True))
    # The dead-letter topics (`<topic>.dlq`) share the prefix and go with the client too.
    return sorted(join(settings.landing_url, "topics", e.base_name) for e in entries
                  if e.type == pafs.FileType.Directory and e.base_name.startswith(prefix))


def existing_data(settings: Settings, client: str, database: str) -> ClientDataLocations:
    """The client's directories that exist now (URLs in the settings' form: local paths or s3://)."""
    out = ClientDataLocations()
    for area in LAKE_AREAS:
        url = join(settings.lake_url, area, client)
        fs, path = filesystem(settings, url)
        if _is_dir(fs, path):
            out.lake_dirs.append(url)
    out.landing_dirs = _landing_topic_dirs(settings, database)
    reports = Path(settings.reports_dir) / client
    if settings.reports_dir and reports.is_dir():
        out.report_dirs.append(str(reports))
    return out


def drop_data(settings: Settings, client: str, database: str) -> ClientDataLocations:
    """Delete every directory `existing_data` finds; returns what was deleted."""
    found = existing_data(settings, client, database)
    for url in found.lake_dirs + found.landing_dirs:
        fs, path = filesystem(settings, url)
        fs.delete_dir(path)
    for path in found.report_dirs:
        pafs.LocalFileSystem().delete_dir(path)
    return found
