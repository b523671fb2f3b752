"""The local stack: start, readiness through real clients, idempotent up, busy ports, stop by PID."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pymysql
import pytest
from confluent_kafka.admin import AdminClient

from dw_assets.db import connect
from dw_assets.settings import load_settings
from dw_assets.stack import ServiceError, Stack, StackConfig, find_free_port
from dw_assets.stack.process import pid_alive, port_in_use


def test_stack_serves_mariadb_for_cdc_and_kafka(stack_settings):
    with connect(stack_settings) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, @@character_set_server, @@bind_address")
        assert cur.fetchone() == (1, "ROW", "FULL", "FULL", "utf8mb4", "127.0.0.1")
    # The CDC user has exactly what capture needs, and cannot write.
    with connect(stack_settings, role="cdc") as conn, conn.cursor() as cur:
        cur.execute("SHOW GRANTS")
        grants = " ".join(r[0] for r in cur.fetchall())
        for priv in ("SELECT", "REPLICATION SLAVE", "BINLOG MONITOR"):
            assert priv in grants
        cur.execute("SHOW MASTER STATUS")
        assert cur.fetchone()[0].startswith("dw-bin.")
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("CREATE DATABASE should_not_exist")
    md = AdminClient(stack_settings.kafka.client_config()).list_topics(timeout=5)
    assert md.brokers


def test_up_is_idempotent_and_status_reports_settings(stack):
    before = stack.read_state()
    status = stack.up()
    after = stack.read_state()
    assert after["mariadb"]["pid"] == before["mariadb"]["pid"]
    assert after["kafka"]["pid"] == before["kafka"]["pid"]
    for path in ("mariadb.host", "mariadb.port", "mariadb.admin_user", "mariadb.admin_password", "mariadb.cdc_user",
                 "mariadb.cdc_password", "kafka.bootstrap", "landing.url", "lake.url", "dagster.home"):
        section, key = path.split(".")
        assert status[section][key], path
    assert status["mariadb"]["state"] == status["kafka"]["state"] == "running"
    assert (stack.state_file.stat().st_mode & 0o077) == 0, "state file with passwords must be private"


def _busy_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


@pytest.mark.parametrize("service", ["mariadb", "kafka"])
def test_busy_port_fails_fast_naming_the_port(tmp_path, service):
    sock, port = _busy_port()
    try:
        ports = {"mariadb_port": find_free_port(), "kafka_port": find_free_port()}
        ports[f"{service}_port"] = port
        st = Stack(StackConfig(home=tmp_path / "s", **ports))
        t0 = time.monotonic()
        with pytest.raises(ServiceError, match=str(port)):
            st.up()
        assert time.monotonic() - t0 < 15
        # Nothing this attempt started is left running.
        state = st.read_state()
        for name in ("mariadb", "kafka"):
            assert not pid_alive(state.get(name, {}).get("pid"))
    finally:
        sock.close()


def test_port_of_a_stopped_server_is_free_despite_time_wait():
    """A server that closed its connections first leaves them in TIME_WAIT on its port; a restart on the same
    port must not be refused for that (it was, for about a minute, after a broker kill or a MariaDB restart)."""
    sock, port = _busy_port()
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = sock.accept()
    conn.close()  # the server side closes first: its end goes to TIME_WAIT
    client.recv(1)
    client.close()
    assert port_in_use(port)  # still listening
    sock.close()
    assert not port_in_use(port)


def test_tansu_on_busy_port_is_detected(tmp_path, monkeypatch):
    """Tansu exits 0 without serving when its port is taken: the readiness check, not the exit code, catches it."""
    from dw_assets.stack import broker as broker_mod

    sock, port = _busy_port()
    try:
        # Skip the pre-check so that Tansu itself meets the busy port.
        monkeypatch.setattr(broker_mod, "port_in_use", lambda p, host="127.0.0.1": False)
        with pytest.raises(ServiceError, match=str(port)):
            broker_mod.TansuBroker(tmp_path, port).start(timeout=10)
    finally:
        sock.close()


@pytest.mark.slow
def test_cli_up_status_down(tmp_path):
    """The command line a user runs: up, status --json, up again (reports running), down."""
    env = {"PATH": "/usr/bin:/bin:/usr/sbin", "DW_HOME": str(tmp_path / "cli"),
           "DW_MARIADB_PORT": str(find_free_port()), "DW_KAFKA_PORT": str(find_free_port())}
    dw = [sys.executable, "-m", "dw_assets.cli"]
    root = Path(__file__).resolve().parents[1]
    try:
        up = subprocess.run(dw + ["stack", "up"], env=env, cwd=root, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        st = subprocess.run(dw + ["stack", "status", "--json"], env=env, cwd=root, capture_output=True, text=True, timeout=60)
        status = json.loads(st.stdout)
        assert status["mariadb"]["state"] == "running" and status["mariadb"]["port"] == int(env["DW_MARIADB_PORT"])
        again = subprocess.run(dw + ["stack", "up"], env=env, cwd=root, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "already running" in again.stdout
        assert status["mariadb"]["admin_password"] not in again.stdout + again.stderr
        settings = load_settings(env={"DW_HOME": env["DW_HOME"]})
        with connect(settings) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        down = subprocess.run(dw + ["stack", "down"], env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0
    assert not pid_alive(status["mariadb"]["pid"]) and not pid_alive(status["kafka"]["pid"])
