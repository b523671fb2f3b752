"""Helpers for the onboarding tests: a sandbox per test on the session stack (own registry, topic prefix, state
dir, lake, Dagster home), seeded clients, and what the tests inspect (topics, landing files).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs
import pytest

from dw_assets import db
from dw_assets.identifiers import quote_ident
from dw_assets.lakehouse.paths import filesystem
from dw_assets.onboarding.sandbox import remove_sandbox, sandbox_settings
from dw_assets.settings import Settings
from dw_assets.workload import seed_clients
from dw_assets_tests.conftest import unique_client


@dataclass
class Sandbox:
    settings: Settings
    clients: list[str] = field(default_factory=list)

    def seed(self, rows: int = 400, n: int = 1, prefix: str = "onb", unregister: bool = True) -> list[str]:
        """Seed `n` clients; by default drop their `seeded` registry rows: onboarding then starts from nothing."""
        names = [unique_client(prefix) for _ in range(n)]
        self.clients += names
        seed_clients(self.settings, names, rows_per_client=rows, seed=5)
        if unregister:
            with db.connection(self.settings) as conn, conn.cursor() as cur:
                ctl = quote_ident(self.settings.control_db)
                for name in names:
                    cur.execute(f"DELETE FROM {ctl}.`clients` WHERE `name` = %s", (name,))
                    cur.execute(f"DELETE FROM {ctl}.`client_status_history` WHERE `client` = %s", (name,))
        return names


@pytest.fixture
def sandbox(stack_settings: Settings, tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(sandbox_settings(stack_settings, tmp_path / "sandbox"))
    yield box
    remove_sandbox(box.settings, box.clients)


def landing_files(settings: Settings, database: str) -> list[str]:
    fs, root = filesystem(settings, settings.landing_url)
    prefix = f"{settings.kafka.topic_prefix}.{database}."
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/topics", recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and f"/{prefix}" in i.path)


def source_counts(settings: Settings, database: str, tables: list[str]) -> dict[str, int]:
    with db.connection(settings, database=database) as conn, conn.cursor() as cur:
        out = {}
        for t in tables:
            cur.execute(f"SELECT COUNT(*) FROM {quote_ident(t)}")
            out[t] = cur.fetchone()[0]
        return out
