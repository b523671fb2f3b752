"""The local stack: MariaDB, the Kafka-protocol broker, an optional S3 endpoint, the landing and lake stores,
optionally Sail (local Spark Connect, `--spark`) and a PostgreSQL for the Dagster instance (`--postgres`).

`up` is idempotent (a running service is reported, not restarted), `down` stops by recorded PID, and the
state file `$DW_HOME/stack.json` (mode 0600) is what `load_settings` reads to connect every stage.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from ..settings import DEFAULT_KAFKA_PORT, DEFAULT_MARIADB_PORT, STATE_FILE, S3Settings
from . import dagster_home as dagster_home_config
from .broker import TansuBroker, kafka_answers
from .dagster_home import REPO_ROOT
from .mariadb import MariaDBInstance
from .postgres import PostgresInstance
from .process import ServiceError, find_free_port, pid_alive
from .s3 import LOCAL_KEY, MotoServer, ensure_bucket
from .sail import SailServer

__all__ = ["REPO_ROOT", "Stack", "StackConfig"]
BROKER_BUCKET = "tansu"
USERS_UNLOGGED = "users_created_outside_binlog"  # state marker: passwords were never written to the binlog


@dataclass
class StackConfig:
    home: Path
    mariadb_port: int = DEFAULT_MARIADB_PORT
    kafka_port: int = DEFAULT_KAFKA_PORT
    s3_port: int | None = None  # chosen freely when an s3:// store needs the local endpoint
    landing_url: str | None = None  # default: <home>/landing
    lake_url: str | None = None  # default: <home>/lake
    broker_storage: str = "memory"  # memory | s3 (durable, on the local S3 endpoint)
    admin_user: str = "dw_admin"
    cdc_user: str = "dw_cdc"
    spark: bool = False  # start Sail, the local Spark Connect server
    spark_port: int | None = None  # chosen freely when not given
    dagster_storage: str | None = None  # sqlite | postgres (own server unless dagster_postgres_url); None: as before
    dagster_postgres_url: str | None = None
    postgres_port: int | None = None  # chosen freely when not given

    @classmethod
    def from_env(cls, home: Path, env: dict[str, str] | None = None, **overrides: Any) -> "StackConfig":
        env = dict(os.environ if env is None else env)
        cfg = cls(
            home=home,
            mariadb_port=int(env.get("DW_MARIADB_PORT", DEFAULT_MARIADB_PORT)),
            kafka_port=int(env.get("DW_KAFKA_PORT", DEFAULT_KAFKA_PORT)),
            landing_url=env.get("DW_LANDING_URL") or None,
            lake_url=env.get("DW_LAKE_URL") or None,
            broker_storage=env.get("DW_BROKER_STORAGE", "memory"),
            spark=env.get("DW_ENGINE") == "spark" and not env.get("DW_SPARK_REMOTE"),
            spark_port=int(env["DW_SPARK_PORT"]) if env.get("DW_SPARK_PORT") else None,
            dagster_storage=env.get("DW_DAGSTER_STORAGE") or None,
            dagster_postgres_url=env.get("DW_DAGSTER_POSTGRES_URL") or None,
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg


@dataclass
class Stack:
    config: StackConfig
    progress: Callable[[str], None] = field(default=lambda msg: None)

    # ---- state ------------------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.config.home

    @property
    def state_file(self) -> Path:
        return self.home / STATE_FILE

    def read_state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {}
        return json.loads(self.state_file.read_text())

    def write_state(self, state: dict[str, Any]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        # The state file holds passwords: create it private, then swap it in atomically.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
        os.replace(tmp, self.state_file)

    # ---- services ---------------------------------------------------------------------------------------
    def _mariadb(self, state: dict[str, Any]) -> MariaDBInstance:
        port = state.get("mariadb", {}).get("port", self.config.mariadb_port)
        return MariaDBInstance(self.home / "mariadb", port)

    def _broker(self, state: dict[str, Any]) -> TansuBroker:
        k = state.get("kafka", {})
        port = k.get("port", self.config.kafka_port)
        storage = k.get("storage", self.config.broker_storage)
        s3 = state.get("s3", {})
        if storage == "s3":
            env = {
                "AWS_ENDPOINT": s3["endpoint_url"], "AWS_ALLOW_HTTP": "true", "AWS_DEFAULT_REGION": s3["region"],
                "AWS_ACCESS_KEY_ID": s3["access_key_id"], "AWS_SECRET_ACCESS_KEY": s3["secret_access_key"],
            }
            return TansuBroker(self.home / "kafka", port, f"s3://{BROKER_BUCKET}/", env)
        return TansuBroker(self.home / "kafka", port)

    def _moto(self, state: dict[str, Any]) -> MotoServer:
        port = state.get("s3", {}).get("port") or self.config.s3_port or find_free_port()
        return MotoServer(self.home / "s3", port)

    def _sail(self, state: dict[str, Any]) -> SailServer:
        port = state.get("spark", {}).get("port") or self.config.spark_port or find_free_port()
        return SailServer(self.home / "sail", port)

    def _postgres(self, state: dict[str, Any]) -> PostgresInstance:
        port = state.get("postgres", {}).get("port") or self.config.postgres_port or find_free_port()
        return PostgresInstance(self.home / "postgres", port)

    def _needs_s3(self, landing: str, lake: str, storage: str) -> bool:
        return landing.startswith("s3://") or lake.startswith("s3://") or storage == "s3"

    def up(self) -> dict[str, Any]:
        """Start what is not running; returns the status. Services this call started are stopped on failure."""
        state = self.read_state()
        started: list[tuple[str, int]] = []
        try:
            state = self._up(state, started)
        except BaseException:
            for name, pid in reversed(started):
                self._stop_one(name, pid, state)
            raise
        return self.status()

    def _up(self, state: dict[str, Any], started: list[tuple[str, int]]) -> dict[str, Any]:
        home = self.home
        home.mkdir(parents=True, exist_ok=True)
        landing = state.get("landing", {}).get("url") or self.config.landing_url or str(home / "landing")
        lake = state.get("lake", {}).get("url") or self.config.lake_url or str(home / "lake")
        storage = state.get("kafka", {}).get("storage") or self.config.broker_storage
        if storage not in ("memory", "s3"):
            raise ServiceError(f"DW_BROKER_STORAGE must be 'memory' or 's3', not {storage!r}")
        if self.config.dagster_storage not in (None, "sqlite", "postgres"):
            raise ServiceError(f"DW_DAGSTER_STORAGE must be 'sqlite' or 'postgres', not {self.config.dagster_storage!r}")
        state.setdefault("landing", {})["url"] = landing
        state.setdefault("lake", {})["url"] = lake
        state.setdefault("reports", {})["dir"] = state.get("reports", {}).get("dir") or str(home / "reports")
        dagster_home = Path(state.get("dagster", {}).get("home") or home / "dagster")
        state.setdefault("dagster", {})["home"] = str(dagster_home)
        for url in (landing, lake):
            if not url.startswith("s3://"):
                Path(url).mkdir(parents=True, exist_ok=True)

        # S3 endpoint first: the broker and the stores may live on it.
        if self._needs_s3(landing, lake, storage):
            moto = self._moto(state)
            s3 = state.setdefault("s3", {})
            if not moto.alive(s3.get("pid")):
                self.progress(f"starting S3 endpoint (moto) on {moto.endpoint_url}")
                pid = moto.start()
                started.append(("s3", pid))
                s3.update(pid=pid, port=moto.port, endpoint_url=moto.endpoint_url, region="us-east-1",
                          access_key_id=LOCAL_KEY, secret_access_key=LOCAL_KEY, allow_http=True, log=str(moto.log))
                self.write_state(state)
            kw = {"endpoint_url": s3["endpoint_url"], "region_name": s3["region"],
                  "aws_access_key_id": s3["access_key_id"], "aws_secret_access_key": s3["secret_access_key"]}
            buckets = {urlparse(u).netloc for u in (landing, lake) if u.startswith("s3://")}
            if storage == "s3":
                buckets.add(BROKER_BUCKET)
            for b in sorted(buckets):
                ensure_bucket(b, **kw)

        db = self._mariadb(state)
        m = state.setdefault("mariadb", {})
        if db.alive(m.get("pid")):
            self.progress(f"MariaDB already running on 127.0.0.1:{db.port}")
        else:
            self.progress(f"starting MariaDB on 127.0.0.1:{db.port} (datadir {db.datadir})")
            pid = db.start()
            started.append(("mariadb", pid))
            # Stacks made before users were created outside the binlog have the passwords in their first binlog
            # file: rotate them once, so what the binlog holds no longer opens anything.
            keep = bool(m.get(USERS_UNLOGGED))
            if not keep and m.get("admin_password"):
                self.progress("rotating the MariaDB users' passwords (the old ones are in the binlog); restart "
                              "processes that connected with them")
            admin_pw, cdc_pw = db.bootstrap_users(self.config.admin_user, self.config.cdc_user,
                                                  m.get("admin_password") if keep else None,
                                                  m.get("cdc_password") if keep else None)
            m.update(host="127.0.0.1", port=db.port, pid=pid, admin_user=self.config.admin_user,
                     admin_password=admin_pw, cdc_user=self.config.cdc_user, cdc_password=cdc_pw,
                     datadir=str(db.datadir), socket=str(db.socket), log=str(db.log), **{USERS_UNLOGGED: True})
            self.write_state(state)

        broker = self._broker(state)
        k = state.setdefault("kafka", {})
        if broker.alive(k.get("pid")):
            self.progress(f"Kafka broker already running on {broker.bootstrap}")
        else:
            self.progress(f"starting Kafka broker (Tansu, {storage} storage) on {broker.bootstrap}")
            pid = broker.start()
            started.append(("kafka", pid))
            k.update(pid=pid, port=broker.port, bootstrap=broker.bootstrap, storage=storage, log=str(broker.log))
            self.write_state(state)

        if self.config.spark or state.get("spark", {}).get("pid"):
            self._up_sail(state, started)
        dagster_home_config.prepare(dagster_home, self._up_postgres(state, started))
        return state

    def _up_sail(self, state: dict[str, Any], started: list[tuple[str, int]]) -> None:
        sail = self._sail(state)
        sp = state.setdefault("spark", {})
        if sail.alive(sp.get("pid")):
            self.progress(f"Sail (Spark Connect) already running on {sail.remote}")
            return
        self.progress(f"starting Sail (Spark Connect) on {sail.remote}")
        s3 = state.get("s3", {})
        pid = sail.start(s3=S3Settings(endpoint_url=s3["endpoint_url"], region=s3["region"],
                                       access_key_id=s3["access_key_id"], secret_access_key=s3["secret_access_key"],
                                       allow_http=True) if s3.get("endpoint_url") else None)
        started.append(("spark", pid))
        sp.update(pid=pid, port=sail.port, remote=sail.remote, log=str(sail.log))
        self.write_state(state)

    def _up_postgres(self, state: dict[str, Any], started: list[tuple[str, int]]) -> str | None:
        """The Dagster storage URL: None for SQLite, the given server's, or the stack's own (started here)."""
        # A home keeps its storage unless told otherwise: its runs are there.
        storage = self.config.dagster_storage or state.get("dagster", {}).get("storage") or "sqlite"
        state.setdefault("dagster", {})["storage"] = storage
        if storage == "sqlite":
            return None
        if self.config.dagster_postgres_url:
            return self.config.dagster_postgres_url
        db = self._postgres(state)
        pg = state.setdefault("postgres", {})
        if db.alive(pg.get("pid"), pg.get("password")):
            self.progress(f"PostgreSQL (Dagster storage) already running on 127.0.0.1:{db.port}")
        else:
            self.progress(f"starting PostgreSQL (Dagster storage) on 127.0.0.1:{db.port} (datadir {db.datadir})")
            pid, password = db.start(pg.get("password"))
            started.append(("postgres", pid))
            pg.update(pid=pid, port=db.port, password=password, datadir=str(db.datadir), log=str(db.log))
            self.write_state(state)
        return db.url(pg["password"])

    def _stop_one(self, name: str, pid: int | None, state: dict[str, Any]) -> bool:
        if name == "mariadb":
            return self._mariadb(state).stop(pid)
        if name == "kafka":
            return self._broker(state).stop(pid)
        if name == "s3":
            return self._moto(state).stop(pid)
        if name == "spark":
            return self._sail(state).stop(pid)
        if name == "postgres":
            return self._postgres(state).stop(pid)
        return False

    def down(self) -> list[str]:
        """Stop every service `up` started (broker before its storage); returns the names stopped."""
        state = self.read_state()
        stopped = []
        for name in ("spark", "kafka", "mariadb", "postgres", "s3"):
            pid = state.get(name, {}).get("pid")
            if pid and self._stop_one(name, pid, state):
                stopped.append(name)
            if name in state:
                state[name]["pid"] = None
        if state:
            self.write_state(state)
        return stopped

    def status(self) -> dict[str, Any]:
        state = self.read_state()
        m, k, s3 = state.get("mariadb", {}), state.get("kafka", {}), state.get("s3", {})
        db = self._mariadb(state)
        out: dict[str, Any] = {
            "home": str(self.home),
            "mariadb": {
                "state": "running" if db.alive(m.get("pid")) else "stopped",
                "host": m.get("host", "127.0.0.1"), "port": m.get("port", self.config.mariadb_port),
                "admin_user": m.get("admin_user"), "admin_password": m.get("admin_password"),
                "cdc_user": m.get("cdc_user"), "cdc_password": m.get("cdc_password"),
                "pid": m.get("pid"), "datadir": m.get("datadir"), "log": m.get("log"),
            },
            "kafka": {
                "state": "running" if pid_alive(k.get("pid")) and kafka_answers(k.get("bootstrap", ""), 1.0) else "stopped",
                "bootstrap": k.get("bootstrap", f"127.0.0.1:{self.config.kafka_port}"),
                "storage": k.get("storage", self.config.broker_storage), "pid": k.get("pid"), "log": k.get("log"),
            },
            "landing": state.get("landing", {}),
            "lake": state.get("lake", {}),
            "reports": state.get("reports", {}),
            "dagster": state.get("dagster", {}),
        }
        sp, pg = state.get("spark", {}), state.get("postgres", {})
        if sp:
            out["spark"] = {"state": "running" if self._sail(state).alive(sp.get("pid")) else "stopped",
                            **{key: sp.get(key) for key in ("remote", "port", "pid", "log")}}
        if pg:
            running = self._postgres(state).alive(pg.get("pid"), pg.get("password"))
            out["postgres"] = {"state": "running" if running else "stopped",
                               **{key: pg.get(key) for key in ("port", "pid", "datadir", "log")}}
        if s3:
            out["s3"] = {
                "state": "running" if self._moto(state).alive(s3.get("pid")) else "stopped",
                **{key: s3.get(key) for key in ("endpoint_url", "region", "pid", "log")},
            }
        return out
