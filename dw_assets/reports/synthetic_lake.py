"""A synthetic silver lake for benchmarks: model-driven, vectorised (numpy/pyarrow), written straight as Delta.

Row counts follow the seeding's shape (`root_row_counts` and each child table's `rows_per_parent`), scaled so
the model's busiest table (highest `insert_weight`) gets the requested number of rows. Values honour each
column's type and `generate` hints (ranges, null/zero shares, enum labels, vocabularies); nullable free text,
JSON and BLOB columns are left NULL because no report reads them and they would dominate generation time.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from dw_assets.lakehouse.paths import storage_options, table_url
from dw_assets.lakehouse.tables import SOURCE_TS, table_properties
from dw_assets.model import Column, StandardModel, Table
from dw_assets.model.types import arrow_type
from dw_assets.settings import Settings
from dw_assets.workload.generator import root_row_counts
from dw_assets.workload.values import ADJECTIVES, CITIES, COUNTRIES, CURRENCIES, FIRST, LAST, NOUNS, SEED_EPOCH

_VOCABULARY = {"currency": CURRENCIES, "country": COUNTRIES, "city": CITIES, "name": FIRST + LAST,
               "product_name": tuple(f"{a} {n}" for a in ADJECTIVES for n in NOUNS)}
_DAY_US = 86_400 * 1_000_000
_EPOCH_US = int((SEED_EPOCH - datetime(1970, 1, 1)).total_seconds() * 1_000_000)
MARKER = "_synthetic.json"


def fact_table(model: StandardModel) -> Table:
    """The busiest table (highest insert weight): the one a benchmark size is expressed in."""
    return max(model.tables, key=lambda t: t.workload.insert_weight)


def expected_row_counts(model: StandardModel, fact_rows: int) -> dict[str, int]:
    """Rows per table for one client holding `fact_rows` rows of the fact table, in the seeding's proportions."""
    def shape(total: int) -> dict[str, float]:
        counts: dict[str, float] = dict(root_row_counts(model, total))
        for t in model.tables:
            if t.parent is not None:
                lo, hi = t.workload.rows_per_parent
                counts[t.name] = counts[t.parent] * (lo + hi) / 2
        return counts

    unit = shape(1_000_000)
    scale = fact_rows / unit[fact_table(model).name]
    return {n: max(1, round(v * scale)) for n, v in unit.items()}


def decimal_array(cents: np.ndarray, t: pa.Decimal128Type) -> pa.Array:
    """Unscaled integers -> decimal128 without a per-value Python object (little-endian 128-bit words)."""
    words = np.empty(2 * len(cents), np.int64)
    words[0::2] = cents
    words[1::2] = cents >> 63  # sign extension into the high word
    return pa.Array.from_buffers(t, len(cents), [None, pa.py_buffer(words)])


def _nulls(rng: np.random.Generator, column: Column, n: int, default_p: float = 0.15) -> np.ndarray | None:
    if not column.nullable:
        return None
    p = float(column.generate_args.get("p_null", default_p))
    return rng.random(n) < p if p > 0 else None


