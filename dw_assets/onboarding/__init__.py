"""Onboarding: the client registry (control database) and the lifecycle of each client's databases.

`registry` is the plain-Python core; `commands` adds `dw clients ...` to the CLI.
"""
from .registry import (
    STATUSES,
    TRANSITIONS,
    Client,
    RegistryError,
    ensure_registry,
    get_client,
    list_clients,
    register_client,
    set_status,
    status_history,
)

__all__ = [
    "STATUSES", "TRANSITIONS", "Client", "RegistryError", "ensure_registry", "get_client", "list_clients",
    "register_client", "set_status", "status_history",
]
