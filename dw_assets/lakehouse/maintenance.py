"""Lake maintenance: compaction (optionally Z-ordered by key), vacuum with a retention period, tombstone expiry.

Every apply adds a few small files per table; a scheduled run across clients rewrites them into large files
and removes unreferenced ones older than the retention, so files per table stay bounded under continuous load.
Runs beside appliers: a lost commit race is retried (`commit_retry`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pyarrow.fs as pafs
from deltalake import DeltaTable

from dw_assets.model import StandardModel, load_model
from dw_assets.settings import Settings

from .commit_retry import with_commit_retry
from .paths import bronze_url, filesystem, join, meta_url, open_table, table_url
from .table_cache import borrow, give_back
from .tables import MANIFEST, PROGRESS, TOMBSTONES, TRUNCATIONS

log = logging.getLogger(__name__)
DEFAULT_RETENTION_HOURS = 168  # a week of time travel, and Delta's own default
DEFAULT_TOMBSTONE_RETENTION_HOURS = 168  # a later-arriving event older than a delete by more is accepted
# The frequent light pass compacts a table once it has this many live files (each apply adds about one per table).
COMPACT_FROM_FILES = 16


@dataclass
class TableMaintenance:
    url: str
    files_before: int = 0
    files_after: int = 0
    files_vacuumed: int = 0
    tombstones_expired: int = 0
    version: int | None = None


@dataclass
class ClientMaintenance:
    client: str
    tables: list[TableMaintenance] = field(default_factory=list)


def maintain_table(settings: Settings, url: str, z_order: list[str] | None = None,
                   retention_hours: int = DEFAULT_RETENTION_HOURS, min_files: int = 2,
                   vacuum: bool = True) -> TableMaintenance | None:
    """Compact (or Z-order) one table when it has at least `min_files` live files, then vacuum it (unless
    `vacuum` is False); None if it does not exist.

    Works on the process's kept copy of the table (`table_cache`): the ingest service runs the light pass
    between a client's batches, and opening ~20 tables afresh each time (a log replay each) cost more than the
    compactions themselves (~11 % of an apply worker's CPU under load)."""
    dt = borrow(settings, url)
    if dt is None:
        return None
    out = TableMaintenance(url, files_before=len(dt.file_uris()))
    out.files_after, out.version = out.files_before, dt.version()
    current = [dt]  # the table as the last step left it; a retried step starts from the latest version

    def step(run: Callable[[DeltaTable], Any]) -> Callable[[], Any]:
        def attempt() -> Any:
            t = current.pop() if current else open_table(settings, url)
            assert t is not None
            result = run(t)
            current.append(t)
            return result
        return attempt

    def compact(t: DeltaTable) -> None:
        if z_order:
            t.optimize.z_order(z_order)
        else:
            t.optimize.compact()

    if out.files_before >= max(2, min_files):
        with_commit_retry(step(compact), f"optimize {url}")
    if vacuum:
        # Short retentions (tests, dev) need enforce_retention_duration=False; the default honours a week.
        out.files_vacuumed = with_commit_retry(step(lambda t: len(t.vacuum(
            retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False))), f"vacuum {url}")
    final = current[0]
    if vacuum:
        final.update_incremental()  # vacuum's own commits
    out.files_after, out.version = len(final.file_uris()), final.version()
    give_back(settings, url, final)
    return out


def expire_tombstones(settings: Settings, client: str, table: str, older_than_hours: int) -> int:
    url = meta_url(settings, client, f"{TOMBSTONES}/{table}")
    cutoff = datetime.now(timezone.utc) - timedelta(hours=older_than_hours)

    def step() -> int:
        dt = open_table(settings, url)
        if dt is None:
            return 0
        m = dt.delete(f"_dw_deleted_at < '{cutoff.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'")
        return int(m.get("num_deleted_rows", 0))

    return with_commit_retry(step, f"expire tombstones {client}.{table}")


def maintain_client(settings: Settings, client: str, model: StandardModel | None = None,
                    retention_hours: int = DEFAULT_RETENTION_HOURS, z_order_by_key: bool = False,
                    tombstone_retention_hours: int = DEFAULT_TOMBSTONE_RETENTION_HOURS,
                    compact_only_from: int | None = None) -> ClientMaintenance:
    """Maintain every lake table of one client (data layers and bookkeeping).

    `compact_only_from`: the light, frequent pass: only compact tables with at least this many live files (no
    vacuum, no tombstone expiry), which keeps file counts bounded between the full (nightly) passes.
    """
    model = model or load_model(settings.model_path)
    result = ClientMaintenance(client)
    light = compact_only_from is not None
    opts = dict(retention_hours=retention_hours, min_files=compact_only_from or 2, vacuum=not light)
    urls: list[tuple[str, list[str] | None]] = [(bronze_url(settings, client), None)]
    for t in model.tables:
        for layer in ("silver", "silver_history") if t.options.scd2 else ("silver",):
            z = list(t.primary_key) if z_order_by_key and layer == "silver" else None
            urls.append((table_url(settings, layer, client, t.name), z))  # type: ignore[arg-type]
        if not light:  # lakes of before tombstones moved into bronze (no new files since: the full pass only)
            expire_tombstones(settings, client, t.name, tombstone_retention_hours)
            urls.append((meta_url(settings, client, f"{TOMBSTONES}/{t.name}"), None))
    # Progress and truncations: small tables of older lakes and rare events; the light pass leaves them too.
    names = (MANIFEST,) if light else (MANIFEST, PROGRESS, TRUNCATIONS)
    urls += [(meta_url(settings, client, name), None) for name in names]
    for url, z in urls:
        r = maintain_table(settings, url, z, **opts)  # type: ignore[arg-type]
        if r:
            result.tables.append(r)
    return result


def lake_clients(settings: Settings) -> list[str]:
    """Clients that have tables in the lake (directories under `<lake>/silver/`)."""
    fs, root = filesystem(settings, join(settings.lake_url, "silver"))
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def maintain_lake(settings: Settings, clients: list[str] | None = None, model: StandardModel | None = None,
                  retention_hours: int = DEFAULT_RETENTION_HOURS, z_order_by_key: bool = False,
                  compact_only_from: int | None = None) -> list[ClientMaintenance]:
    """Maintain every client in the lake (or the given ones); one client's failure does not stop the others."""
    out, failed = [], []
    for client in clients if clients is not None else lake_clients(settings):
        try:
            out.append(maintain_client(settings, client, model, retention_hours, z_order_by_key,
                                       compact_only_from=compact_only_from))
        except Exception:
            log.exception("maintenance of client %s failed", client)
            failed.append(client)
    if failed:
        raise RuntimeError(f"lake maintenance failed for client(s) {', '.join(failed)} (others done)")
    return out
