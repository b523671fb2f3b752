"""The client registry: which client databases exist, where, in which lifecycle status, and their history.

Lives in the control database (`settings.control_db`) on the source server. Client names are validated
before any SQL runs; values always travel as query parameters, identifiers through `quote_ident`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

import pymysql

from dw_assets import db
from dw_assets.identifiers import quote_ident, staging_db_for, validate_client_name
from dw_assets.settings import Settings

STATUSES = ("seeded", "onboarding", "active", "paused", "offboarded")
# Lifecycle: seeded -> onboarding -> active <-> paused; anything may be offboarded, and a failed onboarding may
# fall back to seeded. Activating straight from seeded is allowed for databases that need no initial snapshot.
TRANSITIONS: dict[str, frozenset[str]] = {
    "seeded": frozenset({"onboarding", "active", "offboarded"}),
    "onboarding": frozenset({"active", "paused", "seeded", "offboarded"}),
    "active": frozenset({"paused", "onboarding", "offboarded"}),
    "paused": frozenset({"active", "onboarding", "offboarded"}),
    "offboarded": frozenset({"onboarding"}),
}


class RegistryError(ValueError):
    """An expected registry failure: unknown client, already registered, invalid status or transition."""


@dataclass(frozen=True)
class Client:
    name: str
    production_db: str
    staging_db: str
    status: str
    model_version: str | None
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "production_db": self.production_db, "staging_db": self.staging_db,
                "status": self.status, "model_version": self.model_version,
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat()}


def _status_enum() -> str:
    return "ENUM(" + ",".join(f"'{s}'" for s in STATUSES) + ")"  # constants above, not user input


def _ddl(control_db: str) -> list[str]:
    q = quote_ident(control_db)
    return [
        f"CREATE DATABASE IF NOT EXISTS {q} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        f"""CREATE TABLE IF NOT EXISTS {q}.`clients` (
              `name` VARCHAR(64) NOT NULL PRIMARY KEY,
              `production_db` VARCHAR(64) NOT NULL,
              `staging_db` VARCHAR(64) NOT NULL,
              `status` {_status_enum()} NOT NULL DEFAULT 'seeded',
              `model_version` VARCHAR(64) NULL,
              `options` LONGTEXT NULL,
              `created_at` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
              `updated_at` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
              UNIQUE KEY `ux_production_db` (`production_db`),
              UNIQUE KEY `ux_staging_db` (`staging_db`)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE IF NOT EXISTS {q}.`client_status_history` (
              `id` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
              `client` VARCHAR(64) NOT NULL,
              `old_status` {_status_enum()} NULL,
              `new_status` {_status_enum()} NOT NULL,
              `changed_by` VARCHAR(128) NOT NULL,
              `changed_at` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
              KEY `ix_client` (`client`, `id`)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        # One row per onboarding step and client: a re-run resumes after the last step recorded `done`.
        f"""CREATE TABLE IF NOT EXISTS {q}.`onboarding_steps` (
              `client` VARCHAR(64) NOT NULL,
              `step` VARCHAR(32) NOT NULL,
              `state` ENUM('started','done','failed') NOT NULL,
              `attempt` INT NOT NULL DEFAULT 1,
              `started_at` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
              `finished_at` DATETIME(6) NULL,
              `seconds` DOUBLE NULL,
              `run_by` VARCHAR(128) NOT NULL,
              `detail` LONGTEXT NULL,
              PRIMARY KEY (`client`, `step`)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    ]


# Columns added after a control database was first created: (table, column, definition). Applied once per
# process and server with ADD COLUMN IF NOT EXISTS, so an old registry upgrades in place and a new one is a no-op.
_MIGRATIONS: tuple[tuple[str, str, str], ...] = (
    ("clients", "options", "LONGTEXT NULL AFTER `model_version`"),
)
_migrated: set[tuple[str, int, str]] = set()
_migrated_lock = threading.Lock()


def _migrate(settings: Settings, cur: pymysql.cursors.Cursor) -> None:
    key = (settings.mariadb.host, settings.mariadb.port, settings.control_db)
    with _migrated_lock:
        if key in _migrated:
            return
        q = quote_ident(settings.control_db)
        for table, column, definition in _MIGRATIONS:
            cur.execute(f"ALTER TABLE {q}.{quote_ident(table)} ADD COLUMN IF NOT EXISTS {quote_ident(column)} "
                        f"{definition}")  # constants above, not user input
        _migrated.add(key)


def ensure_registry(settings: Settings) -> None:
    """Create the control database and its tables if missing (idempotent)."""
    with db.connection(settings) as conn, conn.cursor() as cur:
        for stmt in _ddl(settings.control_db):
            cur.execute(stmt)
        _migrate(settings, cur)


def _tables(settings: Settings) -> tuple[str, str]:
    q = quote_ident(settings.control_db)
    return f"{q}.`clients`", f"{q}.`client_status_history`"


_COLUMNS = "`name`, `production_db`, `staging_db`, `status`, `model_version`, `created_at`, `updated_at`"


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise RegistryError(f"invalid status {status!r}: one of {', '.join(STATUSES)}")
    return status


def register_client(settings: Settings, name: str, production_db: str | None = None, staging_db: str | None = None,
                    status: str = "seeded", model_version: str | None = None, changed_by: str = "dw",
                    replace: bool = False) -> Client:
    """Register a client (production db `<name>`, staging `<name>__staging` unless given) and record the status.

    An existing client is an error unless `replace`, which resets its databases, model version and status.
    """
    validate_client_name(name)
    _check_status(status)
    production_db = production_db or name
    staging_db = staging_db or staging_db_for(name)
    for d in (production_db, staging_db):
        quote_ident(d)  # same length/NUL checks the DDL will apply
    ensure_registry(settings)
    clients, history = _tables(settings)
    with db.connection(settings, autocommit=False) as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT `status` FROM {clients} WHERE `name` = %s FOR UPDATE", (name,))
            row = cur.fetchone()
            if row and not replace:
                conn.rollback()
                raise RegistryError(f"client {name!r} is already registered (status {row[0]})")
            try:
                cur.execute(
                    f"INSERT INTO {clients} (`name`, `production_db`, `staging_db`, `status`, `model_version`) "
                    "VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE `production_db` = VALUES(`production_db`), "
                    "`staging_db` = VALUES(`staging_db`), `status` = VALUES(`status`), "
                    "`model_version` = VALUES(`model_version`)",
                    (name, production_db, staging_db, status, model_version),
                )
            except pymysql.err.IntegrityError as e:
                conn.rollback()
                raise RegistryError(f"cannot register {name!r}: a database name is already used by another "
                                    f"client ({e.args[1] if len(e.args) > 1 else e})") from None
            cur.execute(f"INSERT INTO {history} (`client`, `old_status`, `new_status`, `changed_by`) "
                        "VALUES (%s, %s, %s, %s)", (name, row[0] if row else None, status, changed_by))
        conn.commit()
    return get_client(settings, name)


def get_client(settings: Settings, name: str) -> Client:
    """The registered client `name`; RegistryError if unknown."""
    validate_client_name(name)
    ensure_registry(settings)
    clients, _ = _tables(settings)
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM {clients} WHERE `name` = %s", (name,))
        row = cur.fetchone()
    if row is None:
        raise RegistryError(f"unknown client {name!r} (see `dw clients list`)")
    return Client(*row)


def list_clients(settings: Settings, status: str | list[str] | tuple[str, ...] | None = None) -> list[Client]:
    """All registered clients ordered by name, optionally only those in the given status(es)."""
    wanted = [status] if isinstance(status, str) else list(status or [])
    for s in wanted:
        _check_status(s)
    ensure_registry(settings)
    clients, _ = _tables(settings)
    sql = f"SELECT {_COLUMNS} FROM {clients}"
    if wanted:
        sql += " WHERE `status` IN (" + ", ".join(["%s"] * len(wanted)) + ")"
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(sql + " ORDER BY `name`", wanted)
        return [Client(*r) for r in cur.fetchall()]


def set_status(settings: Settings, name: str, status: str, changed_by: str, force: bool = False) -> Client:
    """Move a client to `status` (checked against TRANSITIONS unless `force`) and record it in the history.

    Setting the current status again is a no-op and records nothing.
    """
    validate_client_name(name)
    _check_status(status)
    ensure_registry(settings)
    clients, history = _tables(settings)
    with db.connection(settings, autocommit=False) as conn:
        with conn.cursor() as cur:
            # FOR UPDATE serialises concurrent status changes of one client (e.g. a sensor and the CLI).
            cur.execute(f"SELECT `status` FROM {clients} WHERE `name` = %s FOR UPDATE", (name,))
            row = cur.fetchone()
            if row is None:
                conn.rollback()
                raise RegistryError(f"unknown client {name!r} (see `dw clients list`)")
            old = row[0]
            if old == status:
                conn.rollback()
                return get_client(settings, name)
            if not force and status not in TRANSITIONS[old]:
                conn.rollback()
                allowed = ", ".join(sorted(TRANSITIONS[old])) or "none"
                raise RegistryError(f"client {name!r} cannot go from {old} to {status} (allowed: {allowed})")
            cur.execute(f"UPDATE {clients} SET `status` = %s WHERE `name` = %s", (status, name))
            cur.execute(f"INSERT INTO {history} (`client`, `old_status`, `new_status`, `changed_by`) "
                        "VALUES (%s, %s, %s, %s)", (name, old, status, changed_by))
        conn.commit()
    return get_client(settings, name)


def status_history(settings: Settings, name: str) -> list[dict[str, object]]:
    """The client's status changes, oldest first."""
    validate_client_name(name)
    ensure_registry(settings)
    _, history = _tables(settings)
    with db.connection(settings) as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT `client`, `old_status`, `new_status`, `changed_by`, `changed_at` FROM {history} "
                    "WHERE `client` = %s ORDER BY `id`", (name,))
        return list(cur.fetchall())
