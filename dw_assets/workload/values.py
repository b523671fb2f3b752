"""Deterministic fake values for model columns, chosen by the column's `generate` hint or else by its type.

Every value comes from the `random.Random` passed in, so the same seed gives the same data. Vocabularies mix
languages and emoji on purpose: capture, landing and the lake must round-trip utf8mb4 text exactly.
"""
from __future__ import annotations

import json
import random
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Callable

from dw_assets.model import Column, ModelError, TypeSpec
from dw_assets.model import geometry as geo

FIRST = ("Anna", "Ben", "Chloé", "Dmitri", "Elif", "François", "Grace", "Hiro", "Inés", "Jonas", "Kai", "Łukasz",
         "Maya", "Nils", "Olga", "Priya", "Quinn", "Rosa", "Søren", "Tomás", "Uma", "Vera", "Wei", "Zoë", "芳",
         "Анна", "محمد", "Noah", "Lena", "Mateo")
LAST = ("Schmidt", "Müller", "García", "O'Brien", "Kowalski", "Nakamura", "Dubois", "Rossi", "Jensen", "Novák",
        "Silva", "Smith", "Öztürk", "Nguyễn", "van der Berg", "王", "Иванова", "Haddad", "Brown", "Fischer")
COMPANY_WORDS = ("Nordwind", "Blue Harbor", "Kaffee & Co", "Atlas", "Quantum", "Zenith", "Müller Bau", "Óptica",
                 "Sakura", "Polar ❄", "Brightside", "Iron Oak", "Café ☕ Collective", "Lumen")
COMPANY_SUFFIX = ("GmbH", "Ltd", "S.A.", "AG", "Inc.", "B.V.", "SAS", "Oy", "KK", "LLC")
CITIES = ("Berlin", "München", "Zürich", "São Paulo", "Kraków", "Tōkyō", "Paris", "Dublin", "Oslo", "Reykjavík",
          "New York", "Île-de-France", "Wien", "Málaga", "Göteborg")
STREETS = ("Hauptstraße", "Rue de la Paix", "Main Street", "Calle Mayor", "Øster Allé", "Via Roma", "Kings Road",
           "ul. Długa", "Sunset Blvd", "Bahnhofstraße")
COUNTRIES = ("DE", "FR", "GB", "US", "ES", "IT", "NL", "PL", "SE", "JP", "BR", "CH", "AT", "IE", "NO")
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "JPY", "PLN")
ADJECTIVES = ("Compact", "Ultra", "Smart", "Classic", "Eco", "Pro", "Mini", "Wireless", "Ergonomic", "Premium")
NOUNS = ("Keyboard", "Router", "Licence", "Headset", "Monitor", "Backup Plan", "Desk Lamp", "Cable", "Dock", "Sensor")
WORDS = ("quick", "delivery", "please", "call", "before", "arrival", "gift", "wrap", "thanks", "invoice", "urgent",
         "Lieferung", "schnell", "merci", "beaucoup", "gracias", "por", "favor", "ありがとう", "спасибо", "🙂", "🚚",
         "📦", "✨", "naïve", "café", "façade", "Grüße", "😀", "👍🏽")
TAGS = ("new", "vip", "b2b", "churn-risk", "beta", "newsletter", "eu", "🔥hot")
LOCALES = ("de-DE", "en-GB", "fr-FR", "es-ES", "ja-JP", "pl-PL")

# Seeded data ends here (a fixed instant, not the wall clock, so that the same seed gives identical data).
SEED_EPOCH = datetime(2026, 1, 1)
DEFAULT_P_NULL = 0.15  # share of NULLs in nullable columns without an explicit p_null


@dataclass
class RowContext:
    """What a value generator may know about the row being built."""

    serial: int  # unique per row of the table (its integer key): makes unique columns unique
    now: datetime  # upper bound for timestamps: SEED_EPOCH when seeding, the clock in the workload
    row: dict[str, Any]  # values generated so far for this row (earlier columns)
    created_at: datetime | None = None  # the row's creation instant, once generated


