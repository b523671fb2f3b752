"""Heartbeats: a message on `__dw-heartbeat.<prefix>` every interval with the current position and source.ts_ms.

Downstream stages tell "no changes" from "capture is down" by these, and measure end-to-end lag from them.
"""
from __future__ import annotations

import time

import orjson

from .envelope import now_ms


class HeartbeatTimer:
    def __init__(self, interval_ms: int):
        self.interval = interval_ms / 1000
        self._next = time.monotonic()

    def due(self) -> bool:
        if self.interval <= 0:
            return False
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            return True
        return False


def heartbeat_key(prefix: str) -> bytes:
    return orjson.dumps({"serverName": prefix})


def heartbeat_value(prefix: str, *, file: str, pos: int, gtid: str | None, source_ts_ms: int | None,
                    server_id: int, caught_up: bool) -> bytes:
    return orjson.dumps({
        "ts_ms": now_ms(),
        "serverName": prefix,
        "caught_up": caught_up,
        "source": {"ts_ms": source_ts_ms, "file": file, "pos": pos, "gtid": gtid, "server_id": server_id},
    })