class TableGenerator:
    """Generates one table of one client; `keys` holds each generated table's row count for references."""

    def __init__(self, rng: np.random.Generator, counts: dict[str, int]):
        self.rng, self.counts = rng, counts
        self.parent_ids: dict[str, np.ndarray] = {}  # child table -> parent key per row (set by `rows`)
        self.created_us: np.ndarray | None = None

    def rows(self, table: Table) -> int:
        if table.parent is None:
            return self.counts[table.name]
        lo, hi = table.workload.rows_per_parent
        per_parent = self.rng.integers(lo, hi + 1, self.counts[table.parent])
        self.parent_ids[table.name] = np.repeat(np.arange(1, len(per_parent) + 1, dtype=np.int64), per_parent)
        self.counts[table.name] = len(self.parent_ids[table.name])
        return self.counts[table.name]

    def table(self, table: Table) -> pa.Table:
        n = self.rows(table)
        self.created_us = None
        arrays, names = [], []
        for c in table.columns:
            arrays.append(self.column(table, c, n))
            names.append(c.name)
        created = self.created_us if self.created_us is not None else np.full(n, _EPOCH_US)
        arrays.append(pa.array(created // 1000, pa.int64()))
        names.append(SOURCE_TS)
        return pa.Table.from_arrays(arrays, names=names)

    def column(self, table: Table, c: Column, n: int) -> pa.Array:  # noqa: C901 - one branch per type family
        t, rng, args = arrow_type(c.type), self.rng, c.generate_args
        parent_col = table.parent_column
        if c.auto_increment:
            return pa.array(np.arange(1, n + 1, dtype=np.int64)).cast(t)
        if parent_col is not None and c.name == parent_col.name:
            return pa.array(self.parent_ids[table.name]).cast(t)
        if c.primary_key and c.type.is_integer:  # line number within the parent (composite keys)
            parents = self.parent_ids[table.name]
            starts = np.r_[0, np.flatnonzero(np.diff(parents)) + 1]
            line = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n])) + 1
            return pa.array(line).cast(t)
        mask = _nulls(rng, c, n)
        if c.references:
            ids = rng.integers(1, self.counts[c.references.table] + 1, n)
            return pa.array(ids, mask=mask).cast(t)
        if c.type.base == "enum":
            idx = rng.integers(0, len(c.type.values), n).astype(np.int32)
            return pa.DictionaryArray.from_arrays(pa.array(idx, mask=mask), pa.array(c.type.values)).cast(pa.string())
        if pa.types.is_boolean(t):
            return pa.array(rng.random(n) < float(args.get("p_true", 0.5)), mask=mask)
        if pa.types.is_decimal(t):
            scale = 10 ** t.scale
            lo, hi = float(args.get("min", 0)), float(args.get("max", 1000))
            cents = rng.integers(int(lo * scale), int(hi * scale) + 1, n)
            if args.get("p_zero"):
                cents[rng.random(n) < float(args["p_zero"])] = 0
            arr = decimal_array(cents, t)
            return pc.if_else(pa.array(mask), pa.nulls(n, t), arr) if mask is not None else arr
        if pa.types.is_integer(t):
            lo, hi = int(args.get("min", 0)), int(args.get("max", 1000))
            return pa.array(rng.integers(lo, hi + 1, n), mask=mask).cast(t)
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return self.temporal(c, t, n, mask)
        if pa.types.is_string(t):
            if c.nullable and c.generate not in _VOCABULARY and not c.unique:
                return pa.nulls(n, t)
            vocab = _VOCABULARY.get(c.generate or "")
            if vocab and not c.unique:
                idx = rng.integers(0, len(vocab), n).astype(np.int32)
                return pa.DictionaryArray.from_arrays(pa.array(idx, mask=mask), pa.array(vocab)).cast(t)
            prefix = str(args.get("prefix", c.name[:3].upper()))
            serial = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
            return pc.binary_join_element_wise(pa.scalar(prefix + "-"), serial, "")
        return pa.nulls(n, t)  # binary and anything else: nullable by construction in the model

    def temporal(self, c: Column, t: pa.DataType, n: int, mask: np.ndarray | None) -> pa.Array:
        days = float(c.generate_args.get("max", 365 if c.generate == "date_future" else 730))
        offset = (self.rng.random(n) * days * _DAY_US).astype(np.int64)
        if c.generate == "date_future":
            us = _EPOCH_US + offset + _DAY_US
        elif c.generate == "updated_at" and self.created_us is not None:
            us = self.created_us + ((_EPOCH_US - self.created_us) * self.rng.random(n)).astype(np.int64)
        elif c.generate == "birth_date":
            us = _EPOCH_US - (20 * 365 * _DAY_US) - (self.rng.random(n) * 50 * 365 * _DAY_US).astype(np.int64)
        else:
            us = _EPOCH_US - offset
            if c.role == "created_at" and self.created_us is None:
                self.created_us = us
        arr = pa.array(us, mask=mask).cast(pa.timestamp("us", tz=getattr(t, "tz", None)))
        return arr.cast(pa.date32()) if pa.types.is_date(t) else arr


@dataclass(frozen=True)
class SyntheticLake:
    clients: tuple[str, ...]
    rows: dict[str, int]  # table -> rows over all clients
    seconds: float  # generation time; 0 when an existing lake was reused


def write_synthetic_lake(settings: Settings, clients: Sequence[str], fact_rows: int, tables: Sequence[str],
                         model: StandardModel | None = None, seed: int = 7) -> SyntheticLake:
    """Write `tables` for each client into `settings.lake_url` silver; `fact_rows` rows of the fact table in all.

    A marker file records what was written: a second call with the same parameters reuses the lake.
    """
    model = model or settings.standard_model()
    wanted = [t for t in model.tables if t.name in set(tables)]
    # Parents of wanted tables are generated too (keys and child counts derive from them) but not written.
    needed = {t.name for t in wanted}
    for t in reversed(model.tables):
        if t.name in needed and t.parent:
            needed.add(t.parent)
    params = {"clients": list(clients), "fact_rows": fact_rows, "tables": sorted(t.name for t in wanted),
              "seed": seed, "model": model.version,
              "properties": "silver"}  # the real apply's table properties (no column mapping: Sail reads it as NULLs)
    marker = Path(settings.lake_url) / MARKER
    if not settings.lake_url.startswith("s3://") and marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("params") == params:
            return SyntheticLake(tuple(clients), saved["rows"], 0.0)
    t0 = time.perf_counter()
    per_client = expected_row_counts(model, max(1, fact_rows // len(clients)))
    totals: dict[str, int] = {t.name: 0 for t in wanted}
    for i, client in enumerate(clients):
        gen = TableGenerator(np.random.default_rng(seed * 1_000_003 + i), dict(per_client))
        for table in model.tables:
            if table.name not in needed:
                continue
            data = gen.table(table)
            if table.name in totals:
                url = table_url(settings, "silver", client, table.name)
                # Created as the apply creates silver, with its properties (`dw.*` keys need the create call).
                options = storage_options(settings, url)
                DeltaTable.create(url, data.schema, mode="overwrite", configuration=table_properties(table),
                                  storage_options=options, raise_if_key_not_exists=False)
                write_deltalake(url, data, mode="overwrite", storage_options=options)
                totals[table.name] += data.num_rows
    seconds = time.perf_counter() - t0
    if not settings.lake_url.startswith("s3://"):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"params": params, "rows": totals}))
    return SyntheticLake(tuple(clients), totals, seconds)
