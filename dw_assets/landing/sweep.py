"""A bounded landing pass over many clients: what one multi-client Dagster run (and `dw landing run --all`) does.

Topics are listed once for all clients, and a few clients land at a time on threads: set-up round trips (offset
fetch, watermark probe) and the GIL-free parts (fetching, Parquet encoding, upload) of one client overlap with
another's decoding.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping

from confluent_kafka.admin import AdminClient

from ..settings import Settings
from .client_lock import LandingBusy
from .client_topics import list_cluster_topics
from .flush import FlushPolicy
from .kafka_config import landing_client_config
from .writer import LandingReport, land_client

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 3


def land_clients(settings: Settings, clients: Mapping[str, str], *, parallel: int = DEFAULT_PARALLEL,
                 policy: FlushPolicy | None = None, max_seconds_per_client: float | None = None,
                 on_done: Callable[[str, LandingReport | BaseException], None] | None = None,
                 ) -> dict[str, LandingReport | BaseException]:
    """Land every client (client -> production database) up to its current end offsets.

    A failing client does not stop the others: its exception is returned in its place (a client whose writer
    is busy elsewhere comes back as LandingBusy). `on_done` is called as each client finishes.
    """
    cluster = list_cluster_topics(AdminClient(landing_client_config(settings)))

    def one(client: str) -> LandingReport | BaseException:
        try:
            result: LandingReport | BaseException = land_client(
                settings, client, database=clients[client], policy=policy, cluster_topics=cluster,
                max_seconds=max_seconds_per_client)
        except LandingBusy as e:
            result = e
        except Exception as e:  # noqa: BLE001 - reported per client, the pass goes on
            log.exception("landing %s failed", client)
            result = e
        if on_done is not None:
            on_done(client, result)
        return result

    if parallel <= 1 or len(clients) <= 1:
        return {c: one(c) for c in clients}
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="landing") as pool:
        return dict(zip(clients, pool.map(one, clients)))
