"""Seed client databases with realistic, referentially consistent, deterministic data driven by the model.

`RowFactory` builds rows for any model from types, keys, references and hints (no table names in code); it is
shared with the workload. `seed_clients` creates each client's production and staging databases, fills
production, and registers the client as `seeded`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Sequence

import pymysql

from dw_assets import db
from dw_assets.identifiers import quote_ident, quote_qualified, staging_db_for, validate_client_name
from dw_assets.model import Column, StandardModel, Table
from dw_assets.model.ddl import create_client_databases, database_exists
from dw_assets.settings import Settings

from .values import DEFAULT_P_NULL, SEED_EPOCH, RowContext, ValueFn, value_fn

INSERT_BATCH_ROWS = 1000  # rows per executemany call (pymysql folds them into multi-row INSERTs)
# Tries for a primary key not yet taken: a key made of references (a junction table) is drawn, not counted.
KEY_ATTEMPTS = 25


class GeneratorError(ValueError):
    """An expected generator failure (bad names, existing databases, a model the generator cannot fill)."""


def client_names(spec: str | int | Sequence[str]) -> list[str]:
    """`3` / "3" -> client_001..client_003; "a,b" or ["a", "b"] -> those names. Every name is validated here,
    before anything touches the database; duplicates are refused."""
    if not isinstance(spec, (str, int)) and len(spec) == 1:
        spec = spec[0]
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        n = int(spec)
        if not 1 <= n <= 9999:
            raise GeneratorError(f"client count must be 1..9999, got {n}")
        width = max(3, len(str(n)))
        return [f"client_{i:0{width}d}" for i in range(1, n + 1)]
    parts = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in str(s).split(",")]
    names = [validate_client_name(p) for p in parts]  # no stripping: " acme" is refused, not silently fixed
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GeneratorError(f"duplicate client name(s): {', '.join(dupes)}")
    if not names:
        raise GeneratorError("no client names given")
    return names


# ---- key pools: what exists, so references, updates and deletes pick real rows ------------------------------


@dataclass
class TablePool:
    """The keys of one table's rows known to the generator (seeded or loaded from the database)."""

    table: Table
    keys: list[tuple] = field(default_factory=list)
    pos: dict[tuple, int] = field(default_factory=dict)
    parent_of: dict[tuple, Any] = field(default_factory=dict)
    by_parent: dict[Any, list[tuple]] = field(default_factory=dict)
    max_line: dict[Any, int] = field(default_factory=dict)
    next_seq: int = 1  # next value of the table's integer sequence key
    serial: int = 0  # row counter for tables without an integer sequence key

    def add(self, key: tuple, parent: Any = None, line: int | None = None) -> None:
        self.pos[key] = len(self.keys)
        self.keys.append(key)
        if parent is not None:
            self.parent_of[key] = parent
            self.by_parent.setdefault(parent, []).append(key)
            if line is not None and line > self.max_line.get(parent, 0):
                self.max_line[parent] = line

    def remove(self, key: tuple) -> None:
        i = self.pos.pop(key)
        last = self.keys.pop()
        if last != key:  # swap-remove keeps removal O(1)
            self.keys[i] = last
            self.pos[last] = i
        parent = self.parent_of.pop(key, None)
        if parent is not None:
            self.by_parent[parent].remove(key)

    def choice(self, rng: random.Random) -> tuple | None:
        return self.keys[rng.randrange(len(self.keys))] if self.keys else None

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class TablePlan:
    """How to build a row of one table: which column is the sequence key, the parent, the line number."""

    table: Table
    seq_col: str | None
    parent_col: str | None
    line_col: str | None
    value_fns: dict[str, ValueFn]

    @classmethod
    def of(cls, t: Table) -> "TablePlan":
        parent = t.parent_column.name if t.parent_column else None
        line = next((c.name for c in t.columns if c.generate == "line_number"), None)
        if line and not parent:
            raise GeneratorError(f"table {t.name!r}: line_number needs a parent (a NOT NULL reference)")
        seq = next((c.name for c in t.key_columns
                    if c.type.is_integer and not c.references and c.name != line), None)
        special = {seq, parent, line}
        fns = {c.name: value_fn(c) for c in t.columns
               if c.name not in special and not c.references and c.generate != "sequence"}
        return cls(t, seq, parent, line, fns)


