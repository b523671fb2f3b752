"""The live report server beside the Dagster UI in `dw demo`: started as `dw reports serve` (its own process,
log in the demo's log directory), waited for, and given an operator token kept in a 0600 file (not printed, so
the demo's output never carries a secret)."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dw_assets.reports.live.auth import TokenStore
from dw_assets.reports.live.urls import DEFAULT_HOST, DEFAULT_PORT
from dw_assets.settings import Settings
from dw_assets.stack.process import find_free_port, spawn, stop_pid, tail


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((DEFAULT_HOST, port)) != 0


@dataclass
class LiveReportsServer:
    pid: int
    url: str
    token_file: Path
    log_file: Path

    @classmethod
    def start(cls, settings: Settings, log_dir: Path, say: Callable[[str], None], timeout: float = 90.0
              ) -> "LiveReportsServer":
        port = DEFAULT_PORT if _free(DEFAULT_PORT) else find_free_port()
        log_file = log_dir / "live-reports.log"
        proc = spawn([sys.executable, "-m", "dw_assets.cli", "--home", str(settings.home), "reports", "serve",
                      "--host", DEFAULT_HOST, "--port", str(port)], log_file)
        url = f"http://{DEFAULT_HOST}:{port}"
        say(f"starting the live report server on {url} (log {log_file})")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    if json.loads(r.read()).get("ok"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_pid(proc.pid)
                raise RuntimeError(f"live report server did not come up on {url}; log {log_file}:\n"
                                   f"{tail(log_file)}")
            time.sleep(0.5)
        token_file = settings.home / "demo" / "reports-operator-token"
        token, _ = TokenStore(settings.home).add(operator=True, note="dw demo")
        token_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(fd, 0o600)  # also when the file existed with wider permissions
            f.write(token + "\n")
        return cls(proc.pid, url, token_file, log_file)

    def hint(self) -> str:
        return f"live reports:    {self.url}/ (sign in with the operator token in {self.token_file})"

    def stop(self) -> list[str]:
        return [f"live report server (pid {self.pid})"] if stop_pid(self.pid, timeout=10.0) else []
