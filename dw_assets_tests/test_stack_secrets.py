"""The generated MariaDB passwords appear nowhere but the private state file: not in the binlog (readable by every
REPLICATION SLAVE account), not in any log under DW_HOME, not in the Dagster storage, after a small pipeline run
and a MariaDB restart; a stack made before users were kept out of the binlog gets its passwords rotated.
"""
from __future__ import annotations

import json
from pathlib import Path

import pymysql
import pytest

from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.lakehouse.apply import apply_client
from dw_assets.landing import land_client
from dw_assets.onboarding.onboard import onboard_client
from dw_assets.onboarding.sandbox import sandbox_settings
from dw_assets.settings import STATE_FILE, load_settings
from dw_assets.stack import Stack, StackConfig, find_free_port
from dw_assets.stack.stack import USERS_UNLOGGED
from dw_assets.workload import apply_batch, seed_clients
from dw_assets_tests.conftest import unique_client


def _files_containing(root: Path, secrets: list[str]) -> list[str]:
    needles = [s.encode() for s in secrets]
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p} holds password {i}" for i, n in enumerate(needles) if n in data]
    return hits


def _connects(settings, user: str, password: str) -> bool:
    try:
        pymysql.connect(host="127.0.0.1", port=settings.mariadb.port, user=user, password=password).close()
        return True
    except pymysql.err.OperationalError:
        return False


@pytest.mark.slow
def test_passwords_stay_out_of_binlog_logs_and_dagster_storage(tmp_path_factory):
    home = tmp_path_factory.mktemp("sec")  # short: MariaDB's socket path must stay under 107 bytes
    stack = Stack(StackConfig(home=home, mariadb_port=find_free_port(), kafka_port=find_free_port()))
    stack.up()
    try:
        settings = load_settings(env={}, home=home)
        first = [settings.mariadb.admin_password, settings.mariadb.cdc_password]
        # A small pipeline run: onboard a client (snapshot, land, apply, reports, Dagster partition), then
        # stream a change through capture, landing and apply.
        box = sandbox_settings(settings, home / "box")
        client = unique_client("sec")
        seed_clients(box, [client], rows_per_client=60, seed=3)
        onboard_client(box, client, run_by="test")
        apply_batch(box, client, seed=1, rows=20)
        CaptureService(box, CaptureOptions(once=True, databases=fixed_source(box, {client}))).run()
        land_client(box, client)
        assert apply_client(box, client).events > 0

        # A stack made before this fix: no marker in its state. Its restart rotates the passwords. (New ports:
        # the old ones can stay in TIME_WAIT for a minute after the shutdown.)
        stack.down()
        state_file = home / STATE_FILE
        state = json.loads(state_file.read_text())
        del state["mariadb"][USERS_UNLOGGED]
        state["mariadb"]["port"], state["kafka"]["port"] = find_free_port(), find_free_port()
        state_file.write_text(json.dumps(state))
        stack.up()
        settings = load_settings(env={}, home=home)
        second = [settings.mariadb.admin_password, settings.mariadb.cdc_password]
        assert set(second).isdisjoint(first)
        assert _connects(settings, settings.mariadb.admin_user, second[0])
        assert not _connects(settings, settings.mariadb.admin_user, first[0])

        binlogs = sorted(p.name for p in home.rglob("dw-bin.0*"))
        assert len(binlogs) >= 2, binlogs  # one per MariaDB start, each holding the user statements if logged
        # Only the private state file holds them (the check itself is proven by that file's hits).
        assert _files_containing(home, first + second) == [f"{state_file} holds password {i}" for i in (2, 3)]
    finally:
        stack.down()
