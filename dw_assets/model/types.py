"""MariaDB column types as data: parse a type as written in the model into a `TypeSpec`, and map it to Arrow.

Every stage that needs a column's type (DDL, generator, capture decoding, Delta schemas, checks) goes through
`parse_type` / `arrow_type` here, so a new model needs no code change as long as its types are listed below.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa


class TypeParseError(ValueError):
    """A type string that is not a supported MariaDB column type (the model loader adds file/table/column)."""


INTEGER_BASES = ("tinyint", "smallint", "mediumint", "int", "bigint")
TEXT_BASES = ("char", "varchar", "tinytext", "text", "mediumtext", "longtext")
BINARY_BASES = ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob")
TEMPORAL_BASES = ("date", "datetime", "timestamp", "time", "year")
GEOMETRY_BASES = ("geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
                  "geometrycollection")
SUPPORTED_BASES = frozenset(
    INTEGER_BASES + TEXT_BASES + BINARY_BASES + TEMPORAL_BASES + GEOMETRY_BASES
    + ("decimal", "float", "double", "bit", "enum", "set", "json", "uuid")
)
# Types a collation applies to (the table's character set is utf8mb4).
COLLATABLE_BASES = frozenset(TEXT_BASES + ("enum", "set"))
COLLATION_RE = re.compile(r"^utf8mb4_[a-z0-9_]{1,56}$")
# Debezium's io.debezium.data.geometry.Geometry: the WKB without MariaDB's 4-byte SRID prefix, and the SRID.
GEOMETRY_ARROW = pa.struct([pa.field("wkb", pa.binary()), pa.field("srid", pa.int32())])
_ALIASES = {"integer": "int", "int4": "int", "int8": "bigint", "dec": "decimal", "numeric": "decimal",
            "fixed": "decimal", "real": "double", "double precision": "double", "bool": "tinyint",
            "boolean": "tinyint", "geomcollection": "geometrycollection"}
# Maximum byte/char lengths of the sized text/blob types (used by the generator to stay in range).
_MAX_LEN = {"tinytext": 255, "text": 65_535, "mediumtext": 16_777_215, "longtext": 4_294_967_295,
            "tinyblob": 255, "blob": 65_535, "mediumblob": 16_777_215, "longblob": 4_294_967_295}
# Display widths MariaDB reports for integer types declared without one (signed, unsigned).
_DEFAULT_WIDTH = {"tinyint": (4, 3), "smallint": (6, 5), "mediumint": (9, 8), "int": (11, 10), "bigint": (20, 20)}
_INT_BITS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "bigint": 64}

_TYPE_RE = re.compile(
    r"^\s*(?P<base>double\s+precision|[a-z][a-z0-9]*)\s*(?:\((?P<args>.*)\))?\s*(?P<mods>(?:\s*(?:unsigned|signed|zerofill))*)\s*$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class TypeSpec:
    """A normalized MariaDB column type. `base` is lower-case and alias-free (INTEGER -> int, BOOL -> tinyint(1))."""

    base: str
    length: int | None = None  # char/binary/bit length, integer display width
    precision: int | None = None  # decimal
    scale: int | None = None  # decimal
    fsp: int | None = None  # fractional seconds of datetime/timestamp/time
    unsigned: bool = False
    values: tuple[str, ...] = ()  # enum/set labels

    # ---- classification used by later stages ---------------------------------------------------------------
    @property
    def is_integer(self) -> bool:
        return self.base in INTEGER_BASES

    @property
    def is_boolean(self) -> bool:
        """TINYINT(1) is MariaDB's BOOLEAN: the model uses it only for flags, so it maps to Arrow bool."""
        return self.base == "tinyint" and self.length == 1

    @property
    def is_text(self) -> bool:
        return self.base in TEXT_BASES or self.base in ("enum", "set", "json", "uuid")

    @property
    def is_binary(self) -> bool:
        return self.base in BINARY_BASES

    @property
    def indexable(self) -> bool:
        """BLOB/TEXT/JSON/geometry columns cannot be in a key without a prefix length (the model has none)."""
        return not (self.base in ("json", "tinytext", "text", "mediumtext", "longtext") or self.is_geometry
                    or (self.is_binary and self.base not in ("binary", "varbinary")))

    @property
    def is_geometry(self) -> bool:
        return self.base in GEOMETRY_BASES

    @property
    def is_temporal(self) -> bool:
        return self.base in TEMPORAL_BASES

    @property
    def max_length(self) -> int | None:
        """Maximum characters (text) or bytes (binary) a value may have, if bounded."""
        if self.base in ("char", "varchar", "binary", "varbinary"):
            return self.length
        return _MAX_LEN.get(self.base)

    def integer_range(self) -> tuple[int, int]:
        bits = _INT_BITS[self.base]
        if self.unsigned:
            return 0, 2**bits - 1
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def sql(self) -> str:
        """Canonical DDL spelling, e.g. `DECIMAL(12,2)`, `INT UNSIGNED`, `ENUM('a','b')`."""
        b = self.base.upper()
        if self.values:
            inner = ",".join(quote_sql_string(v) for v in self.values)
            return f"{b}({inner})"
        if self.base == "decimal":
            out = f"{b}({self.precision},{self.scale})"
        elif self.fsp is not None:
            out = f"{b}({self.fsp})"
        elif self.length is not None:
            out = f"{b}({self.length})"
        else:
            out = b
        return out + (" UNSIGNED" if self.unsigned else "")

    def column_type(self) -> str:
        """What MariaDB 10.x reports in information_schema.COLUMNS.COLUMN_TYPE for a column of this type.

        Checks compare this against the live schema to detect drift. JSON is an alias of LONGTEXT (with a
        JSON_VALID check constraint) and UUID is reported as `uuid`.
        """
        if self.base == "json":
            return "longtext"
        if self.is_integer:
            width = self.length if self.length is not None else _DEFAULT_WIDTH[self.base][int(self.unsigned)]
            return f"{self.base}({width})" + (" unsigned" if self.unsigned else "")
        if self.base in ("float", "double"):
            return self.base + (" unsigned" if self.unsigned else "")
        if self.base == "decimal":
            return f"decimal({self.precision},{self.scale})" + (" unsigned" if self.unsigned else "")
        if self.base == "year":
            return "year(4)"
        if self.base == "bit":
            return f"bit({self.length or 1})"
        if self.values:
            return f"{self.base}(" + ",".join(quote_sql_string(v) for v in self.values) + ")"
        if self.base in ("datetime", "timestamp", "time"):
            return f"{self.base}({self.fsp})" if self.fsp else self.base
        if self.length is not None:
            return f"{self.base}({self.length})"
        return self.base


