"""Addresses of the live report server: its default bind and the path of each scope's page. Light on purpose
(no Starlette import): the CLI parser and the Dagster asset that links to the live page use it."""
from __future__ import annotations

import os
from typing import Mapping

from ..engine import PORTFOLIO_SCOPE

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8050
URL_VARIABLE = "DW_REPORTS_URL"  # where viewers reach the server, when not the default local address


def scope_path(scope: str) -> str:
    return "/portfolio" if scope == PORTFOLIO_SCOPE else f"/clients/{scope}"


def live_url(scope: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The live page of a scope (a client or PORTFOLIO_SCOPE), or the server's root for None."""
    base = ((os.environ if env is None else env).get(URL_VARIABLE, "").strip()
            or f"http://{DEFAULT_HOST}:{DEFAULT_PORT}").rstrip("/")
    return base + (scope_path(scope) if scope else "/")
