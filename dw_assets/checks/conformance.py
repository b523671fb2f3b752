"""Does a client's production schema follow the model, and is staging ahead of production?

`breaking_differences(settings, client)` is what the apply step calls to skip one client whose production
schema it cannot apply, without stopping the others in the same run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from dw_assets.identifiers import staging_db_for, validate_client_name
from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .schema_diff import Difference, adopt_ddl, diff_schemas, severity_counts
from .schema_snapshot import SchemaSnapshot, SnapshotError, snapshot_database, snapshot_from_model

# Snapshots read ahead in bulk (database -> snapshot, None = missing), for sweeps over many clients.
Snapshots = Mapping[str, SchemaSnapshot | None]


@dataclass(frozen=True)
class ClientDatabases:
    client: str
    production_db: str
    staging_db: str
    model_version: str | None = None
    status: str | None = None


def client_databases(settings: Settings, client: str) -> ClientDatabases:
    """The client's databases from the registry; an unregistered client falls back to the naming convention."""
    from dw_assets.onboarding.registry import RegistryError, get_client

    validate_client_name(client)
    try:
        c = get_client(settings, client)
    except RegistryError:
        return ClientDatabases(client, client, staging_db_for(client))
    return ClientDatabases(c.name, c.production_db, c.staging_db, c.model_version, c.status)


@dataclass(frozen=True)
class ConformanceResult:
    client: str
    database: str
    reference: str  # "model 1.0.0" or "mariadb:<production db>"
    differences: list[Difference]
    snapshot: SchemaSnapshot
    missing_database: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def breaking(self) -> list[Difference]:
        return [d for d in self.differences if d.is_breaking]

    @property
    def conforming(self) -> bool:
        return not self.breaking


def _snapshot_or_empty(settings: Settings, database: str, snapshots: Snapshots | None = None
                       ) -> tuple[SchemaSnapshot, bool]:
    # A missing database is every table missing: the diff then says exactly what the pipeline lacks.
    if snapshots is not None and database in snapshots:
        snap = snapshots[database]
        return (snap, False) if snap is not None else (_missing(database), True)
    try:
        return snapshot_database(settings, database), False
    except SnapshotError:
        return _missing(database), True


def _missing(database: str) -> SchemaSnapshot:
    return SchemaSnapshot(source=f"mariadb:{database} (missing)", tables=())


def production_conformance(settings: Settings, client: str | ClientDatabases,
                           model: StandardModel | None = None, snapshots: Snapshots | None = None
                           ) -> ConformanceResult:
    """Production schema vs the model; the DDL makes production match the model."""
    dbs = client if isinstance(client, ClientDatabases) else client_databases(settings, client)
    model = model or settings.standard_model()
    reference = snapshot_from_model(model)
    snap, missing = _snapshot_or_empty(settings, dbs.production_db, snapshots)
    diffs = diff_schemas(reference, snap, target_db=dbs.production_db)
    return ConformanceResult(dbs.client, dbs.production_db, reference.source, diffs, snap, missing,
                             severity_counts(diffs))


def staging_conformance(settings: Settings, client: str | ClientDatabases, snapshots: Snapshots | None = None
                        ) -> ConformanceResult:
    """Changes staging has that production does not have yet; the DDL applies them to production."""
    dbs = client if isinstance(client, ClientDatabases) else client_databases(settings, client)
    prod, _ = _snapshot_or_empty(settings, dbs.production_db, snapshots)
    staging, missing = _snapshot_or_empty(settings, dbs.staging_db, snapshots)
    diffs = adopt_ddl(diff_schemas(prod, staging), staging, dbs.production_db)
    return ConformanceResult(dbs.client, dbs.staging_db, prod.source, diffs, staging, missing,
                             severity_counts(diffs))


def breaking_differences(settings: Settings, client: str, model: StandardModel | None = None) -> list[Difference]:
    """The differences of the client's production schema from the model that the pipeline cannot apply."""
    return production_conformance(settings, client, model).breaking
