"""An isolated corner of a running stack for benchmarks and tests: its own control database (so capture sees
only its clients), topic prefix, state directory, lake, landing store, reports and Dagster home.

`remove_sandbox` drops what lives on the shared servers (databases, control database, topics).
"""
from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from confluent_kafka.admin import AdminClient

from dw_assets import db
from dw_assets.identifiers import quote_ident, staging_db_for
from dw_assets.landing.client_topics import list_cluster_topics
from dw_assets.settings import Settings


def sandbox_settings(settings: Settings, root: Path, tag: str | None = None) -> Settings:
    tag = tag or uuid.uuid4().hex[:8]
    root.mkdir(parents=True, exist_ok=True)
    return replace(settings, home=root / "home", control_db=f"dw_control_{tag}",
                   kafka=replace(settings.kafka, topic_prefix=f"onb{tag}"),
                   lake_url=str(root / "lake"), landing_url=str(root / "landing"),
                   reports_dir=str(root / "reports"), dagster_home=str(root / "dagster"))


def remove_sandbox(settings: Settings, clients: Iterable[str] = ()) -> None:
    """Drop the sandbox's client databases, its control database and every topic under its prefix."""
    with db.connection(settings) as conn, conn.cursor() as cur:
        for c in clients:
            for name in (c, staging_db_for(c)):
                cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
        cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(settings.control_db)}")
    admin = AdminClient(settings.kafka.client_config())
    prefix = settings.kafka.topic_prefix
    topics = [t for t in list_cluster_topics(admin) if t == prefix or t.startswith(prefix + ".")
              or t.endswith("." + prefix)]  # data and schema topics, heartbeat and offsets topics
    if topics:
        for f in admin.delete_topics(topics, operation_timeout=15).values():
            try:
                f.result(timeout=30)
            except Exception:  # noqa: BLE001 - best effort clean-up
                pass
