"""The landing store: where landing files go, a local directory or any s3:// URL, behind one small interface.

Objects appear whole or not at all (local: temp file + rename; S3: one PUT), which is what makes a crash between
upload and offset commit harmless: the retry writes the same key again.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import pyarrow.parquet as pq

from ..settings import Settings


class LandingStore(Protocol):
    url: str

    def put(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        """Write `data` at `key` atomically (replacing any object there), with string metadata."""

    def head(self, key: str) -> dict[str, str] | None:
        """The metadata written with `key`, or None if there is no such object."""

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix`, sorted."""

    def delete(self, key: str) -> None:
        """Remove `key` (only after it was copied elsewhere: recovery archives, it never discards)."""


@dataclass
class LocalStore:
    root: Path

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        # Local files carry no user metadata: the writer puts the same values in the Parquet footer (see head).
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A dot-prefixed temp name in the same directory: invisible to readers globbing *.parquet, and the
        # rename is atomic because it stays on one file system.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def head(self, key: str) -> dict[str, str] | None:
        path = self._path(key)
        if not path.exists():
            return None
        if path.suffix != ".parquet":
            return {}
        kv = pq.read_metadata(path).metadata or {}
        return {k.decode(): v.decode() for k, v in kv.items() if k.startswith(b"dw-")}

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root
        if not base.exists():
            return []
        keys = (p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """s3://bucket/prefix through boto3; works against AWS and any S3-compatible endpoint (moto locally)."""

    def __init__(self, url: str, boto3_kwargs: dict):
        import boto3  # imported here: local-only deployments never pay for it

        p = urlparse(url)
        self.url = url
        self.bucket = p.netloc
        self.prefix = p.path.strip("/")
        self._s3 = boto3.client("s3", **boto3_kwargs)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        # One PUT: S3 makes an object visible only once it is complete.
        self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, Metadata=metadata)

    def head(self, key: str) -> dict[str, str] | None:
        from botocore.exceptions import ClientError

        try:
            r = self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return dict(r.get("Metadata", {}))

    def get(self, key: str) -> bytes:
        return self._s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(o["Key"][strip:] for o in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))


def open_store(settings: Settings, url: str | None = None) -> LandingStore:
    """The landing store of `settings` (or `url`): s3://bucket/prefix or a local directory."""
    url = url or settings.landing_url
    if not url:
        raise ValueError("no landing URL configured (DW_LANDING_URL)")
    if url.startswith("s3://"):
        return S3Store(url, settings.s3.boto3_kwargs())
    if url.startswith("file://"):
        url = urlparse(url).path
    return LocalStore(Path(url))