ValueFn = Callable[[random.Random, RowContext], Any]


def _ascii(s: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", s) if ch.isascii() and (ch.isalnum() or ch in ".-"))


def _fit(value: str, spec: TypeSpec, unique: bool) -> str:
    n = spec.max_length
    if n is None or len(value) <= n:
        return value
    # Unique values carry the serial at the end: keep the tail so they stay unique.
    return value[-n:] if unique else value[:n]


def _money(spec: TypeSpec, lo: float, hi: float) -> Callable[[random.Random], Any]:
    if spec.base != "decimal":
        if spec.is_integer:
            return lambda rng: rng.randint(int(lo), int(hi))
        return lambda rng: round(rng.uniform(lo, hi), 2)
    scale = spec.scale or 0
    unit = 10**scale
    cap = 10 ** (spec.precision or 10) - 1  # largest unscaled value the column holds
    lo_u, hi_u = max(0, int(lo * unit)), min(cap, int(hi * unit))
    return lambda rng: Decimal(rng.randint(lo_u, hi_u)).scaleb(-scale)


def truncate_time(ts: datetime, spec: TypeSpec) -> datetime | date:
    if spec.base == "date":
        return ts.date()
    digits = spec.fsp or 0
    if digits < 6:  # store exactly what the column keeps, so later stages compare equal values
        step = 10 ** (6 - digits)
        ts = ts.replace(microsecond=ts.microsecond - ts.microsecond % step)
    return ts


def _text(rng: random.Random, lo: int = 3, hi: int = 18) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    return " ".join(words).capitalize() + "."


def _json_attrs(rng: random.Random, ctx: RowContext) -> str:
    doc = {
        "tier": rng.choice(("free", "basic", "pro", "enterprise")),
        "tags": sorted(rng.sample(TAGS, rng.randint(0, 3))),
        "score": round(rng.random(), 4),
        "newsletter": rng.random() < 0.5,
        "locale": rng.choice(LOCALES),
    }
    if rng.random() < 0.3:
        doc["note"] = _text(rng, 2, 6)
    if rng.random() < 0.2:
        doc["nested"] = {"source": rng.choice(("web", "app", "api")), "ref": ctx.serial}
    return json.dumps(doc, ensure_ascii=False)


def value_fn(column: Column) -> ValueFn:
    """The generator of one column (NULLs included). Keys and references are the row builder's job."""
    spec, args, kind = column.type, dict(column.generate_args), column.generate or default_kind(column.type)
    fn = _kind_fn(kind, column, args)
    p_null = float(args.get("p_null", DEFAULT_P_NULL if column.nullable else 0.0))
    if not column.nullable or p_null <= 0:
        return fn
    return lambda rng, ctx: None if rng.random() < p_null else fn(rng, ctx)


def default_kind(spec: TypeSpec) -> str:
    """The generator kind used for a column without a `generate` hint."""
    if spec.is_boolean or spec.base == "bit" and spec.length == 1:
        return "flag"
    if spec.is_integer or spec.base in ("year", "bit"):
        return "int"
    if spec.base in ("decimal", "float", "double"):
        return "money"
    if spec.base in ("enum", "set"):
        return "status"
    if spec.base == "json":
        return "json_attrs"
    if spec.base == "uuid":
        return "uuid"
    if spec.is_binary:
        return "bytes"
    if spec.is_geometry:
        return "geometry"
    if spec.base == "date":
        return "date_past"
    if spec.base in ("datetime", "timestamp", "time"):
        return "created_at"
    return "text"


def _kind_fn(kind: str, column: Column, args: dict[str, Any]) -> ValueFn:  # noqa: C901 - one branch per kind
    spec, unique = column.type, column.unique

    def fit(fn: Callable[[random.Random, RowContext], str]) -> ValueFn:
        return lambda rng, ctx: _fit(fn(rng, ctx), spec, unique)

    if kind in ("email",):
        def email(rng: random.Random, ctx: RowContext) -> str:
            first, last = _ascii(rng.choice(FIRST)).lower() or "user", _ascii(rng.choice(LAST)).lower() or "x"
            return f"{first}.{last}.{ctx.serial}@{rng.choice(('example.com', 'example.org', 'mail.test'))}"
        return fit(email)
    if kind == "name":
        return fit(lambda rng, ctx: f"{rng.choice(FIRST)} {rng.choice(LAST)}")
    if kind == "company":
        return fit(lambda rng, ctx: f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIX)}")
    if kind == "phone":
        return fit(lambda rng, ctx: f"+{rng.randint(1, 99)} {rng.randint(10, 999)} {rng.randint(100000, 9999999)}")
    if kind == "country":
        return fit(lambda rng, ctx: rng.choice(COUNTRIES))
    if kind == "city":
        return fit(lambda rng, ctx: rng.choice(CITIES))
    if kind == "street":
        return fit(lambda rng, ctx: f"{rng.choice(STREETS)} {rng.randint(1, 250)}")
    if kind == "postcode":
        return fit(lambda rng, ctx: f"{rng.randint(1000, 99999):05d}")
    if kind == "currency":
        return fit(lambda rng, ctx: rng.choice(CURRENCIES))
    if kind == "sku":
        return fit(lambda rng, ctx: f"{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}"
                                    f"-{ctx.serial:07d}")
    if kind == "product_name":
        return fit(lambda rng, ctx: f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
                                    + (f" {rng.choice(('✨', '🚀', '™', 'Ⅱ'))}" if rng.random() < 0.1 else ""))
    if kind == "code":
        prefix = str(args.get("prefix", "C"))
        return fit(lambda rng, ctx: f"{prefix}-{ctx.serial:010d}" if unique else f"{prefix}-{rng.randint(0, 10**9):010d}")
    if kind == "uuid":
        if unique:  # the serial in the low 48 bits (the "node") keeps values unique across runs of one seed
            return fit(lambda rng, ctx: str(uuid.UUID(int=(rng.getrandbits(80) << 48) | (ctx.serial & (2**48 - 1)),
                                                      version=4)))
        return fit(lambda rng, ctx: str(uuid.UUID(int=rng.getrandbits(128), version=4)))
    if kind == "text":
        if spec.base in ("enum", "set"):
            raise ModelError("generate: text needs a text column", None, None, column.name)
        return fit(lambda rng, ctx: _text(rng))
    if kind == "json_attrs":
        return _json_attrs
    if kind == "money":
        money = _money(spec, float(args.get("min", 0)), float(args.get("max", 1000)))
        p_zero = float(args.get("p_zero", 0))
        zero = Decimal(0).scaleb(-(spec.scale or 0)) if spec.base == "decimal" else 0
        return lambda rng, ctx: zero if p_zero and rng.random() < p_zero else money(rng)
    if kind == "int":
        lo_t, hi_t = spec.integer_range() if spec.is_integer else (0, 2**63 - 1)
        if spec.base == "year":
            lo_t, hi_t = 1901, 2155
        if spec.base == "bit":
            lo_t, hi_t = 0, 2 ** (spec.length or 1) - 1
        # Defaults: 0..1000 within the type's range; YEAR 1990..2030 (a YEAR has no values below 1901).
        default_lo, default_hi = (1990, 2030) if spec.base == "year" else (max(lo_t, 0), min(hi_t, 1000))
        lo, hi = max(lo_t, int(args.get("min", default_lo))), min(hi_t, int(args.get("max", default_hi)))
        return lambda rng, ctx: rng.randint(lo, hi)
    if kind == "flag":
        p = float(args.get("p_true", 0.5))
        return lambda rng, ctx: 1 if rng.random() < p else 0
    if kind == "status":
        if not spec.values:
            raise ModelError(f"generate: status needs an ENUM or SET column, got {spec.sql()}", None, None, column.name)
        values = spec.values
        if spec.base == "set":
            return lambda rng, ctx: ",".join(v for v in values if rng.random() < 0.4)
        return lambda rng, ctx: rng.choice(values)
    if kind == "bytes":
        lo, hi = int(args.get("min", 8)), int(args.get("max", 64))
        hi = min(hi, spec.max_length or hi)
        return lambda rng, ctx: rng.randbytes(rng.randint(min(lo, hi), hi))
    if kind in ("created_at", "updated_at", "date_past", "date_future", "birth_date"):
        return _time_fn(kind, spec, args)
    if kind == "geometry":
        if not spec.is_geometry:
            raise ModelError(f"generate: geometry needs a spatial column, got {spec.sql()}", None, None, column.name)
        srid = args.get("srid", 0)
        if srid != int(srid) or not 0 <= srid < 2**32:
            raise ModelError(f"generate.srid must be an integer 0..4294967295, got {srid!r}", None, None, column.name)
        return _geometry_fn(spec.base, int(srid))
    raise ModelError(f"generator kind {kind!r} is handled by the row builder, not as a value", None, None, column.name)


