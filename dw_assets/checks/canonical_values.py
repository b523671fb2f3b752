"""Canonical text of a column value, identical whether it came from MariaDB (PyMySQL) or silver (Arrow).

Reconciliation hashes these renderings on both sides, so every type must render the same way from each:
DECIMAL at the column's scale, DATETIME/TIMESTAMP as naive UTC with microseconds, JSON re-serialized with
sorted keys, BLOB as hex, BIT and TIME as integers (the lake stores them as '0101' text and microseconds).
"""
from __future__ import annotations

import hashlib
import json
import struct
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

from dw_assets.model import TypeSpec
from dw_assets.model.geometry import to_internal

NULL = "\x00N"  # cannot collide with a rendered value: no rendering starts with NUL
SEP = "\x1f"
MASK64 = (1 << 64) - 1

Renderer = Callable[[Any], str]


def _int(v: Any) -> str:
    return str(int(v))


def _decimal(scale: int) -> Renderer:
    def render(v: Any) -> str:
        d = v if isinstance(v, Decimal) else Decimal(str(v))
        return f"{d:.{scale}f}"
    return render


def _float32(v: Any) -> str:
    # FLOAT arrives as the server's shortest text (1.1) from MariaDB and as float32 widened (1.100000023841858)
    # from Arrow: round both through float32 first.
    return repr(struct.unpack("f", struct.pack("f", float(v)))[0])


def _double(v: Any) -> str:
    return repr(float(v))


def _datetime(v: Any) -> str:
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(timezone.utc).replace(tzinfo=None)
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")
    return str(v)  # zero dates come back as text from PyMySQL


def _date(v: Any) -> str:
    return v.isoformat() if isinstance(v, (date, datetime)) else str(v)


def _time_us(v: Any) -> str:
    if isinstance(v, timedelta):
        return str((v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds)
    if isinstance(v, time):
        return str(((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond)
    return str(int(v))


def _bit(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return str(int.from_bytes(v, "big"))
    if isinstance(v, str):
        return str(int(v, 2)) if v else "0"
    return str(int(v))


def _json(v: Any) -> str:
    text = v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return text


def _bytes(strip_padding: bool) -> Renderer:
    def render(v: Any) -> str:
        b = bytes(v) if not isinstance(v, str) else v.encode()
        # BINARY(n) is zero-padded by the server but not necessarily in the binlog image.
        return (b.rstrip(b"\x00") if strip_padding else b).hex()
    return render


def _geometry(v: Any) -> str:
    # MariaDB gives its stored bytes (SRID + WKB); silver the struct {wkb, srid}: both render as the stored bytes.
    if isinstance(v, dict):
        v = to_internal(v["wkb"], v["srid"])
    return bytes(v).hex()


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)


def _set(labels: tuple[str, ...]) -> Renderer:
    def render(v: Any) -> str:
        if isinstance(v, (set, frozenset, list, tuple)):
            return ",".join(x for x in labels if x in v)
        return _text(v)
    return render


def renderer(spec: TypeSpec) -> Renderer:
    """The canonical renderer of one column type (built once per column, applied per value)."""
    b = spec.base
    if spec.is_integer or b == "year":
        return _int
    if b == "decimal":
        return _decimal(spec.scale or 0)
    if b == "float":
        return _float32
    if b == "double":
        return _double
    if b in ("datetime", "timestamp"):
        return _datetime
    if b == "date":
        return _date
    if b == "time":
        return _time_us
    if b == "bit":
        return _bit
    if b == "json":
        return _json
    if b == "set":
        return _set(spec.values)
    if spec.is_binary:
        return _bytes(strip_padding=b == "binary")
    if spec.is_geometry:
        return _geometry
    return _text


def row_hash(values: list[Any], renderers: list[Renderer]) -> int:
    """64-bit hash of a row's canonical rendering (NULL-aware)."""
    return text_hash(SEP.join(NULL if v is None else r(v) for v, r in zip(values, renderers)))


def text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
