"""The gate before anything is registered: a valid name, both databases present and following the model, and no
leftovers of an earlier life of the client that a fresh snapshot would silently mix with.

Breaking differences refuse the onboarding (the caller prints the table); additive ones are warnings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dw_assets.checks.conformance import ClientDatabases, production_conformance
from dw_assets.checks.schema_diff import Difference, diff_schemas
from dw_assets.checks.schema_snapshot import SnapshotError, snapshot_database, snapshot_from_model
from dw_assets.identifiers import quote_ident, staging_db_for, validate_client_name
from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .client_data import existing_data
from .registry import Client, RegistryError, get_client


# Statuses in which a client's topics, tables and files legitimately exist.
PIPELINE_STATUSES = frozenset({"onboarding", "active", "paused"})


@dataclass
class ValidationReport:
    client: str
    production_db: str
    staging_db: str
    production: list[Difference] = field(default_factory=list)  # production vs the model
    staging: list[Difference] = field(default_factory=list)  # staging vs the model
    problems: list[str] = field(default_factory=list)  # refusals that are not schema differences

    @property
    def breaking(self) -> list[tuple[str, Difference]]:
        return [(where, d) for where, diffs in (("production", self.production), ("staging", self.staging))
                for d in diffs if d.is_breaking]

    @property
    def warnings(self) -> list[tuple[str, Difference]]:
        return [(where, d) for where, diffs in (("production", self.production), ("staging", self.staging))
                for d in diffs if d.severity == "additive"]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.breaking

    def summary(self) -> str:
        parts = [f"{len(self.breaking)} breaking, {len(self.warnings)} additive difference(s)"]
        return "; ".join(parts + self.problems)


class OnboardingRefused(RuntimeError):
    """Validation failed: nothing was registered or created. `report` holds the differences to show."""

    def __init__(self, report: ValidationReport):
        self.report = report
        reasons = list(report.problems)
        if report.breaking:
            where = sorted({w for w, _ in report.breaking})
            reasons.append(f"{len(report.breaking)} breaking schema difference(s) from the model in "
                           f"{' and '.join(where)}")
        super().__init__(f"onboarding of {report.client!r} refused: " + "; ".join(reasons))


def _registered(settings: Settings, client: str) -> Client | None:
    try:
        return get_client(settings, client)
    except RegistryError:
        return None


def resolve_databases(settings: Settings, client: str, production_db: str | None,
                      staging_db: str | None) -> tuple[str, str, Client | None]:
    """The databases to onboard: given ones, else the registered ones, else the naming convention."""
    validate_client_name(client)
    row = _registered(settings, client)
    prod = production_db or (row.production_db if row else client)
    staging = staging_db or (row.staging_db if row else staging_db_for(client))
    for name in (prod, staging):
        quote_ident(name)
    return prod, staging, row


def validate_onboarding(settings: Settings, client: str, production_db: str | None, staging_db: str | None,
                        model: StandardModel) -> ValidationReport:
    """Check everything onboarding needs before it changes anything; raise OnboardingRefused if it cannot go on."""
    prod, staging, row = resolve_databases(settings, client, production_db, staging_db)
    # A client in the pipeline already (an interrupted onboarding, or one activated by hand) owns its data.
    resuming = row is not None and row.status in PIPELINE_STATUSES
    report = ValidationReport(client, prod, staging)
    if resuming and row is not None and (prod, staging) != (
            row.production_db, row.staging_db):
        report.problems.append(f"client is registered ({row.status}) with databases {row.production_db}/"
                               f"{row.staging_db}, not {prod}/{staging}")
    conf = production_conformance(settings, ClientDatabases(client, prod, staging), model)
    if conf.missing_database:
        report.problems.append(f"production database {prod!r} does not exist")
    else:
        report.production = conf.differences
    try:
        report.staging = diff_schemas(snapshot_from_model(model), snapshot_database(settings, staging),
                                      target_db=staging)
    except SnapshotError:
        report.problems.append(f"staging database {staging!r} does not exist")
    if not resuming:
        # A snapshot merged into old silver would keep rows deleted meanwhile; landing files with the same
        # names as the new topics' first files would be adopted instead of written.
        leftovers = existing_data(settings, client, prod)
        if leftovers:
            report.problems.append(f"data of an earlier onboarding remains ({', '.join(leftovers.all[:3])}"
                                   f"{' ...' if len(leftovers.all) > 3 else ''}): run `dw clients offboard "
                                   f"{client} --drop-data` first")
    if not report.ok:
        raise OnboardingRefused(report)
    return report
