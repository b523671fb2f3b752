"""MariaDB connections for the stages: admin (DDL, seeding, registry) and cdc (least privilege: capture, checks)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal

import pymysql
import pymysql.cursors

from .settings import Settings

Role = Literal["admin", "cdc"]


def connect(settings: Settings, role: Role = "admin", database: str | None = None, **kw) -> pymysql.Connection:
    m = settings.mariadb
    user, password = (m.admin_user, m.admin_password) if role == "admin" else (m.cdc_user, m.cdc_password)
    return pymysql.connect(
        host=m.host,
        port=m.port,
        user=user,
        password=password,
        database=database,
        charset="utf8mb4",
        autocommit=kw.pop("autocommit", True),
        connect_timeout=kw.pop("connect_timeout", 5),
        **kw,
    )


@contextmanager
def connection(settings: Settings, role: Role = "admin", database: str | None = None, **kw) -> Iterator[pymysql.Connection]:
    conn = connect(settings, role, database, **kw)
    try:
        yield conn
    finally:
        conn.close()
