"""`dw demo`: the whole pipeline on the local stack, driven by the Dagster daemon, with a measured end-to-end
freshness and a summary whose exit code says whether every silver table equals its source."""
from .runner import DemoError, DemoOptions, DemoRunner

__all__ = ["DemoError", "DemoOptions", "DemoRunner"]
