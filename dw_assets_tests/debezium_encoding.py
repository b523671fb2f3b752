"""Debezium's JSON encodings of MariaDB values, written from the connector's documented type mappings, for tests.

`encode(spec, value, enc)` renders one Python value the way Debezium's MySQL/MariaDB connector would, under its
`time.precision.mode` (adaptive_time_microseconds, adaptive, connect, isostring) and `decimal.handling.mode`
(precise, string, double); `lake_value` is what silver must hold for it.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

from dw_assets.model import TypeSpec

EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Modes:
    time: str = "adaptive_time_microseconds"  # or adaptive, connect, isostring
    decimal: str = "precise"  # or string, double

    @property
    def id(self) -> str:
        return f"{self.time}-{self.decimal}"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def unscaled_bytes(unscaled: int) -> bytes:
    """Java BigInteger.toByteArray(): minimal big-endian two's complement."""
    n = max(1, (unscaled + (unscaled < 0)).bit_length() // 8 + 1)
    return unscaled.to_bytes(n, "big", signed=True)


def _micros(d: timedelta) -> int:
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _iso_time(us: int) -> str:
    sign, us = ("-", -us) if us < 0 else ("", us)
    s, frac = divmod(us, 1_000_000)
    return f"{sign}{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{frac:06d}"


def encode(spec: TypeSpec, value: Any, modes: Modes) -> Any:
    if value is None:
        return None
    b = spec.base
    if spec.is_boolean:
        return int(value)
    if spec.is_integer:
        if b == "bigint" and spec.unsigned and value >= 2**63:
            return value - 2**64  # bigint.unsigned.handling.mode=long (the default) wraps around
        return value
    if b == "decimal":
        if modes.decimal == "string":
            return f"{value:.{spec.scale}f}"
        if modes.decimal == "double":
            return float(value)
        return _b64(unscaled_bytes(int(value.scaleb(spec.scale, Context(prec=80)))))
    if b in ("float", "double", "year"):
        return value
    if b == "date":
        return f"{value.isoformat()}Z" if modes.time == "isostring" else (value - date(1970, 1, 1)).days
    if b == "datetime":
        if modes.time == "isostring":
            return value.isoformat(timespec="microseconds") + "Z"
        us = _micros(value - EPOCH)
        millis = modes.time == "connect" or (spec.fsp or 0) <= 3
        return us // 1000 if millis else us
    if b == "timestamp":  # io.debezium.time.ZonedTimestamp in every mode
        text = value.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
        return text + "Z"
    if b == "time":
        us = _micros(value)
        if modes.time == "isostring":
            return _iso_time(us) + "Z"
        if modes.time == "connect" or (modes.time == "adaptive" and (spec.fsp or 0) <= 3):
            return us // 1000
        return us
    if b == "bit":
        if (spec.length or 1) == 1:
            return value == "1"
        n = int(value, 2)
        return _b64(n.to_bytes(((spec.length or 1) + 7) // 8, "little"))
    if spec.is_binary:
        return _b64(value)
    return value  # text, enum, set, json, uuid


def lake_value(spec: TypeSpec, value: Any) -> Any:
    """What a silver read returns for the source value `value`."""
    if value is None:
        return None
    if spec.is_boolean:
        return bool(value)
    if spec.base == "time":
        return _micros(value)
    if spec.base == "timestamp":
        return value.astimezone(timezone.utc)
    return value


def sample_values(spec: TypeSpec, i: int) -> Any:
    """A few distinct source values per type, i = 0..2 (edges: negatives, zero, fractions, extremes)."""
    b = spec.base
    if spec.is_boolean:
        return [True, False, True][i]
    if spec.is_integer:
        lo, hi = spec.integer_range()
        return [lo, 0, hi][i]
    if b == "decimal":
        s = spec.scale or 0
        digits = spec.precision - s
        big = Decimal("9" * digits + ("." + "9" * s if s else ""))
        return [big.copy_negate(), Decimal(0).scaleb(-s), Decimal(12345).scaleb(-s)][i]
    if b == "float":
        return [-1.5, 0.0, 3.25][i]
    if b == "double":
        return [-0.1, 0.0, 1e300][i]
    if b == "date":
        return [date(1000, 1, 1), date(1970, 1, 1), date(2024, 2, 29)][i]
    if b in ("datetime", "timestamp"):
        fsp = spec.fsp or 0
        frac = [123456, 0, 999999][i] // 10 ** (6 - fsp) * 10 ** (6 - fsp)
        if b == "timestamp":
            base = [datetime(1970, 1, 1, 0, 0, 1), datetime(2000, 1, 1), datetime(2038, 1, 19, 3, 14, 7)][i]
            return base.replace(microsecond=frac, tzinfo=timezone.utc)
        base = [datetime(1000, 1, 1), datetime(1969, 12, 31, 23, 59, 59), datetime(9999, 12, 31, 23, 59, 59)][i]
        return base.replace(microsecond=frac)
    if b == "time":
        fsp = spec.fsp or 0
        frac = [250000, 0, 999999][i] // 10 ** (6 - fsp) * 10 ** (6 - fsp)
        return [timedelta(seconds=-1, microseconds=-frac), timedelta(0),
                timedelta(hours=838, minutes=59, seconds=58, microseconds=frac)][i]
    if b == "year":
        return [1901, 2000, 2155][i]
    if b == "bit":
        n = spec.length or 1
        return ["1" * n, "0" * n, ("10" * n)[:n]][i]
    if spec.is_binary:
        return [b"\x00\xff\x10", b"", bytes(range(256))][i] if b != "binary" else [b"\x01", b"\x00", b"\xff"][i]
    if b in ("enum", "set"):
        return spec.values[i % len(spec.values)]
    if b == "json":
        return ['{"a": [1, 2.5]}', "[]", '"x"'][i]
    if b == "uuid":
        return ["00000000-0000-0000-0000-000000000000", "123e4567-e89b-12d3-a456-426614174000",
                "ffffffff-ffff-ffff-ffff-ffffffffffff"][i]
    return ["héllo 🎉", "", "x' \"quoted\" \\ back"][i]
