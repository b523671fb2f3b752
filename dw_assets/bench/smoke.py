"""Smoke sizes: a tenth of the quick sizes, for the test suite's structural run of every stage (`dw bench --smoke`).

Its figures are not measurements to compare or publish (the result says `smoke`); it proves that every stage
still runs end to end and reports what it should, in a fraction of the quick run's time. Carried to the stage
workers by an environment variable so no stage signature changes.
"""
from __future__ import annotations

import os

SMOKE_ENV = "DW_BENCH_SMOKE"


def smoke() -> bool:
    return os.environ.get(SMOKE_ENV) == "1"


def shrink(value: object) -> object:
    """Integers over 10 become a tenth (at least 1); everything else is kept."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 10:
        return max(1, value // 10)
    return value