def _geometry_fn(base: str, srid: int) -> ValueFn:
    """Values of a spatial column as MariaDB stores them (SRID + WKB), around European cities in lon/lat."""
    def xy(rng: random.Random) -> tuple[float, float]:
        return round(rng.uniform(-10, 30), 6), round(rng.uniform(35, 62), 6)

    def line(rng: random.Random) -> list[tuple[float, float]]:
        x, y = xy(rng)
        return [(round(x + i * rng.uniform(0.001, 0.01), 6), round(y + i * rng.uniform(-0.01, 0.01), 6))
                for i in range(rng.randint(2, 5))]

    def ring(rng: random.Random) -> list[tuple[float, float]]:
        x, y = xy(rng)
        d = round(rng.uniform(0.001, 0.05), 6)
        return [(x, y), (round(x + d, 6), y), (round(x + d, 6), round(y + d, 6)), (x, round(y + d, 6)), (x, y)]

    one = {"point": lambda rng: geo.point_wkb(*xy(rng)), "linestring": lambda rng: geo.linestring_wkb(line(rng)),
           "polygon": lambda rng: geo.polygon_wkb([ring(rng)])}
    one["geometry"] = one["point"]
    parts = {"multipoint": "point", "multilinestring": "linestring", "multipolygon": "polygon"}

    def make(rng: random.Random, ctx: RowContext) -> bytes:
        if base in one:
            wkb = one[base](rng)
        elif base in parts:
            wkb = geo.multi_wkb(base, [one[parts[base]](rng) for _ in range(rng.randint(1, 3))])
        else:  # geometrycollection
            wkb = geo.multi_wkb(base, [one[k](rng) for k in rng.sample(sorted(one.keys() - {"geometry"}), 2)])
        return geo.to_internal(wkb, srid)

    return make


