"""The ingest service's heartbeat: one JSON file per service (shard) under $DW_HOME/ingest/, rewritten every
second with its pid, shard, the clients it serves and its last batch. The Kafka-lag sensor leaves the clients of
a fresh heartbeat alone and takes over (with runs) once it is older than `ingest_heartbeat_stale_seconds`;
`dw ingest status` prints them.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dw_assets.settings import Settings


@dataclass
class Heartbeat:
    shard: str  # "i/n"
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    started_at: float = field(default_factory=time.time)
    updated_at: float = 0.0
    clients: list[str] = field(default_factory=list)  # served now (landing and applying)
    stopped: dict[str, str] = field(default_factory=dict)  # client -> why it is not applied (gate, backoff)
    last_batch_at: float | None = None
    batches: int = 0
    events: int = 0
    files: int = 0
    failures: int = 0
    reports_built: int = 0
    state: str = "running"  # running | stopping | stopped

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.updated_at

    def live(self, stale_s: float, now: float | None = None) -> bool:
        return self.state != "stopped" and self.age_s(now) <= stale_s

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def heartbeat_dir(settings: Settings) -> Path:
    return Path(settings.home) / "ingest"


def heartbeat_path(settings: Settings, shard: str) -> Path:
    i, n = shard.split("/")
    return heartbeat_dir(settings) / f"heartbeat.{i}-of-{n}.json"


def write_heartbeat(settings: Settings, hb: Heartbeat) -> None:
    """Atomically (rename), so a reader never sees half a file."""
    hb.updated_at = time.time()
    path = heartbeat_path(settings, hb.shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(hb.as_dict()))
    os.replace(tmp, path)


def read_heartbeats(settings: Settings) -> list[Heartbeat]:
    out = []
    for p in sorted(heartbeat_dir(settings).glob("heartbeat.*.json")):
        try:
            d = json.loads(p.read_text())
            out.append(Heartbeat(**{k: v for k, v in d.items() if k in Heartbeat.__dataclass_fields__}))
        except (OSError, ValueError, TypeError):
            continue  # being replaced, or not ours
    return out


def served_clients(settings: Settings, now: float | None = None) -> set[str]:
    """Clients a live ingest service serves now: the lag sensor starts no runs for them."""
    stale = settings.ingest_heartbeat_stale_seconds
    return {c for hb in read_heartbeats(settings) if hb.live(stale, now) for c in hb.clients}
