"""A local S3 endpoint (moto server) for the landing zone, the lake or the broker's durable storage.

Started only when a URL asks for `s3://` and no external endpoint is configured; the same code path then
talks to a real bucket in production.
"""
from __future__ import annotations

import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .process import ServiceError, pid_alive, port_in_use, spawn, stop_pid, tail, wait_until

LOCAL_KEY = "dw-local"  # moto accepts any credentials; fixed ones keep the state file stable


@dataclass
class MotoServer:
    base: Path  # $DW_HOME/s3
    port: int

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.base / "moto.log"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1) as r:
                return r.status == 200
        except Exception:
            return False

    def start(self, timeout: float = 30.0) -> int:
        if port_in_use(self.port):
            raise ServiceError(f"S3 endpoint (moto) cannot start: port {self.port} on 127.0.0.1 is already in use")
        self.base.mkdir(parents=True, exist_ok=True)
        proc = spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], self.log)
        wait_until(lambda: proc.poll() is not None or self.answers(), timeout, 0.2)
        if proc.poll() is not None or not self.answers():
            stop_pid(proc.pid, 5)
            raise ServiceError(f"S3 endpoint (moto) did not come up on {self.endpoint_url} (log: {self.log}):\n{tail(self.log)}")
        return proc.pid

    def stop(self, pid: int | None) -> bool:
        return stop_pid(pid, 10)

    def alive(self, pid: int | None) -> bool:
        return pid_alive(pid) and self.answers()


def ensure_bucket(bucket: str, **boto3_kwargs) -> None:
    import boto3  # only here: `dw stack status` must not pay boto3's import (~0.5 s)
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", **boto3_kwargs)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)
