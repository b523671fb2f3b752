"""The Kafka client settings every landing client (writer, probe, lag, admin, dead letters) starts from.

librdkafka (2.16) drops its bootstrap connection as soon as the first metadata answer names the broker's real id;
a request still in flight on that connection fails, and the retry waits for the sparse-connection interval, half
of `reconnect.backoff.ms` (100 ms by default). Measured on the local broker: a fresh client's first request took
~53 ms about every other time instead of ~1 ms, and landing creates two consumers per client. 10 ms brings the
wait to librdkafka's floor (~11 ms); a broker that is really down still gets the exponential backoff up to
`reconnect.backoff.max.ms`. Values set in the settings win.
"""
from __future__ import annotations

from typing import Any

from ..settings import Settings

RECONNECT_BACKOFF_MS = 10


def landing_client_config(settings: Settings) -> dict[str, Any]:
    return {"reconnect.backoff.ms": RECONNECT_BACKOFF_MS, **settings.kafka.client_config()}
