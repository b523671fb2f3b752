"""Which databases the capture service captures: production DBs of `active` clients from the registry.

Staging (`*__staging`), the control DB and MariaDB's own schemas are never captured, whatever the registry says.
"""
from __future__ import annotations

import logging
from typing import Callable

from ..identifiers import STAGING_SUFFIX
from ..settings import Settings

log = logging.getLogger(__name__)

SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
DatabaseSource = Callable[[], set[str]]


def capturable(database: str, settings: Settings) -> bool:
    return not (database in SYSTEM_SCHEMAS or database == settings.control_db or database.endswith(STAGING_SUFFIX))


def registry_source(settings: Settings) -> DatabaseSource:
    """Production databases of active clients, re-read on every call (a client activated later is picked up)."""

    def databases() -> set[str]:
        from ..onboarding.registry import list_clients  # written in parallel; imported when first needed

        return {c.production_db for c in list_clients(settings, status="active") if capturable(c.production_db, settings)}

    return databases


def fixed_source(settings: Settings, names: set[str]) -> DatabaseSource:
    chosen = {n for n in names if capturable(n, settings)}
    return lambda: set(chosen)
