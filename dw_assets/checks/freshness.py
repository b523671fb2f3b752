"""Is silver recent? The newest source ts_ms applied to any of the client's silver tables vs the wall clock.

A client without writes looks stale too (Debezium-style heartbeats, off by default, would fix that); the
default bound of 300 s suits clients with steady traffic.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from . import silver_tables

DEFAULT_MAX_AGE_SECONDS = 300


@dataclass(frozen=True)
class FreshnessResult:
    client: str
    max_age_seconds: float
    latest_ts_ms: int | None
    age_seconds: float | None
    per_table: dict[str, int | None] = field(default_factory=dict)  # table -> newest applied ts_ms

    @property
    def passed(self) -> bool:
        return self.age_seconds is not None and self.age_seconds <= self.max_age_seconds

    def markdown(self) -> str:
        lines = ["| table | latest applied source ts_ms | age (s) |", "|---|---|---|"]
        now = (self.latest_ts_ms or 0) + (self.age_seconds or 0) * 1000
        for t, ts in self.per_table.items():
            age = f"{(now - ts) / 1000:.1f}" if ts is not None and self.age_seconds is not None else "—"
            lines.append(f"| {t} | {ts if ts is not None else '—'} | {age} |")
        return "\n".join(lines)


def applied_ts_by_table(settings: Settings, client: str, model: StandardModel | None = None) -> dict[str, int | None]:
    model = model or settings.standard_model()
    out: dict[str, int | None] = {}
    for t in model.tables:
        dt = silver_tables.open_silver(settings, client, t.name)
        out[t.name] = silver_tables.max_applied_ts_ms(dt) if dt is not None else None
    return out


def silver_applied_ts_ms(settings: Settings, client: str, model: StandardModel | None = None) -> int | None:
    """The newest source ts_ms silver has applied for the client (across its tables), None if none."""
    values = [v for v in applied_ts_by_table(settings, client, model).values() if v is not None]
    return max(values) if values else None


def check_freshness(settings: Settings, client: str, max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
                    model: StandardModel | None = None, now_ms: int | None = None) -> FreshnessResult:
    per_table = applied_ts_by_table(settings, client, model)
    values = [v for v in per_table.values() if v is not None]
    latest = max(values) if values else None
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    age = (now - latest) / 1000 if latest is not None else None
    return FreshnessResult(client, max_age_seconds, latest, age, per_table)
