"""Which clients a service serves: `--shard i/n` takes the clients whose stable hash (the landing shard of the
Kafka-lag sensor, crc32 of the name) is i modulo n, so n services on one machine or many split the deployment
without talking to each other; each client's landing and apply locks keep two services off one client anyway.
"""
from __future__ import annotations

from dw_assets.landing.run_planning import landing_shard


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 0 <= i < n."""
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/2), not {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def in_shard(client: str, shard: tuple[int, int]) -> bool:
    i, n = shard
    return n == 1 or landing_shard(client, n) == i
