"""The stack's own PostgreSQL for the Dagster instance: own datadir, socket dir and port (never the shared 5432).

Debian's server binaries (/usr/lib/postgresql/<v>/bin). PostgreSQL refuses to run as root: as root the server
runs in a user namespace mapped to the `postgres` account, so the files stay root's own (the datadir may sit
in a private 0700 directory) while the server sees a non-root effective user.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .process import ServiceError, pid_alive, port_in_use, spawn, stop_pid, tail, wait_until

INSTALL_HINT = "PostgreSQL's server binaries are missing: install them (Debian/Ubuntu: apt-get install -y postgresql)"
SUPERUSER = "dw"
DATABASE = "dagster"


def server_bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise ServiceError(INSTALL_HINT)


def _as_unprivileged(cmd: list[str]) -> list[str]:
    """`cmd` as given, or (as root) wrapped in a user namespace that maps root to the postgres account."""
    if os.geteuid() != 0:
        return cmd
    unshare = shutil.which("unshare")
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError("PostgreSQL cannot run as root and there is no `postgres` account to map to") from None
    if not unshare:
        raise ServiceError("PostgreSQL cannot run as root and `unshare` (util-linux) is missing")
    return [unshare, "--user", f"--map-user={pw.pw_uid}", f"--map-group={pw.pw_gid}", *cmd]


@dataclass
class PostgresInstance:
    base: Path  # $DW_HOME/postgres
    port: int

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "run"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def url(self, password: str, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def install(self, password: str) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        pwfile = self.base / "initdb.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        try:
            proc = subprocess.run(
                _as_unprivileged([str(server_bin_dir() / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
                                  "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8",
                                  "--no-instructions"]),
                capture_output=True, text=True, timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            shutil.rmtree(self.datadir, ignore_errors=True)  # nothing half-initialized left behind
            raise ServiceError(f"initdb failed for datadir {self.datadir}:\n{proc.stdout}\n{proc.stderr}")

    def start(self, password: str | None, timeout: float = 30.0) -> tuple[int, str]:
        """Start the server (initializing the datadir first) and create the Dagster database; returns
        (pid, password). `password` is the superuser's, None for a new datadir."""
        if port_in_use(self.port):
            raise ServiceError(f"PostgreSQL cannot start: port {self.port} on 127.0.0.1 is already in use "
                               "(set another with --postgres-port)")
        if not self.initialized():
            password = secrets.token_urlsafe(18)
            self.install(password)
        if not password:
            raise ServiceError(f"PostgreSQL datadir {self.datadir} exists but the stack state has no password for it")
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        proc = spawn(_as_unprivileged([str(server_bin_dir() / "postgres"), "-D", str(self.datadir),
                                       "-p", str(self.port), "-k", str(self.socket_dir),
                                       "-c", "listen_addresses=127.0.0.1"]), self.log)
        wait_until(lambda: proc.poll() is not None or self.answers(password), timeout, 0.2)
        if proc.poll() is not None or not self.answers(password):
            stop_pid(proc.pid, 5)
            raise ServiceError(f"PostgreSQL did not come up on 127.0.0.1:{self.port} (log: {self.log}):\n{tail(self.log)}")
        self.ensure_database(password)
        return proc.pid, password

    def _connect(self, password: str, database: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, password=password,
                                dbname=database, connect_timeout=2)

    def answers(self, password: str) -> bool:
        try:
            conn = self._connect(password)
        except Exception:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        finally:
            conn.close()

    def ensure_database(self, password: str) -> None:
        conn = self._connect(password)
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE}"')  # a constant identifier, not input
        finally:
            conn.close()

    def stop(self, pid: int | None) -> bool:
        # SIGINT is PostgreSQL's fast shutdown: SIGTERM would wait for every Dagster connection to close.
        if not pid_alive(pid):
            return False
        assert pid is not None
        os.kill(pid, signal.SIGINT)
        stop_pid(pid, 20)
        return True

    def alive(self, pid: int | None, password: str | None) -> bool:
        return pid_alive(pid) and bool(password) and self.answers(password or "")
