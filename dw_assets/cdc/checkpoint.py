"""Where capture resumes: the binlog position (file, pos, MariaDB GTID) of the last fully acknowledged transaction.

Stored in a local state file under settings.home, written atomically and fsynced after the producer flush: the
local Tansu keeps topics in memory, so an offset stored only in Kafka would die with the broker. The same record
is mirrored to the compacted offsets topic for monitoring and for hosts whose Kafka is durable.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..settings import Settings

SNAPSHOTTING, STREAMING = "snapshotting", "streaming"


@dataclass(frozen=True, order=True)
class Position:
    """A binlog coordinate; orders by (file number, offset) because file names sort by their numeric suffix."""

    index: int
    pos: int
    file: str = field(compare=False)

    @classmethod
    def of(cls, file: str, pos: int) -> "Position":
        return cls(int(file.rsplit(".", 1)[-1]), int(pos), file)

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"


@dataclass
class Checkpoint:
    file: str
    pos: int
    gtid: str | None = None  # the GTID of the last transaction at or before file:pos (MariaDB domain-server-seq)
    last_event_ts_ms: int | None = None
    databases: dict[str, str] = field(default_factory=dict)  # database -> snapshotting | streaming
    source_server_id: int | None = None
    saved_at_ms: int = 0
    # database -> [file, pos]: rows events of that database before this position are not emitted again. Set
    # while capture re-reads the binlog for one database (a replay after a broker lost events): the others
    # were delivered up to where the stream was.
    skip_before: dict[str, list] = field(default_factory=dict)

    @property
    def position(self) -> Position:
        return Position.of(self.file, self.pos)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Checkpoint":
        data: dict[str, Any] = json.loads(raw)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def state_dir(settings: Settings) -> Path:
    """One state directory per source server: the capture service is one binlog stream per server."""
    m = settings.mariadb
    return settings.home / "cdc" / f"{m.host}_{m.port}"


def server_key(settings: Settings) -> str:
    return f"{settings.mariadb.host}:{settings.mariadb.port}"


class CheckpointStore:
    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / "checkpoint.json"

    def load(self) -> Checkpoint | None:
        try:
            return Checkpoint.from_json(self.path.read_bytes())
        except FileNotFoundError:
            return None

    def save(self, cp: Checkpoint) -> None:
        """Write-then-rename with fsyncs on the file and the directory: a crash leaves the old or the new record."""
        self.directory.mkdir(parents=True, exist_ok=True)
        cp.saved_at_ms = int(time.time() * 1000)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(cp.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)

    # ---- requests from `dw cdc resnapshot` to a running (or the next) service --------------------------------
    @property
    def requests_dir(self) -> Path:
        return self.directory / "requests"

    def request_resnapshot(self, database: str) -> None:
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        (self.requests_dir / f"{database}.resnapshot").write_text(str(int(time.time())))

    def pending_resnapshots(self) -> set[str]:
        if not self.requests_dir.is_dir():
            return set()
        return {p.name.removesuffix(".resnapshot") for p in self.requests_dir.glob("*.resnapshot")}

    def clear_resnapshot(self, database: str) -> None:
        (self.requests_dir / f"{database}.resnapshot").unlink(missing_ok=True)

    def request_replay(self, database: str, since: Position) -> None:
        """Ask capture to emit `database`'s changes again from the binlog position `since` on."""
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.requests_dir / f".{database}.replay.tmp"
        tmp.write_text(json.dumps({"file": since.file, "pos": since.pos}))
        os.replace(tmp, self.requests_dir / f"{database}.replay")

    def pending_replays(self) -> dict[str, Position]:
        if not self.requests_dir.is_dir():
            return {}
        out = {}
        for p in self.requests_dir.glob("*.replay"):
            data = json.loads(p.read_text())
            out[p.name.removesuffix(".replay")] = Position.of(data["file"], int(data["pos"]))
        return out

    def clear_replay(self, database: str) -> None:
        (self.requests_dir / f"{database}.replay").unlink(missing_ok=True)


class ServiceLock:
    """One capture service per server and state directory (an flock, released by the kernel if the process dies)."""

    def __init__(self, directory: Path):
        self.path = directory / "service.lock"
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder_pid(self) -> int | None:
        """The PID of a running service holding the lock, or None."""
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            try:
                return int(self.path.read_text().strip() or 0) or None
            except ValueError:
                return None
        finally:
            os.close(fd)
