"""The Dagster instance's home: the shipped dagster.yaml, plus PostgreSQL storage when asked for.

With `DW_DAGSTER_STORAGE=postgres` runs, event logs and schedules live in PostgreSQL (the stack's own or an
existing server named by `DW_DAGSTER_POSTGRES_URL`); otherwise Dagster's default SQLite files in the home.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

from .process import ServiceError

REPO_ROOT = Path(__file__).resolve().parents[2]
HEADER = "# Written by `dw stack up` (DW_DAGSTER_STORAGE=postgres): runs, events and schedules in PostgreSQL.\n"


def postgres_storage(url: str) -> dict:
    """dagster-postgres settings from postgresql://user:password@host:port/db.

    The scheme is given explicitly: with SQLAlchemy 2.1 a bare `postgresql` picks psycopg 3, which is not
    installed (dagster-postgres ships psycopg2).
    """
    p = urlparse(url)
    if p.scheme not in ("postgresql", "postgres", "postgresql+psycopg2") or not p.hostname or not p.path.strip("/"):
        raise ServiceError("DW_DAGSTER_POSTGRES_URL must look like postgresql://user:password@host:port/database")
    try:
        port = p.port or 5432
    except ValueError:
        raise ServiceError("DW_DAGSTER_POSTGRES_URL has an invalid port") from None
    return {"postgres": {"postgres_db": {
        "username": unquote(p.username or ""), "password": unquote(p.password or ""), "hostname": p.hostname,
        "port": port, "db_name": p.path.strip("/"), "scheme": "postgresql+psycopg2",
    }}}


def prepare(dagster_home: Path, postgres_url: str | None = None) -> Path:
    """Write `dagster_home/dagster.yaml`: the shipped settings, with PostgreSQL storage if `postgres_url`.

    A SQLite home keeps a dagster.yaml the user edited; a PostgreSQL one is rewritten each time (the URL may
    change) and is private: it holds the password.
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    src = REPO_ROOT / "dagster.yaml"
    if postgres_url is None:
        ours = target.exists() and target.read_text().startswith(HEADER)  # back from PostgreSQL to SQLite
        if src.exists() and (ours or not target.exists()):
            target.write_text(src.read_text())
        return target
    config = yaml.safe_load(src.read_text()) if src.exists() else {}
    config["storage"] = postgres_storage(postgres_url)
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(HEADER)
        yaml.safe_dump(config, f, sort_keys=False)
    os.replace(tmp, target)
    return target
