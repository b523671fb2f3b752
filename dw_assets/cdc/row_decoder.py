"""Row decoding for the capture hot path: one generated Python function per table layout.

The library decodes each column through several method calls (~25 us per row); here a table map is compiled
once into straight-line code that unpacks runs of fixed-width columns with one struct call and renders every
value directly into its documented JSON form (README.md, "Value mapping"), which `envelope` then serializes.
"""
from __future__ import annotations

import binascii
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

from pymysqlreplication.constants import FIELD_TYPE as F


# Fixed-width numeric columns that a single struct call can unpack (signed, unsigned).
_STRUCT_CODES = {
    F.TINY: ("b", "B"),
    F.SHORT: ("h", "H"),
    F.LONG: ("i", "I"),
    F.LONGLONG: ("q", "Q"),
    F.DOUBLE: ("d", "d"),
}
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


class UnsupportedColumn(ValueError):
    """A column type capture cannot render; the message names the table and column."""


@dataclass(frozen=True)
class ColumnSpec:
    """What rendering needs to know about one column, from the binlog table map (or information_schema)."""

    name: str
    type: int
    nullable: bool = True
    unsigned: bool = False
    binary: bool = False  # binary charset: bytes rendered as base64
    encoding: str = "utf8"
    max_length: int = 0  # VARCHAR/CHAR byte length: > 255 means a 2-byte length prefix
    length_size: int = 0  # BLOB/TEXT/JSON/GEOMETRY length prefix bytes
    precision: int = 0
    scale: int = 0
    fsp: int = 0
    bits: int = 0
    size: int = 0  # ENUM/SET storage bytes
    labels: tuple[str, ...] = ()  # ENUM/SET labels, in declaration order


