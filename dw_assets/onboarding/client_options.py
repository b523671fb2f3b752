"""Per-client options stored with the registry row: Kafka topic partitions and the landing flush settings.

Stored as JSON in `clients.options` so a new option needs no migration; unset fields fall back to the defaults
of the stage that uses them (`DW_TOPIC_PARTITIONS`, `FlushPolicy`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from dw_assets import db
from dw_assets.identifiers import quote_ident, validate_client_name
from dw_assets.settings import Settings

from .registry import RegistryError, ensure_registry


@dataclass(frozen=True)
class ClientOptions:
    topic_partitions: int | None = None
    flush_records: int | None = None
    flush_bytes: int | None = None
    idle_seconds: float | None = None
    max_age_seconds: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and v <= 0:
                raise RegistryError(f"option {f.name} must be positive (got {v!r})")

    def merged(self, other: "ClientOptions") -> "ClientOptions":
        """These options with every field `other` sets taken from `other`."""
        return replace(self, **{k: v for k, v in asdict(other).items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> "ClientOptions":
        data = json.loads(raw) if raw else {}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # unknown keys: written by a newer version

    def partitions(self, settings: Settings) -> int:
        return self.topic_partitions or settings.kafka.partitions

    def flush_policy(self):  # -> FlushPolicy; imported lazily so the registry loads without the landing stage
        from dw_assets.landing.flush import FlushPolicy

        landing = {k: v for k, v in self.as_dict().items() if k != "topic_partitions"}
        return FlushPolicy(**landing)


def _table(settings: Settings) -> str:
    return f"{quote_ident(settings.control_db)}.`clients`"


def get_options(settings: Settings, name: str) -> ClientOptions:
    validate_client_name(name)
    ensure_registry(settings)
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT `options` FROM {_table(settings)} WHERE `name` = %s", (name,))
        row = cur.fetchone()
    if row is None:
        raise RegistryError(f"unknown client {name!r} (see `dw clients list`)")
    return ClientOptions.from_json(row[0])


def set_options(settings: Settings, name: str, options: ClientOptions) -> ClientOptions:
    """Merge `options` into the client's stored options (fields left None keep their stored value)."""
    current = get_options(settings, name)
    merged = current.merged(options)
    if merged != current:
        with db.connection(settings) as conn, conn.cursor() as cur:
            cur.execute(f"UPDATE {_table(settings)} SET `options` = %s WHERE `name` = %s", (merged.to_json(), name))
    return merged