class RowFactory:
    """Builds rows for any model table and records them in the pools (so later rows can reference them)."""

    def __init__(self, model: StandardModel, pools: dict[str, TablePool], now: Callable[[], datetime]):
        self.model, self.pools, self.now = model, pools, now
        self.plans = {t.name: TablePlan.of(t) for t in model.tables}
        # References into a later table of a cycle: that table's rows of the same transaction are inserted
        # after this one, so the value is NULL here and `fill_back_references` sets it (when seeding).
        self.deferred = {(t.name, c.name) for t, c in model.back_references if c.references.table != t.name}

    def new_row(self, rng: random.Random, table: Table, parent_key: Any = None) -> tuple | None:
        """One new row (values in column order) of `table` whose primary key no known row has; `parent_key` is
        required for child tables. None when KEY_ATTEMPTS draws found no free key (the combinations of a
        junction table's references are used up for this parent)."""
        pool = self.pools[table.name]
        for _ in range(KEY_ATTEMPTS):
            row = self._draw_row(rng, table, parent_key)
            key = tuple(row[k] for k in table.primary_key)
            if key not in pool.pos:
                plan = self.plans[table.name]
                pool.add(key, parent_key, row[plan.line_col] if plan.line_col else None)
                return tuple(row[c.name] for c in table.columns)
        return None

    def _draw_row(self, rng: random.Random, table: Table, parent_key: Any) -> dict[str, Any]:
        plan, pool = self.plans[table.name], self.pools[table.name]
        if plan.seq_col:
            serial = pool.next_seq
            pool.next_seq += 1
        else:
            pool.serial += 1
            serial = pool.serial
        line = pool.max_line.get(parent_key, 0) + 1 if plan.line_col else None
        ctx = RowContext(serial=serial, now=self.now(), row={})
        for c in table.columns:
            if c.name == plan.seq_col or c.generate == "sequence":
                v: Any = serial
            elif c.name == plan.parent_col:
                if parent_key is None:
                    raise GeneratorError(f"table {table.name!r} needs a parent row ({c.references})")
                v = parent_key
            elif c.name == plan.line_col:
                v = line
            elif c.references:
                v = self._reference(rng, table, c, parent_key)
            else:
                v = plan.value_fns[c.name](rng, ctx)
            ctx.row[c.name] = v
        return ctx.row

    def _reference(self, rng: random.Random, table: Table, c: Column, parent_key: Any) -> Any:
        if (table.name, c.name) in self.deferred:
            return None
        target = self.pools[c.references.table]
        if c.nullable and rng.random() < float(c.generate_args.get("p_null", DEFAULT_P_NULL)):
            return None
        # Realism: when this row and the referenced table share a parent (an order and an address of the same
        # customer), pick a referenced row of that same parent.
        if parent_key is not None and target.table.parent == table.parent and table.parent is not None:
            siblings = target.by_parent.get(parent_key)
            if siblings:
                return siblings[rng.randrange(len(siblings))][0]
            if c.nullable:
                return None
        key = target.choice(rng)
        if key is None:
            if c.nullable:
                return None
            raise GeneratorError(f"{table.name}.{c.name} references {c.references} but that table has no rows")
        return key[0]

    def new_tree(self, rng: random.Random, table: Table, parent_key: Any, out: dict[str, list[tuple]]) -> None:
        """A new row of `table` plus its children (rows_per_parent of each child table), recursively."""
        row = self.new_row(rng, table, parent_key)
        if row is None:
            return
        out.setdefault(table.name, []).append(row)
        children = self.model.children(table.name)
        if not children:
            return
        own_key = row[table.columns.index(table.column(table.primary_key[0]))]
        for child in children:
            lo, hi = child.workload.rows_per_parent
            for _ in range(rng.randint(lo, hi)):
                self.new_tree(rng, child, own_key, out)


def empty_pools(model: StandardModel) -> dict[str, TablePool]:
    return {t.name: TablePool(t) for t in model.tables}


