"""`dw stack up --spark --postgres`: Sail serves Spark Connect and a project-owned PostgreSQL holds the Dagster
instance, each on its own free port, ready by a real query, stopped by `down`."""
from __future__ import annotations

import socket

import dagster as dg
import pytest

from dw_assets.settings import load_settings
from dw_assets.stack import ServiceError, Stack, StackConfig, find_free_port
from dw_assets.stack.process import pid_alive
from dw_assets.stack.sail import spark_answers


def test_up_starts_sail_and_postgres_for_dagster_and_down_stops_them(tmp_path):
    home = tmp_path / "s"
    st = Stack(StackConfig(home=home, mariadb_port=find_free_port(), kafka_port=find_free_port(), spark=True,
                           dagster_storage="postgres"))
    try:
        status = st.up()
        assert status["spark"]["state"] == status["postgres"]["state"] == "running"
        assert status["postgres"]["port"] != 5432
        settings = load_settings(env={}, home=home)
        assert settings.spark_remote == status["spark"]["remote"]
        assert spark_answers(settings.spark_remote)
        instance = dg.DagsterInstance.from_config(settings.dagster_home)
        assert [type(s).__name__ for s in (instance.run_storage, instance.event_log_storage,
                                           instance.schedule_storage)] == \
            ["PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"]
        # The instance file holds the password: private.
        assert ((home / "dagster" / "dagster.yaml").stat().st_mode & 0o077) == 0
        again = st.up()  # idempotent: nothing restarted
        assert again["spark"]["pid"] == status["spark"]["pid"] and again["postgres"]["pid"] == status["postgres"]["pid"]
    finally:
        stopped = st.down()
    assert {"spark", "postgres"} <= set(stopped)
    assert not pid_alive(status["spark"]["pid"]) and not pid_alive(status["postgres"]["pid"])
    assert not spark_answers(status["spark"]["remote"], 1.0)


def test_sail_on_a_busy_port_fails_naming_the_port(tmp_path):
    from dw_assets.stack.sail import SailServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServiceError, match=str(port)):
            SailServer(tmp_path, port).start()


def test_unknown_dagster_storage_is_refused(tmp_path):
    st = Stack(StackConfig(home=tmp_path / "s", mariadb_port=find_free_port(), kafka_port=find_free_port(),
                           dagster_storage="mysql"))
    with pytest.raises(ServiceError, match="DW_DAGSTER_STORAGE"):
        st.up()
    assert not pid_alive(st.read_state().get("mariadb", {}).get("pid"))