def quote_sql_string(value: str) -> str:
    """A single-quoted SQL string literal (for DDL only: enum labels and defaults; data always goes as parameters)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _parse_labels(args: str) -> tuple[str, ...]:
    """Parse `'a','b''c'` (SQL quoting, '' escapes a quote) into labels; raise on anything else."""
    labels: list[str] = []
    i, n = 0, len(args)
    while True:
        while i < n and args[i].isspace():
            i += 1
        if i >= n or args[i] != "'":
            raise TypeParseError("enum/set values must be single-quoted strings, e.g. ENUM('a','b')")
        i += 1
        buf: list[str] = []
        while True:
            if i >= n:
                raise TypeParseError("unterminated string in enum/set values")
            if args[i] == "'":
                if i + 1 < n and args[i + 1] == "'":
                    buf.append("'")
                    i += 2
                    continue
                i += 1
                break
            buf.append(args[i])
            i += 1
        labels.append("".join(buf))
        while i < n and args[i].isspace():
            i += 1
        if i >= n:
            break
        if args[i] != ",":
            raise TypeParseError(f"unexpected {args[i]!r} in enum/set values")
        i += 1
    if len(set(labels)) != len(labels):
        raise TypeParseError("duplicate enum/set values")
    if any(v == "" for v in labels):
        raise TypeParseError("empty enum/set value")
    return tuple(labels)


def _ints(args: str | None, base: str, allowed: tuple[int, ...]) -> list[int]:
    if args is None:
        return []
    parts = [p.strip() for p in args.split(",")]
    if len(parts) not in allowed or not all(p.isdigit() for p in parts):
        raise TypeParseError(f"{base.upper()} takes {' or '.join(map(str, allowed))} integer argument(s), got ({args})")
    return [int(p) for p in parts]


def parse_type(text: str) -> TypeSpec:
    """Parse a MariaDB type as written (`DECIMAL(12,2)`, `int unsigned`, `ENUM('a','b')`) into a TypeSpec."""
    if not isinstance(text, str) or not text.strip():
        raise TypeParseError(f"type must be a non-empty string, got {text!r}")
    m = _TYPE_RE.match(text)
    if not m:
        raise TypeParseError(f"malformed type {text!r}")
    raw_base = re.sub(r"\s+", " ", m.group("base").lower())
    args = m.group("args")
    mods = m.group("mods").lower().split()
    if "zerofill" in mods:
        raise TypeParseError(f"ZEROFILL is not supported ({text!r})")
    unsigned = "unsigned" in mods
    if raw_base in ("bool", "boolean"):
        if args is not None or mods:
            raise TypeParseError(f"BOOLEAN takes no arguments ({text!r})")
        return TypeSpec(base="tinyint", length=1)
    base = _ALIASES.get(raw_base, raw_base)
    if base not in SUPPORTED_BASES:
        raise TypeParseError(f"unknown or unsupported type {text!r}")
    if unsigned and not (base in INTEGER_BASES or base in ("decimal", "float", "double")):
        raise TypeParseError(f"UNSIGNED applies only to numeric types ({text!r})")

    if base in ("enum", "set"):
        if args is None:
            raise TypeParseError(f"{base.upper()} needs a list of values ({text!r})")
        return TypeSpec(base=base, values=_parse_labels(args))
    if base in INTEGER_BASES:
        (width,) = _ints(args, base, (1,)) or [None]
        if width is not None and not 1 <= width <= 255:
            raise TypeParseError(f"display width out of range in {text!r}")
        return TypeSpec(base=base, length=width, unsigned=unsigned)
    if base == "decimal":
        nums = _ints(args, base, (1, 2)) or [10, 0]
        precision, scale = nums[0], (nums[1] if len(nums) > 1 else 0)
        if not (1 <= precision <= 65 and 0 <= scale <= 38 and scale <= precision):
            raise TypeParseError(f"DECIMAL precision/scale out of range in {text!r} (1<=p<=65, 0<=s<=min(p,38))")
        return TypeSpec(base="decimal", precision=precision, scale=scale, unsigned=unsigned)
    if base in ("float", "double"):
        if args is not None:
            raise TypeParseError(f"{base.upper()}(M,D) is deprecated and not supported; use DECIMAL ({text!r})")
        return TypeSpec(base=base, unsigned=unsigned)
    if base in ("datetime", "timestamp", "time"):
        (fsp,) = _ints(args, base, (1,)) or [None]
        if fsp is not None and not 0 <= fsp <= 6:
            raise TypeParseError(f"fractional seconds precision must be 0..6 in {text!r}")
        return TypeSpec(base=base, fsp=fsp or None)
    if base in ("char", "binary", "bit"):
        (length,) = _ints(args, base, (1,)) or [1]
        limit = 64 if base == "bit" else 255
        if not 1 <= length <= limit:
            raise TypeParseError(f"{base.upper()} length must be 1..{limit} in {text!r}")
        return TypeSpec(base=base, length=length)
    if base in ("varchar", "varbinary"):
        nums = _ints(args, base, (1,))
        if not nums:
            raise TypeParseError(f"{base.upper()} needs a length, e.g. {base.upper()}(255) ({text!r})")
        if not 1 <= nums[0] <= 65_532:
            raise TypeParseError(f"{base.upper()} length out of range in {text!r}")
        return TypeSpec(base=base, length=nums[0])
    if args is not None:
        if base == "year" and args.strip() == "4":
            return TypeSpec(base="year")
        raise TypeParseError(f"{base.upper()} takes no arguments ({text!r})")
    return TypeSpec(base=base)


_COLLATION_SUFFIX_RE = re.compile(r"^(?P<type>.*?)\s+(?:(?P<binary>binary)|collate\s+(?P<collation>\S+))\s*$",
                                  re.IGNORECASE | re.DOTALL)


def parse_column_type(text: str) -> tuple[TypeSpec, str | None]:
    """A model column type with an optional collation suffix: `VARCHAR(32) BINARY` (= COLLATE utf8mb4_bin) or
    `VARCHAR(32) COLLATE utf8mb4_bin`. Returns the type and the collation (None: the table's default)."""
    if not isinstance(text, str):
        return parse_type(text), None
    m = _COLLATION_SUFFIX_RE.match(text)
    # `BINARY` alone (or `BINARY(16)`) is the binary string type, not a modifier.
    if m is None or not m.group("type").strip():
        return parse_type(text), None
    spec = parse_type(m.group("type"))
    collation = "utf8mb4_bin" if m.group("binary") else m.group("collation").lower()
    check_collation(spec, collation)
    return spec, collation


def check_collation(spec: TypeSpec, collation: str) -> None:
    if spec.base not in COLLATABLE_BASES:
        raise TypeParseError(f"{spec.sql()} has no collation (only CHAR, VARCHAR, TEXT types, ENUM and SET do)")
    if not COLLATION_RE.fullmatch(collation):
        raise TypeParseError(f"collation {collation!r} is not a utf8mb4 collation (e.g. utf8mb4_bin, "
                             f"utf8mb4_unicode_ci): tables are created with CHARACTER SET utf8mb4")


def arrow_type(spec: TypeSpec) -> pa.DataType:
    """The Arrow (and so Delta) type of a column. Delta has no unsigned or TIME types, hence the widenings.

    TINYINT(1) -> bool (MariaDB's BOOLEAN; the model uses it for flags only); other TINYINT -> int8.
    Unsigned integers widen to the next signed type; BIGINT UNSIGNED -> decimal128(20,0).
    GEOMETRY types -> struct<wkb: binary, srid: int32> (Debezium's Geometry; `model.geometry.wkt` renders WKT).
    DATETIME -> timestamp[us] (naive); TIMESTAMP -> timestamp[us, UTC] (MariaDB stores it as UTC epoch).
    TIME -> int64 microseconds (Debezium's MicroTime); YEAR -> int16; BIT -> string of '0'/'1' as the binlog
    library delivers it; DECIMAL wider than 38 digits -> string (Delta's decimal maximum is 38).
    """
    b = spec.base
    if spec.is_boolean:
        return pa.bool_()
    if spec.is_integer:
        signed = {"tinyint": pa.int8(), "smallint": pa.int16(), "mediumint": pa.int32(), "int": pa.int32(),
                  "bigint": pa.int64()}
        widened = {"tinyint": pa.int16(), "smallint": pa.int32(), "mediumint": pa.int32(), "int": pa.int64(),
                   "bigint": pa.decimal128(20, 0)}
        return (widened if spec.unsigned else signed)[b]
    if b == "decimal":
        assert spec.precision is not None and spec.scale is not None
        return pa.decimal128(spec.precision, spec.scale) if spec.precision <= 38 else pa.string()
    if b == "float":
        return pa.float32()
    if b == "double":
        return pa.float64()
    if b == "date":
        return pa.date32()
    if b == "datetime":
        return pa.timestamp("us")
    if b == "timestamp":
        return pa.timestamp("us", tz="UTC")
    if b == "time":
        return pa.int64()
    if b == "year":
        return pa.int16()
    if spec.is_binary:
        return pa.binary()
    if spec.is_geometry:
        return GEOMETRY_ARROW
    if spec.is_text or b == "bit":
        return pa.string()
    raise TypeParseError(f"no Arrow mapping for {spec.sql()}")  # unreachable for SUPPORTED_BASES
