"""Test helpers for end-to-end pipeline tests: compare a client's silver tables with its source tables.

The comparison itself lives in `dw_assets.checks.silver_equality` (`dw demo` uses it for its exit code).
"""
from __future__ import annotations

from dw_assets.checks.silver_equality import compare_silver_with_source, silver_rows, source_rows
from dw_assets.model import StandardModel
from dw_assets.settings import Settings

__all__ = ["assert_silver_equals_source", "silver_rows", "source_rows"]


def assert_silver_equals_source(settings: Settings, client: str, model: StandardModel, database: str | None = None) -> None:
    for result in compare_silver_with_source(settings, client, model, database):
        assert result.equal, result.describe(client)
