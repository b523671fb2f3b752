"""Spatial values: MariaDB's internal geometry format (4-byte little-endian SRID + WKB), WKB, and WKT.

Capture emits Debezium's `io.debezium.data.geometry.Geometry` ({"wkb": base64, "srid": int or null}); the lake
keeps the same struct (WKB bytes + SRID). `wkt` renders a lake value (or WKB bytes) as Well-Known Text, and
`register_wkt` makes it a DuckDB function, so readers of the lake get WKT without a spatial extension.
"""
from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any, Sequence

_TYPES = {1: "POINT", 2: "LINESTRING", 3: "POLYGON", 4: "MULTIPOINT", 5: "MULTILINESTRING", 6: "MULTIPOLYGON",
          7: "GEOMETRYCOLLECTION"}
_CODES = {name: code for code, name in _TYPES.items()}


class GeometryError(ValueError):
    """Bytes that are not a 2D WKB geometry."""


def split_internal(value: bytes) -> tuple[bytes, int | None]:
    """MariaDB's stored value -> (WKB, SRID); SRID 0 is None, as Debezium's MySqlGeometry renders it."""
    if len(value) < 5:
        raise GeometryError(f"geometry value of {len(value)} bytes is shorter than SRID + WKB header")
    srid = int.from_bytes(value[:4], "little")
    return bytes(value[4:]), (srid or None)


def to_internal(wkb: bytes, srid: int | None) -> bytes:
    """(WKB, SRID) -> the value MariaDB stores (and accepts as a parameter for a geometry column)."""
    return (srid or 0).to_bytes(4, "little") + wkb


# ---- WKB -> WKT -------------------------------------------------------------------------------------------


def _num(x: float) -> str:
    """Shortest round-trip digits, without exponent (MariaDB writes 1e-07 as 0.0000001)."""
    if x == int(x) and abs(x) < 1e15:
        return repr(int(x))
    text = repr(x)
    return format(Decimal(text), "f") if "e" in text else text


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.p = data, 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.p + size > len(self.data):
            raise GeometryError("truncated WKB")
        out = struct.unpack_from(fmt, self.data, self.p)
        self.p += size
        return out

    def geometry(self) -> str:
        (order,) = self.take("<B")
        if order not in (0, 1):
            raise GeometryError(f"bad WKB byte order {order}")
        e = "<" if order == 1 else ">"
        (code,) = self.take(e + "I")
        name = _TYPES.get(code)
        if name is None:
            raise GeometryError(f"unsupported WKB geometry type {code} (2D types 1-7 only)")
        return name + " " + self.body(code, e) if code != 7 else self.collection(e)

    def points(self, e: str) -> str:
        (n,) = self.take(e + "I")
        return "(" + ",".join(" ".join(_num(v) for v in self.take(e + "dd")) for _ in range(n)) + ")" if n else "EMPTY"

    def body(self, code: int, e: str) -> str:
        if code == 1:
            x, y = self.take(e + "dd")
            return f"({_num(x)} {_num(y)})"
        if code == 2:
            return self.points(e)
        if code == 3:
            (n,) = self.take(e + "I")
            return "(" + ",".join(self.points(e) for _ in range(n)) + ")" if n else "EMPTY"
        (n,) = self.take(e + "I")  # MULTI*: each part is a full WKB geometry of the single type
        parts = []
        for _ in range(n):
            (order,) = self.take("<B")
            pe = "<" if order == 1 else ">"
            (part_code,) = self.take(pe + "I")
            part = self.body(part_code, pe)
            parts.append(part[1:-1] if code == 4 else part)  # MULTIPOINT(0 0,1 1), as MariaDB writes it
        return "(" + ",".join(parts) + ")" if parts else "EMPTY"

    def collection(self, e: str) -> str:
        (n,) = self.take(e + "I")
        return "GEOMETRYCOLLECTION" + ("(" + ",".join(self.geometry() for _ in range(n)) + ")" if n else " EMPTY")


def wkb_to_wkt(wkb: bytes) -> str:
    """WKB (2D, either byte order) -> WKT as MariaDB's ST_AsText writes it (`POINT(1 2)`, no space before `(`)."""
    r = _Reader(bytes(wkb))
    text = r.geometry()
    if r.p != len(r.data):
        raise GeometryError("trailing bytes after WKB geometry")
    return text.replace(" (", "(")


def wkt(value: Any) -> str | None:
    """WKT of a lake geometry value ({"wkb": bytes, "srid": ...}) or of WKB bytes; None for NULL."""
    if value is None:
        return None
    wkb = value.get("wkb") if isinstance(value, dict) else value
    return None if wkb is None else wkb_to_wkt(wkb)


def register_wkt(con: Any, name: str = "st_astext") -> None:
    """Register `name(wkb BLOB) -> VARCHAR` in a DuckDB connection (call it as `st_astext(col.wkb)`)."""
    con.create_function(name, lambda b: None if b is None else wkb_to_wkt(b), ["BLOB"], "VARCHAR",
                        null_handling="special")


# ---- building values (the generator) ---------------------------------------------------------------------


def point_wkb(x: float, y: float) -> bytes:
    return struct.pack("<BIdd", 1, 1, x, y)


def _coords(points: Sequence[tuple[float, float]]) -> bytes:
    return struct.pack("<I", len(points)) + b"".join(struct.pack("<dd", x, y) for x, y in points)


def linestring_wkb(points: Sequence[tuple[float, float]]) -> bytes:
    return struct.pack("<BI", 1, 2) + _coords(points)


def polygon_wkb(rings: Sequence[Sequence[tuple[float, float]]]) -> bytes:
    return struct.pack("<BII", 1, 3, len(rings)) + b"".join(_coords(r) for r in rings)


def multi_wkb(kind: str, parts: Sequence[bytes]) -> bytes:
    """MULTIPOINT/MULTILINESTRING/MULTIPOLYGON/GEOMETRYCOLLECTION of WKB parts."""
    return struct.pack("<BII", 1, _CODES[kind.upper()], len(parts)) + b"".join(parts)