def root_row_counts(model: StandardModel, rows: int) -> dict[str, int]:
    """How many rows of each root table give about `rows` rows in total once children are added."""
    size: dict[str, float] = {}
    for t in reversed(model.tables):  # children first
        size[t.name] = 1 + sum((c.workload.rows_per_parent[0] + c.workload.rows_per_parent[1]) / 2 * size[c.name]
                               for c in model.children(t.name))
    roots = [t for t in model.tables if t.parent is None]
    weights = {t.name: t.workload.insert_weight for t in roots}
    if not any(weights.values()):
        weights = {n: 1.0 for n in weights}
    total = sum(weights[n] * size[n] for n in weights)
    return {n: max(1, round(rows * weights[n] / total)) for n in weights}


def generate_client_rows(model: StandardModel, rows: int, rng: random.Random,
                         now: datetime = SEED_EPOCH) -> Iterable[tuple[Table, list[tuple]]]:
    """Yield (table, rows) in dependency order: roots by weight, then rows_per_parent children per parent."""
    pools = empty_pools(model)
    factory = RowFactory(model, pools, lambda: now)
    roots = root_row_counts(model, rows)
    for t in model.tables:
        if t.parent is None:
            out = [factory.new_row(rng, t) for _ in range(roots[t.name])]
        else:
            lo, hi = t.workload.rows_per_parent
            parents = [k[0] for k in list(pools[t.parent].keys)]
            out = [factory.new_row(rng, t, p) for p in parents for _ in range(rng.randint(lo, hi))]
        yield t, [r for r in out if r is not None]


# ---- second pass: back-references (nullable references in a cycle, or to the row's own table) ---------------


def back_reference_updates(model: StandardModel, generated: Mapping[str, Sequence[tuple]], rng: random.Random
                           ) -> Iterable[tuple[Table, Column, list[tuple]]]:
    """For each of `model.back_references`: (table, column, [(value, *primary key)]) filling the rows inserted
    with NULL there (p_null of them stay NULL). Where the referenced table belongs to this one (staff of a
    store), the value is one of the row's own children: a store's manager works at that store."""
    for table, col in model.back_references:
        rows, target = generated.get(table.name, ()), model.table(col.references.table)
        target_rows = generated.get(target.name, ())
        if not rows or not target_rows:
            continue
        ci, own = table.columns.index(col), table.column_names.index(table.primary_key[0])
        key_idx = [table.column_names.index(k) for k in table.primary_key]
        tk = target.column_names.index(target.primary_key[0])
        owner_col = target.parent_column
        owned = owner_col is not None and owner_col.references.table == table.name
        by_owner: dict[Any, list[Any]] = {}
        if owned:
            oi = target.columns.index(owner_col)
            for r in target_rows:
                by_owner.setdefault(r[oi], []).append(r[tk])
        p_null = float(col.generate_args.get("p_null", DEFAULT_P_NULL))
        params = []
        for r in rows:
            if r[ci] is not None or rng.random() < p_null:
                continue
            if owned:
                candidates = by_owner.get(r[own])
                if not candidates:
                    continue  # no child row to point at: stays NULL
                value = candidates[rng.randrange(len(candidates))]
            else:
                value = target_rows[rng.randrange(len(target_rows))][tk]
            if target is table and value == r[own]:
                continue  # not the row itself
            params.append((value, *(r[i] for i in key_idx)))
        yield table, col, params


def update_sql(database: str, table: Table, column: Column) -> str:
    where = " AND ".join(f"{quote_ident(k)} = %s" for k in table.primary_key)
    return f"UPDATE {quote_qualified(database, table.name)} SET {quote_ident(column.name)} = %s WHERE {where}"


def fill_back_references(cur: Any, database: str, model: StandardModel, generated: Mapping[str, Sequence[tuple]],
                         rng: random.Random) -> int:
    """Run the second pass (UPDATEs after all inserts); returns the rows updated."""
    n = 0
    for table, col, params in back_reference_updates(model, generated, rng):
        sql = update_sql(database, table, col)
        for start in range(0, len(params), INSERT_BATCH_ROWS):
            cur.executemany(sql, params[start:start + INSERT_BATCH_ROWS])
        n += len(params)
    return n


def insert_sql(database: str, table: Table) -> str:
    cols = ", ".join(quote_ident(c.name) for c in table.columns)
    marks = ", ".join(["%s"] * len(table.columns))
    return f"INSERT INTO {quote_qualified(database, table.name)} ({cols}) VALUES ({marks})"