def _time_fn(kind: str, spec: TypeSpec, args: dict[str, Any]) -> ValueFn:
    days = float(args.get("max", 730 if kind != "date_future" else 365))
    if spec.base == "time":
        return lambda rng, ctx: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"

    def created(rng: random.Random, ctx: RowContext) -> Any:
        ts = ctx.now - timedelta(seconds=rng.uniform(0, days * 86400))
        ctx.created_at = ctx.created_at or ts
        return truncate_time(ts, spec)

    def updated(rng: random.Random, ctx: RowContext) -> Any:
        start = ctx.created_at or ctx.now - timedelta(days=30)
        return truncate_time(start + (ctx.now - start) * rng.random(), spec)

    def past(rng: random.Random, ctx: RowContext) -> Any:
        return truncate_time(ctx.now - timedelta(days=rng.uniform(0, days)), spec)

    def future(rng: random.Random, ctx: RowContext) -> Any:
        return truncate_time(ctx.now + timedelta(days=rng.uniform(1, days)), spec)

    def birth(rng: random.Random, ctx: RowContext) -> Any:
        return truncate_time(datetime(1940, 1, 1) + timedelta(days=rng.randint(0, 67 * 365)), spec)

    return {"created_at": created, "updated_at": updated, "date_past": past, "date_future": future,
            "birth_date": birth}[kind]
