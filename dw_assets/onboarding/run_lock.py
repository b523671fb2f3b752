"""One onboarding or offboarding of a client at a time, across processes and hosts: a MariaDB named lock.

The lock lives on a connection held for the whole run, so the server releases it when the process dies (a
killed onboarding never leaves a stale lock behind); the registry sensor asks `lock_holder` before starting a run.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from dw_assets import db
from dw_assets.identifiers import validate_client_name
from dw_assets.settings import Settings


class ClientBusy(RuntimeError):
    """Another process is onboarding or offboarding this client right now."""


def lock_name(settings: Settings, client: str) -> str:
    # Named locks are server-wide: the control database keeps two deployments on one server apart.
    return f"dw_lifecycle.{settings.control_db}.{validate_client_name(client)}"[:64]


@contextmanager
def client_run_lock(settings: Settings, client: str, wait_seconds: int = 0) -> Iterator[None]:
    name = lock_name(settings, client)
    conn = db.connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, %s)", (name, wait_seconds))
            (got,) = cur.fetchone()
        if got != 1:
            holder = lock_holder(settings, client)
            raise ClientBusy(f"client {client!r} is being onboarded or offboarded by another process "
                             f"(MariaDB connection {holder}); wait for it or kill that connection")
        try:
            yield
        finally:
            with conn.cursor() as cur:
                cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
    finally:
        conn.close()


def lock_holder(settings: Settings, client: str) -> int | None:
    """The MariaDB connection id holding the client's lifecycle lock, or None."""
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute("SELECT IS_USED_LOCK(%s)", (lock_name(settings, client),))
        (holder,) = cur.fetchone()
    return int(holder) if holder is not None else None
