"""Dagster resources: a thin `ConfigurableResource` over the plain-Python `Settings`.

Assets, checks and sensors get connection settings from here and hand them to the stage code.
"""
from __future__ import annotations

import dagster as dg

from .settings import Settings, load_settings


class DwSettings(dg.ConfigurableResource):
    """Connection settings for MariaDB, Kafka, landing and lake (environment variables over `$DW_HOME/stack.json`)."""

    home: str | None = None  # the local stack's state directory; None = $DW_HOME or ./.dw

    def load(self) -> Settings:
        return load_settings(home=self.home)
