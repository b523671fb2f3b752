"""Row-image values -> lake types, for every encoding Debezium's MySQL/MariaDB connector (and this project's
capture) produces, as DuckDB SQL over the JSON text: one vectorised expression per column, no per-row Python.

Each column's expression is chosen from the model's type (`TypeSpec`: base, scale, fractional seconds), and
inside it the value's own shape picks the encoding: a JSON number, an ISO string (with or without `Z`), base64,
or `{"scale", "value"}`. Where the text alone cannot tell (an integer DATETIME: millis or micros; an integer
TIME; a digits-only string of a scale-0 DECIMAL: base64 or a number), the connector's `time.precision.mode`
and `decimal.handling.mode` decide, with the column's precision, exactly as Debezium encodes:

| type | forms accepted |
| --- | --- |
| DATE | days since epoch; `2024-03-01`, `2024-03-01Z` |
| DATETIME(0-3) / (4-6) | epoch millis / micros (`connect`: always millis); ISO local or with `Z` |
| TIMESTAMP | ISO-8601 with `Z` or an offset (ZonedTimestamp); an integer as for DATETIME |
| TIME | micros (`adaptive` with fsp 0-3, and `connect`: millis); `[-]HH:MM:SS[.ffffff]` with optional `Z` |
| DECIMAL | exact decimal string (`string`); JSON number (`double`); base64 unscaled big-endian two's complement (`precise`), `{"scale", "value"}` (variable scale) |
| DECIMAL(>38, s) (lake text) | the number's text; base64 of up to 16 bytes (longer: an error, not a guess) |
| BIGINT UNSIGNED | number (negative = `bigint.unsigned.handling.mode=long` wrap-around, +2^64); base64 (`precise`) |
| BIT(1) / BIT(n) | boolean / base64 of little-endian bytes (`io.debezium.data.Bits`) -> '0'/'1' string of n digits |
| BINARY, BLOB | base64 (standard or URL-safe) |
| GEOMETRY types | `{"wkb": base64, "srid": int or null}` (io.debezium.data.geometry.Geometry) -> struct<wkb, srid> |

Every expression has TRY semantics: a value that does not decode becomes NULL, and `error_sql` names each such
column (raw value non-null, decoded null) so the caller can quarantine exactly the rows that fail.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Mapping, Sequence

import pyarrow as pa

from dw_assets.model import TypeSpec

TIME_PRECISION_MODES = ("adaptive_time_microseconds", "adaptive", "connect")
DECIMAL_HANDLING_MODES = ("string", "precise", "double")


@dataclass(frozen=True)
class Encoding:
    """How the producer rendered values where the text alone is ambiguous (the connector's settings)."""

    time_precision_mode: str = "adaptive_time_microseconds"  # Debezium's default for MySQL and MariaDB
    # Only decides digits-only strings of scale-0 DECIMALs whose length is a multiple of 4 (valid base64 and a
    # valid number): `string` (this project's capture, Debezium `string`) or `precise` (Debezium's default).
    decimal_handling_mode: str = "string"

    def __post_init__(self) -> None:
        if self.time_precision_mode not in TIME_PRECISION_MODES:
            raise ValueError(f"time.precision.mode must be one of {', '.join(TIME_PRECISION_MODES)}, "
                             f"got {self.time_precision_mode!r}")
        if self.decimal_handling_mode not in DECIMAL_HANDLING_MODES:
            raise ValueError(f"decimal.handling.mode must be one of {', '.join(DECIMAL_HANDLING_MODES)}, "
                             f"got {self.decimal_handling_mode!r}")


@dataclass(frozen=True)
class LakeColumn:
    """A data column to decode: its lake (Arrow) type and, when known, the model's MariaDB type."""

    name: str
    type: pa.DataType
    spec: TypeSpec | None = None
    nullable: bool = True


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def duck_type(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return {8: "TINYINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}[t.bit_width]
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_float32(t):
        return "FLOAT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BLOB"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f"{qi(f.name)} {duck_type(f.type)}" for f in t) + ")"
    raise TypeError(f"no DuckDB mapping for Arrow type {t}")


# ---- per-type decoding as steps ----------------------------------------------------------------------------
# A column decodes in steps: each is an SQL expression over `{v}` (the value's JSON text, strings unquoted,
# objects as JSON text) and the earlier steps `{s0}`, `{s1}`, ...; the last step is the lake value. Each step is
# computed once in its own SELECT level, so a value used several times (a decoded base64 blob) is not re-derived
# in every place it appears (DuckDB does not share subexpressions across CASE branches).
Steps = list[str]


def _not_number(v: str) -> str:
    """Text with a character no number has (checked only where the cheap number cast already failed)."""
    return f"NOT regexp_matches({v}, '^[-+0-9.eE]+$')"


def _b64(v: str) -> str:
    """base64 (standard, or URL-safe: translate() is slow, so only where needed) -> BLOB, NULL when invalid."""
    return (f"coalesce(try(from_base64({v})), CASE WHEN contains({v}, '-') OR contains({v}, '_') "
            f"THEN try(from_base64(translate({v}, '-_', '+/'))) END)")


def _hex_of_b64(v: str) -> str:
    return f"hex({_b64(v)})"


def _unscaled_text(h: str) -> str:
    """Big-endian two's-complement bytes as hex (at most 16 bytes: DECIMAL(38)) -> the integer's decimal text."""
    unsigned = f"TRY_CAST('0x' || {h} AS UHUGEINT)"
    # Negative when the top bit is set: |value| = (2^(8n) - 1 - unsigned) + 1, all within UHUGEINT.
    ones = f"TRY_CAST('0x' || repeat('F', length({h})) AS UHUGEINT)"
    neg = f"'-' || CAST({ones} - {unsigned} + CAST(1 AS UHUGEINT) AS VARCHAR)"
    return (f"CASE WHEN {h} IS NULL OR length({h}) = 0 OR length({h}) > 32 THEN NULL "
            f"WHEN substr({h}, 1, 1) >= '8' THEN {neg} ELSE CAST({unsigned} AS VARCHAR) END")


def _scaled(digits: str, scale: str) -> str:
    """Integer text and a scale -> decimal text (`-12345`, 2 -> `-123.45`)."""
    mag = f"ltrim({digits}, '-')"
    sign = f"CASE WHEN starts_with({digits}, '-') THEN '-' ELSE '' END"
    padded = f"lpad({mag}, CAST(greatest(length({mag}), {scale} + 1) AS INTEGER), '0')"
    return (f"CASE WHEN {scale} <= 0 THEN {digits} ELSE {sign} || substr({padded}, 1, length({padded}) - {scale})"
            f" || '.' || substr({padded}, length({padded}) - {scale} + 1) END")


def _decimal(target: str, scale: int, enc: Encoding) -> Steps:
    """A decimal number's text, base64 of the unscaled value, or `{"scale", "value"}` -> DECIMAL(p, s)."""
    # DuckDB 2.0 refuses exponent notation for DECIMAL(p,p) ('-1e-05'): such text (a double, from
    # decimal.handling.mode=double) goes through DOUBLE, which is what it was.
    number = (f"coalesce(TRY_CAST({{v}} AS {target}), CASE WHEN contains(lower({{v}}), 'e') "
              f"THEN TRY_CAST(TRY_CAST({{v}} AS DOUBLE) AS {target}) END)")
    if target == "VARCHAR":  # DECIMAL wider than 38 digits is kept as its text: a number's text stays as it is
        number = "CASE WHEN TRY_CAST({v} AS DOUBLE) IS NOT NULL THEN {v} END"
    obj = "starts_with({v}, '{{')"
    # A digits-only string whose length is a multiple of 4 is valid base64 too: for scale > 0 it is base64 (a
    # decimal string then has a '.'), for scale 0 the connector's decimal.handling.mode decides. Otherwise text
    # that is no number's (a base64 letter, '+', '/', '=') is base64; a number that does not fit stays an error.
    if scale > 0 or enc.decimal_handling_mode == "precise":
        b64_first = "(length({v}) % 4 = 0 AND NOT contains({v}, '.') AND NOT starts_with({v}, '-'))"
    else:
        b64_first = "false"
    # Up to 8 bytes (18 digits, nearly every column) the bytes become a BIGINT through a BIT cast and the scale
    # a decimal multiplication, both exact; longer values and the variable-scale form go through text.
    fast = not (scale > 19)
    factor = f"CAST('{Decimal(1).scaleb(-scale):f}' AS DECIMAL({scale + 1},{scale}))" if scale else "1"
    return [
        f"CASE WHEN {obj} OR {b64_first} THEN NULL ELSE {number} END",  # s0: the common case, cast once
        f"CASE WHEN {obj} THEN json_extract_string({{v}}, '$.value') WHEN {b64_first} THEN {{v}} "
        f"WHEN {{s0}} IS NULL AND {_not_number('{v}')} THEN {{v}} END",  # s1: base64 text, if any
        f"CASE WHEN {obj} THEN TRY_CAST(json_extract({{v}}, '$.scale') AS INTEGER) ELSE {scale} END",  # s2
        _b64("{s1}"),  # s3: the unscaled bytes
        f"CASE WHEN {fast} AND NOT {obj} AND octet_length({{s3}}) BETWEEN 1 AND 8 "
        f"THEN TRY_CAST(CAST({{s3}} AS BIT) AS BIGINT) END",  # s4: unsigned (or, for 8 bytes, signed) value
        "CASE WHEN octet_length({s3}) < 8 AND {s4} >= (CAST(1 AS BIGINT) << (8 * octet_length({s3}) - 1)) "
        "THEN {s4} - (CAST(1 AS BIGINT) << (8 * octet_length({s3}))) ELSE {s4} END",  # s5: two's complement
        f"CASE WHEN {{s3}} IS NOT NULL AND {{s5}} IS NULL THEN {_unscaled_text('hex({s3})')} END",  # s6: long
        f"CASE WHEN {{s0}} IS NOT NULL THEN {{s0}} "
        f"WHEN {{s5}} IS NOT NULL THEN TRY_CAST(CAST({{s5}} AS DECIMAL(18,0)) * {factor} AS {target}) "
        f"WHEN {{s6}} IS NOT NULL THEN TRY_CAST({_scaled('{s6}', '{s2}')} AS {target}) "
        f"WHEN {b64_first} THEN {number} END",
    ]


def _epoch_to_timestamp(unit_is_millis: bool) -> str:
    n = "TRY_CAST({v} AS BIGINT)"
    return f"try(epoch_ms({n}))" if unit_is_millis else f"try(make_timestamp({n}))"


def _datetime(spec: TypeSpec | None, enc: Encoding, zoned: bool) -> Steps:
    fsp = spec.fsp or 0 if spec is not None else 6
    millis = enc.time_precision_mode == "connect" or fsp <= 3
    # ISO text always has a ':' and an epoch number never: test that rather than let a cast fail (slow).
    # ISO with `Z` or an offset -> TIMESTAMPTZ (the session time zone is UTC); DATETIME's local ISO -> TIMESTAMP.
    from_int = _epoch_to_timestamp(millis)
    if zoned:
        return [f"CASE WHEN contains({{v}}, ':') THEN TRY_CAST({{v}} AS TIMESTAMPTZ) "
                f"ELSE CAST({from_int} AS TIMESTAMPTZ) END", _in_range("{s0}", *_TIMESTAMP_RANGE)]
    # (DuckDB's TIMESTAMP cast would drop an offset, not apply it: such text goes through TIMESTAMPTZ.)
    offset = "(contains(substr({v}, 20), '+') OR contains(substr({v}, 20), '-'))"
    return [f"CASE WHEN contains({{v}}, ':') THEN CASE WHEN {offset} "
            f"THEN CAST(TRY_CAST({{v}} AS TIMESTAMPTZ) AS TIMESTAMP) ELSE TRY_CAST({{v}} AS TIMESTAMP) END "
            f"ELSE {from_int} END", _in_range("{s0}", *_DATETIME_RANGE)]


def _date() -> Steps:
    # ISO text has a '-' after its first character (an epoch day count only as its sign).
    return ["CASE WHEN contains(substr({v}, 2), '-') THEN "
            "TRY_CAST(CASE WHEN ends_with({v}, 'Z') THEN left({v}, -1) ELSE {v} END AS DATE) "
            "ELSE try(DATE '1970-01-01' + TRY_CAST({v} AS INTEGER)) END",
            _in_range("{s0}", "DATE '0001-01-01'", "DATE '9999-12-31'")]


# MariaDB's ranges: a value outside them was decoded with the wrong unit (micros read as millis is year 57000),
# so it is an error, not a value. DuckDB's own range is far wider.
_DATETIME_RANGE = ("TIMESTAMP '0001-01-01 00:00:00'", "TIMESTAMP '9999-12-31 23:59:59.999999'")
_TIMESTAMP_RANGE = ("TIMESTAMPTZ '1970-01-01 00:00:00+00'", "TIMESTAMPTZ '2106-02-07 06:28:15.999999+00'")


def _in_range(x: str, lo: str, hi: str) -> str:
    return f"CASE WHEN {x} BETWEEN {lo} AND {hi} THEN {x} END"


def _time_micros(spec: TypeSpec | None, enc: Encoding) -> Steps:
    fsp = spec.fsp or 0 if spec is not None else 6
    millis = enc.time_precision_mode == "connect" or (enc.time_precision_mode == "adaptive" and fsp <= 3)
    n = "TRY_CAST({v} AS BIGINT)"
    from_int = f"try({n} * 1000)" if millis else n
    pat = "'^(-?)([0-9]+):([0-9]{{2}}):([0-9]{{2}})(?:\\.([0-9]{{1,9}}))?(?:Z|[+-]00:?00)?$'"
    parts = f"CASE WHEN contains({{v}}, ':') THEN regexp_extract({{v}}, {pat}, ['sign', 'h', 'm', 's', 'f']) END"
    frac = "CAST(rpad(left({s0}.f, 6), 6, '0') AS BIGINT)"
    magnitude = f"((CAST({{s0}}.h AS BIGINT) * 60 + CAST({{s0}}.m AS BIGINT)) * 60 + CAST({{s0}}.s AS BIGINT)) * 1000000 + {frac}"
    from_text = f"CASE WHEN {{s0}}.h = '' THEN NULL WHEN {{s0}}.sign = '-' THEN -({magnitude}) ELSE {magnitude} END"
    return [parts, f"CASE WHEN {{s0}} IS NULL THEN {from_int} ELSE {from_text} END"]


def _bits(spec: TypeSpec | None) -> Steps:
    """BIT(n) as MariaDB's '0'/'1' digits (most significant first), from a boolean or little-endian base64."""
    n = (spec.length or 1) if spec is not None else 64
    # BIT's cast of a BLOB writes each byte's bits most significant first; Debezium sends the least significant
    # byte first, so reverse the bytes (via their hex pairs) before the cast, then keep the last n digits.
    hex_le = f"CASE WHEN {{v}} NOT IN ('true', 'false') THEN {_hex_of_b64('{v}')} END"
    be = "unhex(array_to_string(list_reverse(regexp_extract_all({s0}, '..')), ''))"
    digits = f"CAST(CAST({be} AS BIT) AS VARCHAR)"
    return [hex_le, digits,
            f"CASE WHEN {{v}} IN ('true', 'false') THEN lpad(CASE WHEN {{v}} = 'true' THEN '1' ELSE '0' END, {n}, '0') "
            f"WHEN length({{s1}}) >= {n} THEN right({{s1}}, {n}) ELSE lpad({{s1}}, {n}, '0') END"]


def _unsigned_bigint(target: str) -> Steps:
    """BIGINT UNSIGNED: a number (negative: `bigint.unsigned.handling.mode=long` wrapped, +2^64) or base64."""
    wrapped = f"TRY_CAST(TRY_CAST({{v}} AS HUGEINT) + CAST('18446744073709551616' AS HUGEINT) AS {target})"
    return [f"CASE WHEN starts_with({{v}}, '-') THEN {wrapped} ELSE TRY_CAST({{v}} AS {target}) END",
            f"CASE WHEN {{s0}} IS NULL AND {_not_number('{v}')} THEN {_hex_of_b64('{v}')} END",
            f"coalesce({{s0}}, TRY_CAST({_unscaled_text('{s1}')} AS {target}))"]


def _geometry() -> Steps:
    """Debezium's Geometry struct as JSON text -> struct(wkb BLOB, srid INTEGER); NULL unless the WKB decodes."""
    return [_b64("try(json_extract_string({v}, '$.wkb'))"),
            "CASE WHEN {s0} IS NOT NULL THEN struct_pack(wkb := {s0}, "
            "srid := TRY_CAST(try(json_extract_string({v}, '$.srid')) AS INTEGER)) END"]


def value_steps(col: LakeColumn, enc: Encoding) -> Steps:
    """The steps that decode one column (see `Steps`)."""
    t, spec = col.type, col.spec
    target = duck_type(t)
    if spec is not None and spec.base == "bit":
        return _bits(spec)
    if pa.types.is_struct(t):  # the only struct lake type: geometry
        return _geometry()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return [_b64("{v}")]
    if spec is not None and spec.base == "decimal":  # DECIMAL(>38, s): text (base64 decodes up to 16 bytes)
        return _decimal("VARCHAR", spec.scale or 0, enc)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return ["{v}"]
    if pa.types.is_decimal(t):
        if spec is not None and spec.is_integer:  # BIGINT UNSIGNED widened to DECIMAL(20,0)
            return _unsigned_bigint(target)
        return _decimal(target, t.scale, enc)
    if pa.types.is_timestamp(t):
        return _datetime(spec, enc, zoned=t.tz is not None)
    if pa.types.is_date(t):
        return _date()
    if spec is not None and spec.base == "time":
        return _time_micros(spec, enc)
    if pa.types.is_boolean(t):
        return ["TRY_CAST({v} AS BOOLEAN)"]
    return [f"TRY_CAST({{v}} AS {target})"]


def _describe(col: LakeColumn) -> str:
    return col.spec.sql() if col.spec is not None else str(col.type)


@dataclass(frozen=True)
class DecodePlan:
    columns: tuple[LakeColumn, ...]
    enc: Encoding

    @property
    def transform_spec(self) -> str:
        """The json_transform structure: every column as text."""
        return json.dumps({c.name: "VARCHAR" for c in self.columns})

    def query(self, source: str, image: str, keep: Sequence[str], op: str = "op") -> str:
        """SELECT the decoded columns, `keep` and `_dw_error` from `source`, whose struct column `image` is the
        json_transform'ed row image (see `transform_spec`).

        `_dw_error` lists each column whose value is non-null but did not decode, and each NOT NULL column
        that is null in a create, update or snapshot row (a delete's image may carry only the key).
        """
        steps = [value_steps(c, self.enc) for c in self.columns]
        raw = [f"{image}.{qi(c.name)} AS _r{i}" for i, c in enumerate(self.columns)]
        sql = f"SELECT *, {', '.join(raw)} FROM ({source})" if raw else f"SELECT * FROM ({source})"
        for level in range(max((len(s) for s in steps), default=0)):
            exprs = []
            for i, col_steps in enumerate(steps):
                if level < len(col_steps):
                    names = {"v": f"_r{i}", **{f"s{j}": f"_s{i}_{j}" for j in range(level)}}
                    exprs.append(f"({col_steps[level].format(**names)}) AS _s{i}_{level}")
            sql = f"SELECT *, {', '.join(exprs)} FROM ({sql})"
        checks, values = [], []
        for i, c in enumerate(self.columns):
            out = f"_s{i}_{len(steps[i]) - 1}"
            values.append(f"{out} AS {qi(c.name)}")
            what = sql_literal(f"column {c.name}: cannot decode ")
            as_type = sql_literal(f" as {_describe(c)}")
            checks.append(f"CASE WHEN _r{i} IS NOT NULL AND {out} IS NULL THEN {what} || left(_r{i}, 80) || {as_type} END")
            if not c.nullable:
                checks.append(f"CASE WHEN {op} <> 'd' AND _r{i} IS NULL "
                              f"THEN {sql_literal(f'column {c.name}: null in a NOT NULL column')} END")
        error = f"NULLIF(concat_ws('; ', {', '.join(checks)}), '')" if checks else "NULL"
        return f"SELECT {', '.join(values + [qi(k) for k in keep])}, {error} AS _dw_error FROM ({sql})"


def plan(columns: Sequence[LakeColumn], enc: Encoding) -> DecodePlan:
    return DecodePlan(tuple(columns), enc)


def lake_columns(fields: Sequence[pa.Field], specs: Mapping[str, TypeSpec]) -> list[LakeColumn]:
    return [LakeColumn(f.name, f.type, specs.get(f.name), f.nullable) for f in fields]
