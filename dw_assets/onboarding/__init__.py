"""Onboarding: the client registry (control database) and the lifecycle of each client in the pipeline.

`registry` (+ `client_options`, `step_log`) is the stored state; `onboard`/`steps` bring a client in, resumably;
`lifecycle` pauses and resumes, `offboard` takes it out, `batch` onboards a file; `commands` is `dw clients ...`.
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