# ---- value renderers shared with the snapshot path ----------------------------------------------------------


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def float32_repr(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (what `FLOAT` means to a reader)."""
    pack, unpack = struct.pack, struct.unpack
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if unpack("<f", pack("<f", candidate))[0] == value:
            return candidate
    return value


def render_date(year: int, month: int, day: int) -> str | None:
    if not (year and month and day):  # zero dates ('0000-00-00', '2024-00-10') have no ISO form
        return None
    return f"{year:04d}-{month:02d}-{day:02d}"


def render_time(negative: bool, hours: int, minutes: int, seconds: int, micro: int, fsp: int) -> str:
    text = f"{'-' if negative else ''}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{text}.{micro:06d}" if fsp else text


def render_timestamp(epoch_seconds: int, micro: int, fsp: int) -> str | None:
    if epoch_seconds == 0 and micro == 0:  # '0000-00-00 00:00:00'
        return None
    t = time.gmtime(epoch_seconds)
    text = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    return f"{text}.{micro:06d}Z" if fsp else f"{text}Z"


def render_bits(data: bytes, bits: int) -> bool | str:
    """BIT(1) -> boolean; BIT(n>1) -> base64 of the bytes in little-endian order (Debezium's io.debezium.data.Bits)."""
    if bits == 1:
        return bool(data[-1] & 1)
    return b64(data[::-1])


def render_geometry(data: bytes) -> dict[str, Any]:
    """MariaDB's geometry value (4-byte little-endian SRID + WKB) -> Debezium's io.debezium.data.geometry.Geometry
    struct: {"wkb": base64 of the WKB, "srid": the SRID, null when 0 (as Debezium's MySqlGeometry does)}."""
    return {"wkb": b64(data[4:]), "srid": int.from_bytes(data[:4], "little") or None}


def render_set(mask: int, labels: tuple[str, ...]) -> str:
    return ",".join(label for i, label in enumerate(labels) if mask >> i & 1)


# ---- binary decoders for the variable-cost types --------------------------------------------------------------


def decimal_decoder(precision: int, scale: int) -> tuple[int, Callable[[bytes], str]]:
    """MariaDB's packed DECIMAL -> its exact text with `scale` fraction digits (as the server prints it)."""
    intg0, intg0x = divmod(precision - scale, 9)
    frac0, frac0x = divmod(scale, 9)
    lead, trail = _DIG2BYTES[intg0x], _DIG2BYTES[frac0x]
    size = lead + 4 * intg0 + 4 * frac0 + trail
    sign_bit, all_ones = 1 << (8 * size - 1), (1 << (8 * size)) - 1
    int_bits = 8 * (4 * frac0 + trail)  # low bits hold the fraction
    frac_mask = (1 << int_bits) - 1

    def groups(value: int, nbytes_lead: int, n4: int, lead_first: bool) -> int:
        # Reassemble base-10^9 groups (4 bytes each) and one short group into an integer of digits.
        out = 0
        if lead_first:
            shift = 32 * n4
            out = value >> shift if nbytes_lead else 0
            for i in range(n4 - 1, -1, -1):
                out = out * 1_000_000_000 + ((value >> (32 * i)) & 0xFFFFFFFF)
            return out
        shift = 8 * nbytes_lead
        for i in range(n4 - 1, -1, -1):
            out = out * 1_000_000_000 + ((value >> (shift + 32 * i)) & 0xFFFFFFFF)
        if nbytes_lead:
            out = out * 10**frac0x + (value & ((1 << shift) - 1))
        return out

    def decode(data: bytes) -> str:
        # Positive values are stored with the sign bit set; negative ones additionally have every bit inverted.
        negative = not data[0] & 0x80
        value = int.from_bytes(data, "big") ^ sign_bit
        if negative:
            value ^= all_ones
        integral = groups(value >> int_bits, lead, intg0, True)
        text = f"-{integral}" if negative else str(integral)
        if scale:
            fraction = groups(value & frac_mask, trail, frac0, False)
            text = f"{text}.{fraction:0{scale}d}"
        return text

    return size, decode


def _datetime2(v: int, micro: int, fsp: int) -> str | None:
    v -= 0x8000000000
    ymd, hms = v >> 17, v & 0x1FFFF
    year, month = divmod(ymd >> 5, 13)
    day = ymd & 31
    if not (year and month and day):
        return None
    text = (f"{year:04d}-{month:02d}-{day:02d}T{hms >> 12:02d}:{(hms >> 6) & 63:02d}:{hms & 63:02d}")
    return f"{text}.{micro:06d}" if fsp else text


def _time2(raw: int, frac_bytes: int, fsp: int) -> str:
    raw -= 0x800000 << (8 * frac_bytes)
    negative = raw < 0
    mag = -raw if negative else raw
    hms = mag >> (8 * frac_bytes)
    micro = (mag & ((1 << (8 * frac_bytes)) - 1)) * 10 ** (6 - 2 * frac_bytes) if frac_bytes else 0
    return render_time(negative, (hms >> 12) & 0x3FF, (hms >> 6) & 63, hms & 63, micro, fsp)


def _old_datetime(v: int) -> str | None:
    date, t = divmod(v, 1_000_000)
    year, md = divmod(date, 10_000)
    month, day = divmod(md, 100)
    if not (year and month and day):
        return None
    hour, ms = divmod(t, 10_000)
    minute, second = divmod(ms, 100)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


def _old_time(v: int) -> str:
    negative = v < 0
    v = -v if negative else v
    h, ms = divmod(v, 10_000)
    m, s = divmod(ms, 100)
    return render_time(negative, h, m, s, 0, 0)


# ---- the compiler -------------------------------------------------------------------------------------------------


@dataclass
class TableDecoder:
    """Decodes the row images of one table layout; `decode(buf, p) -> (row dict, next p)`."""

    database: str
    table: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    decode: Callable[[bytes, int], tuple[dict[str, Any], int]]
    null_bytes: int

    def key_of(self, row: dict[str, Any]) -> dict[str, Any] | None:
        if not self.primary_key:
            return None
        return {k: row[k] for k in self.primary_key}


def compile_decoder(database: str, table: str, columns: list[ColumnSpec], primary_key: list[str]) -> TableDecoder:
    ns: dict[str, Any] = {
        "from_bytes": int.from_bytes,
        "b64": b64,
        "float32_repr": float32_repr,
        "render_date": render_date,
        "render_timestamp": render_timestamp,
        "render_bits": render_bits,
        "render_set": render_set,
        "render_geometry": render_geometry,
        "_datetime2": _datetime2,
        "_time2": _time2,
        "_old_datetime": _old_datetime,
        "_old_time": _old_time,
    }
    n = len(columns)
    null_bytes = (n + 7) // 8
    lines = ["def decode(buf, p):"]
    if null_bytes == 1:
        lines.append("    nb = buf[p]; p += 1")
    else:
        lines.append(f"    nb = from_bytes(buf[p:p + {null_bytes}], 'little'); p += {null_bytes}")

    i = 0
    while i < n:
        col = columns[i]
        # A run of NOT NULL fixed-width numbers: one struct call for all of them.
        run: list[int] = []
        j = i
        while j < n and not columns[j].nullable and columns[j].type in _STRUCT_CODES:
            run.append(j)
            j += 1
        if len(run) >= 2:
            fmt = "<" + "".join(_STRUCT_CODES[columns[k].type][columns[k].unsigned] for k in run)
            st = struct.Struct(fmt)
            ns[f"S{i}"] = st.unpack_from
            names = ", ".join(f"v{k}" for k in run)
            lines.append(f"    {names}, = S{i}(buf, p); p += {st.size}")
            i = j
            continue
        body = _column_code(i, col, ns, database, table)
        if col.nullable:
            lines.append(f"    if nb & {1 << i}:")
            lines.append(f"        v{i} = None")
            lines.append("    else:")
            lines.extend("        " + line for line in body)
        else:
            lines.extend("    " + line for line in body)
        i += 1
    items = ", ".join(f"{col.name!r}: v{k}" for k, col in enumerate(columns))
    lines.append(f"    return {{{items}}}, p")
    source = "\n".join(lines)
    exec(compile(source, f"<decoder {database}.{table}>", "exec"), ns)  # noqa: S102 - generated from type codes
    return TableDecoder(database, table, tuple(columns), tuple(primary_key), ns["decode"], null_bytes)


def _column_code(i: int, col: ColumnSpec, ns: dict[str, Any], database: str, table: str) -> list[str]:
    t = col.type
    v = f"v{i}"
    if t in _STRUCT_CODES:
        st = struct.Struct("<" + _STRUCT_CODES[t][col.unsigned])
        ns[f"S{i}"] = st.unpack_from
        return [f"{v}, = S{i}(buf, p); p += {st.size}"]
    if t == F.INT24:
        return [f"{v} = from_bytes(buf[p:p + 3], 'little', signed={not col.unsigned}); p += 3"]
    if t == F.FLOAT:
        ns[f"S{i}"] = struct.Struct("<f").unpack_from
        return [f"{v} = float32_repr(S{i}(buf, p)[0]); p += 4"]
    if t == F.YEAR:
        return [f"{v} = buf[p]; {v} = {v} + 1900 if {v} else 0; p += 1"]
    if t == F.NEWDECIMAL:
        size, dec = decimal_decoder(col.precision, col.scale)
        ns[f"D{i}"] = dec
        return [f"{v} = D{i}(buf[p:p + {size}]); p += {size}"]
    if t in (F.VARCHAR, F.STRING, F.VAR_STRING):
        lb = 2 if col.max_length > 255 else 1
        head = f"n = buf[p]; p += 1" if lb == 1 else "n = buf[p] | buf[p + 1] << 8; p += 2"
        return [head, _bytes_to_value(v, "buf[p:p + n]", col) + "; p += n"]
    if t in (F.BLOB, F.JSON, F.GEOMETRY, F.TINY_BLOB, F.MEDIUM_BLOB, F.LONG_BLOB):
        ls = col.length_size
        if t == F.JSON:
            raise UnsupportedColumn(f"{database}.{table}.{col.name}: MySQL binary JSON is not produced by MariaDB")
        if t == F.GEOMETRY:
            return [f"n = from_bytes(buf[p:p + {ls}], 'little'); p += {ls}",
                    f"{v} = render_geometry(buf[p:p + n]); p += n"]
        return [f"n = from_bytes(buf[p:p + {ls}], 'little'); p += {ls}", _bytes_to_value(v, "buf[p:p + n]", col) + "; p += n"]
    if t == F.DATE:
        return [f"x = from_bytes(buf[p:p + 3], 'little'); p += 3",
                f"{v} = render_date(x >> 9, (x >> 5) & 15, x & 31)"]
    fb = (col.fsp + 1) // 2
    frac_scale = 10 ** (6 - 2 * fb) if fb else 0
    if t == F.DATETIME2:
        micro = f"from_bytes(buf[p + 5:p + {5 + fb}], 'big') * {frac_scale}" if fb else "0"
        return [f"{v} = _datetime2(from_bytes(buf[p:p + 5], 'big'), {micro}, {col.fsp}); p += {5 + fb}"]
    if t == F.TIMESTAMP2:
        micro = f"from_bytes(buf[p + 4:p + {4 + fb}], 'big') * {frac_scale}" if fb else "0"
        return [f"{v} = render_timestamp(from_bytes(buf[p:p + 4], 'big'), {micro}, {col.fsp}); p += {4 + fb}"]
    if t == F.TIME2:
        return [f"{v} = _time2(from_bytes(buf[p:p + {3 + fb}], 'big'), {fb}, {col.fsp}); p += {3 + fb}"]
    if t == F.TIMESTAMP:
        return [f"{v} = render_timestamp(from_bytes(buf[p:p + 4], 'little'), 0, 0); p += 4"]
    if t == F.DATETIME:
        return [f"{v} = _old_datetime(from_bytes(buf[p:p + 8], 'little')); p += 8"]
    if t == F.TIME:
        return [f"{v} = _old_time(from_bytes(buf[p:p + 3], 'little', signed=True)); p += 3"]
    if t == F.ENUM:
        ns[f"L{i}"] = ("",) + tuple(col.labels)
        return [f"x = from_bytes(buf[p:p + {col.size}], 'little'); p += {col.size}",
                f"{v} = L{i}[x] if x < {len(col.labels) + 1} else ''"]
    if t == F.SET:
        ns[f"L{i}"] = tuple(col.labels)
        return [f"{v} = render_set(from_bytes(buf[p:p + {col.size}], 'little'), L{i}); p += {col.size}"]
    if t == F.BIT:
        nbytes = (col.bits + 7) // 8
        return [f"{v} = render_bits(buf[p:p + {nbytes}], {col.bits}); p += {nbytes}"]
    raise UnsupportedColumn(f"{database}.{table}.{col.name}: MariaDB column type {t} is not supported by capture")


def _bytes_to_value(v: str, expr: str, col: ColumnSpec) -> str:
    if col.binary:
        return f"{v} = b64({expr})"
    if col.encoding in ("utf8", "utf-8", "utf8mb4"):
        # Strict utf-8 is right for utf8mb4/utf8mb3 columns; 'replace' keeps a corrupt value from stopping capture.
        return f"{v} = {expr}.decode('utf-8', 'replace')"
    return f"{v} = {expr}.decode({col.encoding!r}, 'replace')"


def specs_from_table_map(event: Any) -> tuple[list[ColumnSpec], list[str]]:
    """ColumnSpecs and PK column names from the library's parsed TableMapEvent (binlog_row_metadata=FULL)."""
    nullable_bits = int.from_bytes(event.null_bitmask, "little")
    specs: list[ColumnSpec] = []
    for i, c in enumerate(event.columns):
        enc = c.character_set_name or "utf8"
        labels: tuple[str, ...] = ()
        if c.type == F.ENUM and c.enum_values:
            labels = tuple(c.enum_values[1:])
        elif c.type == F.SET and c.set_values:
            labels = tuple(c.set_values)
        specs.append(
            ColumnSpec(
                name=c.name if c.name is not None else f"UNKNOWN_COL{i}",
                type=c.type,
                nullable=bool(nullable_bits >> i & 1),
                unsigned=bool(c.unsigned),
                binary=enc == "binary",
                encoding=enc,
                max_length=getattr(c, "max_length", 0) or 0,
                length_size=getattr(c, "length_size", 0) or 0,
                precision=getattr(c, "precision", 0) or 0,
                scale=getattr(c, "decimals", 0) or 0,
                fsp=getattr(c, "fsp", 0) or 0,
                bits=getattr(c, "bits", 0) or 0,
                size=getattr(c, "size", 0) or 0,
                labels=labels,
            )
        )
    meta = event.optional_metadata
    pk_idx = list(meta.simple_primary_key_list or []) or sorted((meta.primary_keys_with_prefix or {}).keys())
    return specs, [specs[k].name for k in pk_idx]


class RowImageError(ValueError):
    """A rows event without full row images (binlog_row_image is not FULL)."""


def iter_rows(buf: bytes, body_start: int, body_end: int, decoder: TableDecoder, update: bool, v2: bool):
    """Yield row images (inserts/deletes) or (before, after) pairs (updates) of one rows event's body."""
    p = body_start + 8  # table id (6) + flags (2)
    if v2:
        p += buf[p] | buf[p + 1] << 8  # extra data length includes its own two bytes
    ncols = buf[p]
    p += 1
    if ncols >= 251:
        width = {252: 2, 253: 3, 254: 8}[ncols]
        ncols = int.from_bytes(buf[p : p + width], "little")
        p += width
    bitmap_len = (ncols + 7) // 8
    full = (1 << ncols) - 1
    if int.from_bytes(buf[p : p + bitmap_len], "little") != full:
        raise RowImageError(f"{decoder.database}.{decoder.table}: partial row image; set binlog_row_image=FULL")
    p += bitmap_len * (2 if update else 1)
    decode = decoder.decode
    if update:
        while p < body_end:
            before, p = decode(buf, p)
            after, p = decode(buf, p)
            yield before, after
    else:
        while p < body_end:
            row, p = decode(buf, p)
            yield row
