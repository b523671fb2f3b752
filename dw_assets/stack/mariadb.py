"""The stack's own MariaDB instance: own datadir, socket and port, configured for CDC.

Binary logging in ROW format with FULL row image and FULL row metadata, so that capture gets column names
from the binlog itself; an admin user and a least-privilege CDC user with generated passwords.
"""
from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .process import ServiceError, pid_alive, port_in_use, spawn, stop_pid, tail, wait_until

if TYPE_CHECKING:  # imported where a connection is made: `dw stack status` of a stopped stack needs none
    import pymysql

INSTALL_HINT = "MariaDB's server binaries are missing: install them (Debian/Ubuntu: apt-get install -y mariadb-server)"

CDC_GRANTS = ("REPLICATION SLAVE", "BINLOG MONITOR", "SELECT")


def find_binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None)
        if path:
            return path
    raise ServiceError(f"{INSTALL_HINT} (looked for {', '.join(names)})")


@dataclass
class MariaDBInstance:
    base: Path  # $DW_HOME/mariadb
    port: int
    server_id: int = 1

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket(self) -> Path:
        return self.base / "mariadb.sock"

    @property
    def config(self) -> Path:
        return self.base / "my.cnf"

    @property
    def log(self) -> Path:
        return self.base / "mariadb.log"

    @property
    def pid_file(self) -> Path:
        return self.base / "mariadb.pid"

    def write_config(self) -> None:
        (self.base / "tmp").mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "\n".join(
                [
                    "[mariadbd]",
                    "user=root",
                    f"datadir={self.datadir}",
                    f"socket={self.socket}",
                    f"port={self.port}",
                    "bind-address=127.0.0.1",
                    f"pid-file={self.pid_file}",
                    f"log-error={self.log}",
                    # Own temp dir: internal temporary tables must not live in a shared /tmp others clean.
                    f"tmpdir={self.base / 'tmp'}",
                    "skip-name-resolve",
                    # CDC: every committed row change with full images and column names in the binlog.
                    f"server-id={self.server_id}",
                    f"log-bin={self.base / 'binlog' / 'dw-bin'}",
                    "binlog-format=ROW",
                    "binlog-row-image=FULL",
                    "binlog-row-metadata=FULL",
                    "max-binlog-size=256M",
                    "binlog-expire-logs-seconds=604800",
                    "character-set-server=utf8mb4",
                    "collation-server=utf8mb4_unicode_ci",
                    "innodb-buffer-pool-size=256M",
                    "max-connections=300",
                    "",
                    "[client]",
                    f"socket={self.socket}",
                    f"port={self.port}",
                    "",
                ]
            )
        )

    def initialized(self) -> bool:
        return (self.datadir / "mysql").is_dir()

    def install(self) -> None:
        install_db = find_binary("mariadb-install-db", "mysql_install_db")
        (self.base / "binlog").mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [install_db, f"--defaults-file={self.config}", "--auth-root-authentication-method=normal",
             "--skip-test-db", "--user=root"],
            capture_output=True, text=True, timeout=120,
        )
        if proc.returncode != 0:
            shutil.rmtree(self.datadir, ignore_errors=True)  # nothing half-initialized left behind
            raise ServiceError(f"mariadb-install-db failed for datadir {self.datadir}:\n{proc.stdout}\n{proc.stderr}")

    def start(self, timeout: float = 30.0) -> int:
        """Start mariadbd and wait for a real connection; returns the PID."""
        if port_in_use(self.port):
            raise ServiceError(f"MariaDB cannot start: port {self.port} on 127.0.0.1 is already in use "
                               "(set another with --mariadb-port)")
        mariadbd = find_binary("mariadbd", "mysqld")
        self.write_config()
        if not self.initialized():
            self.install()
        proc = spawn([mariadbd, f"--defaults-file={self.config}"], self.base / "mariadbd.stdout")
        def ready() -> bool:
            if proc.poll() is not None:
                return True
            return self.ping_root()
        wait_until(ready, timeout, 0.1)
        if proc.poll() is not None or not self.ping_root():
            stop_pid(proc.pid, 5)
            raise ServiceError(
                f"MariaDB did not come up on 127.0.0.1:{self.port} (log: {self.log}):\n{tail(self.log)}"
            )
        return proc.pid

    def root_connect(self, database: str | None = None) -> pymysql.Connection:
        # Root authenticates by the unix socket only; TCP clients use the generated users.
        import pymysql

        return pymysql.connect(unix_socket=str(self.socket), user="root", password="", database=database,
                               autocommit=True, charset="utf8mb4", connect_timeout=3)

    def ping_root(self) -> bool:
        import pymysql

        try:
            conn = self.root_connect()
        except pymysql.err.OperationalError:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        finally:
            conn.close()

    def bootstrap_users(self, admin_user: str, cdc_user: str, admin_password: str | None, cdc_password: str | None) -> tuple[str, str]:
        """Create (or re-key) the admin and CDC users; returns their passwords.

        The statements carry the passwords in plain text: the session keeps them out of the binary log, which
        every REPLICATION SLAVE account (the CDC user included) can read.
        """
        admin_password = admin_password or secrets.token_urlsafe(18)
        cdc_password = cdc_password or secrets.token_urlsafe(18)
        conn = self.root_connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION sql_log_bin = 0")
                for user, pw in ((admin_user, admin_password), (cdc_user, cdc_password)):
                    cur.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (user, pw))
                    cur.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (user, pw))
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", (admin_user,))
                cur.execute(f"GRANT {', '.join(CDC_GRANTS)} ON *.* TO %s@'%%'", (cdc_user,))
        finally:
            conn.close()
        return admin_password, cdc_password

    def stop(self, pid: int | None, timeout: float = 30.0) -> bool:
        # SIGTERM makes mariadbd shut down cleanly (flushes InnoDB and the binlog).
        stopped = stop_pid(pid, timeout)
        wait_until(lambda: not self.pid_file.exists(), 5)
        return stopped

    def alive(self, pid: int | None) -> bool:
        return pid_alive(pid) and self.ping_root()


def wait_port_closed(port: int, timeout: float = 10.0) -> bool:
    return wait_until(lambda: not port_in_use(port), timeout)


def now_ms() -> int:
    return int(time.time() * 1000)