def prepare_session(conn: pymysql.Connection) -> None:
    """UTC session: TIMESTAMP values are written and read as UTC, whatever the server's time zone."""
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")


@dataclass(frozen=True)
class SeededClient:
    name: str
    production_db: str
    staging_db: str
    rows: dict[str, int]  # table -> rows inserted

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def client_seed(seed: int, index: int) -> int:
    """The random stream of the index-th client of a seed call (same seed and position -> same data)."""
    return seed * 1_000_003 + index


def seed_clients(settings: Settings, clients: str | int | Sequence[str], rows_per_client: int = 10_000,
                 seed: int = 42, model: StandardModel | None = None, replace: bool = False,
                 progress: Callable[[str, str, int], None] | None = None) -> list[SeededClient]:
    """Create, fill and register clients. Names are validated and existing databases checked before any change.

    `clients`: a count or names (see `client_names`). Each client's production and staging databases get the
    model's schema; production gets about `rows_per_client` rows. `replace` drops existing databases first.
    `progress(client, table, rows)` is called after each inserted batch.
    """
    names = client_names(clients)
    if rows_per_client < 1:
        raise GeneratorError("rows_per_client must be >= 1")
    model = model or settings.standard_model()
    results: list[SeededClient] = []
    with db.connection(settings) as conn:
        if not replace:
            existing = [d for n in names for d in (n, staging_db_for(n)) if database_exists(conn, d)]
            if existing:
                raise GeneratorError(f"database(s) already exist: {', '.join(existing)} (use --replace to recreate)")
        prepare_session(conn)
        for i, name in enumerate(names):
            try:
                results.append(_seed_one(settings, conn, model, name, client_seed(seed, i), rows_per_client,
                                         replace, progress))
            except Exception as e:
                done = f" ({', '.join(r.name for r in results)} seeded before it)" if results else ""
                if isinstance(e, (pymysql.MySQLError, GeneratorError)):
                    raise GeneratorError(f"seeding {name} failed: {e}; nothing of {name} was kept{done}") from e
                raise
    return results


def _seed_one(settings: Settings, conn: pymysql.Connection, model: StandardModel, name: str, seed: int,
              rows_per_client: int, replace: bool, progress: Callable[[str, str, int], None] | None
              ) -> SeededClient:
    """One client, all or nothing: on any failure its databases are dropped again and it is not registered."""
    from dw_assets.onboarding.registry import register_client  # registry imports nothing from here

    prod, staging = create_client_databases(conn, model, name, replace=replace)
    table = ""
    try:
        rng = random.Random(seed)
        counts: dict[str, int] = {}
        generated: dict[str, list[tuple]] = {}
        conn.autocommit(False)  # one transaction per table batch run: far faster than autocommit
        with conn.cursor() as cur:
            for t, rows in generate_client_rows(model, rows_per_client, rng):
                generated[t.name] = rows
                table, sql = t.name, insert_sql(prod, t)
                for start in range(0, len(rows), INSERT_BATCH_ROWS):
                    batch = rows[start:start + INSERT_BATCH_ROWS]
                    cur.executemany(sql, batch)
                    if progress:
                        progress(name, t.name, len(batch))
                counts[t.name] = len(rows)
                conn.commit()
            table = "(second pass: back-references)"
            fill_back_references(cur, prod, model, generated, rng)
            conn.commit()
        conn.autocommit(True)
        register_client(settings, name, prod, staging, status="seeded", model_version=model.version,
                        changed_by="dw seed", replace=replace)
    except BaseException as e:
        _drop_half_made(conn, (prod, staging))
        if table and isinstance(e, pymysql.MySQLError):
            raise GeneratorError(f"table {table}: {e}") from e
        raise
    return SeededClient(name, prod, staging, counts)


def _drop_half_made(conn: pymysql.Connection, databases: Sequence[str]) -> None:
    try:
        conn.rollback()
        conn.autocommit(True)
        with conn.cursor() as cur:
            for d in databases:
                cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(d)}")
    except pymysql.MySQLError:  # the connection itself failed: the caller's error is the one to report
        pass
