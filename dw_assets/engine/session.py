"""A Spark Connect session for the engine: to `settings.spark_remote` (Sail from `dw stack up --spark`, or a
Databricks workspace), with the session settings the lake's semantics need."""
from __future__ import annotations

import importlib.util
import os
import socket
from contextlib import contextmanager
from typing import Iterator

from dw_assets.settings import Settings, SettingsError


def ensure_spark_home() -> None:
    """pyspark-client has no Spark distribution, and parts of pyspark look one up at import, calling sys.exit
    when none is found (e.g. in a pytest-xdist worker, whose code comes over stdin). The package directory
    satisfies the lookup; a Connect client needs nothing from it."""
    spec = importlib.util.find_spec("pyspark")
    if spec is not None and spec.submodule_search_locations:
        os.environ.setdefault("SPARK_HOME", list(spec.submodule_search_locations)[0])


def _check_reachable(remote: str, timeout: float = 3.0) -> None:
    """A one-line error at once when nothing listens at `remote`: the client would retry a refused connection
    for minutes."""
    host, _, port = remote.removeprefix("sc://").partition("/")[0].partition(";")[0].partition(":")
    try:
        socket.create_connection((host, int(port or 15002)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise SettingsError(f"Spark Connect server {remote} is unreachable ({e}): start it (`dw stack up --spark`) "
                            "or fix DW_SPARK_REMOTE") from None


@contextmanager
def spark_session(settings: Settings | None = None, remote: str | None = None) -> Iterator["SparkSession"]:  # noqa: F821
    """A new session (closed on exit). UTC: the lake's timestamps are UTC instants."""
    remote = remote or (settings.spark_remote if settings else None)
    if not remote:
        raise SettingsError("DW_SPARK_REMOTE is not set and the stack runs no Sail: `dw stack up --spark`, or set "
                            "DW_SPARK_REMOTE=sc://host:port")
    _check_reachable(remote)
    ensure_spark_home()
    from pyspark.sql.connect.session import SparkSession

    session = SparkSession.builder.remote(remote).create()
    try:
        session.conf.set("spark.sql.session.timeZone", "UTC")
        yield session
    finally:
        session.stop()


def read_delta_arrow(session, path: str):
    """Every row of the Delta table at `path`, as a pyarrow Table."""
    return session.read.format("delta").load(path).toArrow()
