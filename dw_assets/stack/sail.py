"""The stack's local Spark: Sail (`pysail`), a Spark Connect server in Rust that reads and writes Delta.

Started by `dw stack up --spark` like the other services: own port on 127.0.0.1, ready when a real query
answers through the Spark Connect client, stopped by PID.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from dw_assets.settings import S3Settings

from .process import ServiceError, pid_alive, port_in_use, spawn, stop_pid, tail, wait_until

INSTALL_HINT = "Sail is not installed: `uv sync` installs pysail with the dev group (or pip install pysail==0.7.2)"


def sail_binary() -> str:
    # The console script sits beside the interpreter in a venv; fall back to PATH.
    path = Path(sys.executable).parent / "sail"
    found = str(path) if path.exists() else shutil.which("sail")
    if not found:
        raise ServiceError(INSTALL_HINT)
    return found


def spark_answers(remote: str, timeout: float = 5.0) -> bool:
    """True if `SELECT 1` runs through Spark Connect at `remote` (sc://host:port).

    A closed port answers False at once: the client would retry a refused connection for minutes.
    """
    host, _, port = remote.removeprefix("sc://").partition("/")[0].partition(":")
    try:
        socket.create_connection((host, int(port or 15002)), timeout=timeout).close()
    except OSError:
        return False
    from dw_assets.engine.session import ensure_spark_home

    ensure_spark_home()
    try:
        from pyspark.sql.connect.session import SparkSession
    except ImportError:
        raise ServiceError("the Spark Connect client is missing: install pyspark-client 4.2.x") from None
    try:
        session = SparkSession.builder.remote(remote).create()
    except Exception:
        return False
    try:
        return session.sql("SELECT 1 AS one").collect()[0][0] == 1
    except Exception:
        return False
    finally:
        try:
            session.stop()
        except Exception:
            pass


@dataclass
class SailServer:
    base: Path  # $DW_HOME/sail
    port: int

    @property
    def remote(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.base / "sail.log"

    def start(self, timeout: float = 60.0, s3: "S3Settings | None" = None) -> int:
        """Start and wait for a real query. `s3`: the endpoint and keys of a lake on S3 (e.g. the stack's moto),
        given to Sail through the AWS SDK's environment variables."""
        if port_in_use(self.port):
            raise ServiceError(f"Sail (Spark Connect) cannot start: port {self.port} on 127.0.0.1 is already in use "
                               "(set another with --spark-port)")
        self.base.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **s3.storage_options()) if s3 is not None else None
        proc = spawn([sail_binary(), "spark", "server", "--ip", "127.0.0.1", "--port", str(self.port),
                      "-C", str(self.base)], self.log, env=env)
        ready = lambda: proc.poll() is not None or (port_in_use(self.port) and spark_answers(self.remote))
        wait_until(ready, timeout, 0.2)
        if proc.poll() is not None or not spark_answers(self.remote):
            stop_pid(proc.pid, 5)
            raise ServiceError(f"Sail did not come up on {self.remote} (log: {self.log}):\n{tail(self.log)}")
        return proc.pid

    def stop(self, pid: int | None) -> bool:
        return stop_pid(pid, 10)

    def alive(self, pid: int | None) -> bool:
        return pid_alive(pid) and spark_answers(self.remote, 2.0)
