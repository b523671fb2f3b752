"""The Dagster processes the demo runs: `dagster-daemon run` (sensors, run queue, automation) and, optionally,
`dagster-webserver`, each its own process on the instance at `settings.dagster_home`, stopped by PID.

They are spawned through `stack.process.spawn` (default signal handlers, own session): a daemon started from a
non-interactive shell would otherwise inherit SIGINT as ignored and survive the demo.
"""
from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from dw_assets.partitions import CLIENTS_PARTITION_NAME
from dw_assets.settings import Settings
from dw_assets.stack.process import ServiceError, pid_alive, port_in_use, spawn, stop_pid, tail, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = REPO_ROOT / "workspace.yaml"


def _bin(name: str) -> str:
    """The console script next to this interpreter (the project's venv), else whatever PATH has."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def dagster_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the Dagster processes: the instance and the stack's state directory."""
    env = settings.child_env()  # the code location builds its assets from the same model as the demo
    env["DAGSTER_HOME"] = str(Path(settings.dagster_home).resolve())
    env.update(extra or {})
    return env


def webserver_answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def prepare_instance(settings: Settings) -> None:
    """Create the instance's storage (SQLite databases, schema) before any process uses it: a daemon, a webserver
    and an onboarding creating a fresh instance at once race on its migrations ("more than one head")."""
    import dagster as dg

    home = Path(settings.dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        instance.get_runs_count()
        instance.get_dynamic_partitions(CLIENTS_PARTITION_NAME)
    finally:
        instance.dispose()


def daemon_heartbeat_since(settings: Settings, since: float) -> bool:
    """True once the daemon on this instance has sent a sensor heartbeat after `since` (epoch seconds)."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(Path(settings.dagster_home).resolve()))
    try:
        beats = instance.get_daemon_heartbeats()
        return any(name == "SENSOR" and hb.timestamp >= since for name, hb in beats.items())
    finally:
        instance.dispose()


@dataclass
class DagsterProcesses:
    """Start with `start_daemon()` / `start_webserver()`, stop with `stop()` (webserver first)."""

    settings: Settings
    log_dir: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    pids: dict[str, int] = field(default_factory=dict)
    ui_port: int | None = None
    _daemon_started_at: float = 0.0

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.host}:{self.ui_port}" if self.ui_port else None

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _spawn(self, name: str, cmd: list[str]) -> int:
        Path(self.settings.dagster_home).mkdir(parents=True, exist_ok=True)
        proc = spawn(cmd, self.log(name), env=dagster_env(self.settings, self.env_extra), cwd=REPO_ROOT)
        self.pids[name] = proc.pid
        return proc.pid

    def start_daemon(self) -> int:
        self._daemon_started_at = time.time()
        return self._spawn("dagster-daemon", [_bin("dagster-daemon"), "run", "-w", str(WORKSPACE)])

    def start_webserver(self, port: int = 3000) -> int:
        if port_in_use(port, self.host):
            raise ServiceError(f"port {self.host}:{port} is in use: pick another with --ui-port")
        self.ui_port = port
        return self._spawn("dagster-webserver", [_bin("dagster-webserver"), "-h", self.host, "-p", str(port),
                                                 "-w", str(WORKSPACE)])

    def wait_daemon(self, timeout: float = 180.0) -> None:
        """Until the sensor daemon heartbeats (code location loaded, sensors ticking)."""
        pid = self.pids["dagster-daemon"]
        ok = wait_until(lambda: not pid_alive(pid) or daemon_heartbeat_since(self.settings, self._daemon_started_at),
                        timeout, interval=1.0)
        if not pid_alive(pid):
            raise ServiceError(f"dagster-daemon exited; log {self.log('dagster-daemon')}:\n"
                               f"{tail(self.log('dagster-daemon'))}")
        if not ok:
            raise ServiceError(f"dagster-daemon sent no heartbeat within {timeout:.0f}s; "
                               f"log {self.log('dagster-daemon')}")

    def wait_webserver(self, timeout: float = 180.0) -> None:
        pid = self.pids["dagster-webserver"]
        url = self.ui_url or ""
        ok = wait_until(lambda: not pid_alive(pid) or webserver_answers(url), timeout, interval=1.0)
        if not pid_alive(pid):
            raise ServiceError(f"dagster-webserver exited; log {self.log('dagster-webserver')}:\n"
                               f"{tail(self.log('dagster-webserver'))}")
        if not ok:
            raise ServiceError(f"dagster-webserver did not answer on {url} within {timeout:.0f}s")

    def alive(self) -> dict[str, bool]:
        return {name: pid_alive(pid) for name, pid in self.pids.items()}

    def stop(self, runs_grace: float = 60.0) -> list[str]:
        """Stop what was started (webserver first: it only reads), by PID; returns the names stopped.

        The daemon's code server and run workers live in the daemon's session (spawn starts one per process):
        runs in flight get `runs_grace` seconds to finish, so that none is left STARTED for ever, then whatever
        is left of the session is stopped by PID."""
        stopped = []
        for name in sorted(self.pids, key=lambda n: n != "dagster-webserver"):
            pid = self.pids[name]
            if stop_pid(pid, timeout=30.0):
                stopped.append(name)
            left = session_members(pid)
            if left:
                wait_until(lambda: not any(pid_alive(p) for p in left), runs_grace, interval=0.5)
                for p in left:
                    stop_pid(p, timeout=10.0)
        return stopped


def session_members(sid: int) -> list[int]:
    """PIDs of the live processes in session `sid` (Linux /proc; empty elsewhere)."""
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, session.
        if int(fields[3]) == sid and int(entry.name) != sid and fields[0] != "Z":
            out.append(int(entry.name))
    return out
