"""A paced, mixed OLTP workload against client production databases: the source of change events.

Each transaction mixes inserts of new parent+child rows, updates of money/status/mutable columns and deletes of
leaf rows, chosen by the model's workload hints. `apply_batch` runs one deterministic transaction for tests of
later stages; `run_workload` runs many from a few connections at a requested rate.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import pymysql

from dw_assets import db
from dw_assets.identifiers import quote_ident, quote_qualified, validate_client_name
from dw_assets.model import StandardModel, Table
from dw_assets.settings import Settings

from .generator import RowFactory, TablePool, empty_pools, insert_sql, prepare_session
from .values import SEED_EPOCH, RowContext, truncate_time

# MariaDB errors after which a transaction is simply retried: deadlock, lock wait timeout, duplicate key
# (another writer took a key we allocated; the pools are reloaded first).
RETRYABLE = {1213, 1205, 1062}


class WorkloadError(ValueError):
    """An expected workload failure (no clients, unknown client, empty model weights)."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class TxnPlan:
    """The row changes of one transaction, grouped for batching; executed parents-first."""

    inserts: dict[str, list[tuple]] = field(default_factory=dict)
    updates: list[tuple[Table, tuple[str, ...], tuple, tuple]] = field(default_factory=list)  # table, cols, vals, key
    deletes: list[tuple[Table, tuple]] = field(default_factory=list)
    busy: set[tuple[str, tuple]] = field(default_factory=set)  # (table, key) of every row it writes

    @property
    def planned_rows(self) -> int:
        return sum(map(len, self.inserts.values())) + len(self.updates) + len(self.deletes)


@dataclass
class BatchResult:
    """What one transaction changed: counts per operation and (op, table, key) per row change."""

    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    changes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def row_changes(self) -> int:
        return self.inserts + self.updates + self.deletes


@dataclass
class WorkloadStats:
    requested_rate: float
    duration_s: float  # wall time from the first transaction to the last commit
    row_changes: int = 0
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    commits: int = 0
    retries: int = 0
    per_client: dict[str, int] = field(default_factory=dict)

    @property
    def achieved_rate(self) -> float:
        return self.row_changes / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"requested_rate": self.requested_rate, "achieved_rate": round(self.achieved_rate, 1),
                "duration_s": round(self.duration_s, 3), "row_changes": self.row_changes, "inserts": self.inserts,
                "updates": self.updates, "deletes": self.deletes, "commits": self.commits, "retries": self.retries,
                "per_client": self.per_client}


class ClientState:
    """One client's pools, row factory and operation mix; shared by the workers writing to that client."""

    def __init__(self, model: StandardModel, client: str, database: str, now: Callable[[], datetime]):
        self.model, self.client, self.database, self.now = model, client, database, now
        self.lock = threading.Lock()
        self.pools: dict[str, TablePool] = empty_pools(model)
        # Keys written by in-flight transactions of this process: never picked again until they commit, so our
        # own workers never wait on each other's row locks (and cannot deadlock on them).
        self.busy: set[tuple[str, tuple]] = set()
        self.factory = RowFactory(model, self.pools, now)
        ops = [("insert", t, t.workload.insert_weight) for t in model.tables]
        ops += [("update", t, t.workload.update_weight) for t in model.tables]
        ops += [("delete", t, t.workload.delete_weight) for t in model.tables]
        ops = [o for o in ops if o[2] > 0]
        if not ops:
            raise WorkloadError("the model gives no table an insert, update or delete weight")
        self.ops = [(op, t) for op, t, _ in ops]
        self.weights = [w for _, _, w in ops]

    def load(self, conn: pymysql.Connection) -> None:
        """(Re)load the keys of every table from the database, in key order (deterministic choices)."""
        self.pools = empty_pools(self.model)
        self.factory.pools = self.pools
        with conn.cursor() as cur:
            for t in self.model.tables:
                plan = self.factory.plans[t.name]
                cols = list(t.primary_key) + [c for c in (plan.parent_col, plan.line_col) if c]
                order = ", ".join(quote_ident(k) for k in t.primary_key)
                cur.execute(f"SELECT {', '.join(quote_ident(c) for c in cols)} "
                            f"FROM {quote_qualified(self.database, t.name)} ORDER BY {order}")
                pool = self.pools[t.name]
                npk = len(t.primary_key)
                for row in cur.fetchall():
                    extra = dict(zip(cols[npk:], row[npk:]))
                    pool.add(tuple(row[:npk]), extra.get(plan.parent_col), extra.get(plan.line_col))
                if plan.seq_col:
                    cur.execute(f"SELECT COALESCE(MAX({quote_ident(plan.seq_col)}), 0) "
                                f"FROM {quote_qualified(self.database, t.name)}")
                    pool.next_seq = int(cur.fetchone()[0]) + 1
                pool.serial = len(pool)

    def plan(self, rng: random.Random, target_rows: int) -> TxnPlan:
        """Choose operations until about `target_rows` row changes are planned (call under `lock`)."""
        p = TxnPlan()
        touched: set[tuple[str, tuple]] = set()
        attempts = 0
        while p.planned_rows < target_rows and attempts < target_rows * 4:
            attempts += 1
            op, t = rng.choices(self.ops, self.weights)[0]
            if op == "insert":
                parent_key = None
                if t.parent:
                    key = self.pools[t.parent].choice(rng)
                    if key is None:
                        continue
                    parent_key = key[0]
                self.factory.new_tree(rng, t, parent_key, p.inserts)
                continue
            key = self.pools[t.name].choice(rng)
            if key is None or (t.name, key) in touched or (t.name, key) in self.busy:
                continue
            touched.add((t.name, key))
            if op == "update":
                cols, vals = self._update_values(rng, t)
                p.updates.append((t, cols, vals, key))
            else:
                self.pools[t.name].remove(key)
                p.deletes.append((t, key))
        for name, rows in p.inserts.items():
            t = self.model.table(name)
            idx = [t.column_names.index(k) for k in t.primary_key]
            touched.update((name, tuple(r[i] for i in idx)) for r in rows)
        p.busy = touched
        self.busy |= touched
        # One lock order for every transaction: no deadlocks with other writers updating the same rows.
        p.updates.sort(key=lambda u: (u[0].name, u[3]))
        p.deletes.sort(key=lambda d: (d[0].name, d[1]))
        return p

    def release(self, p: "TxnPlan") -> None:
        """Make the plan's keys available to other transactions (after commit or rollback; call under `lock`)."""
        self.busy -= p.busy

    def _update_values(self, rng: random.Random, t: Table) -> tuple[tuple[str, ...], tuple]:
        plan = self.factory.plans[t.name]
        candidates = [c for c in t.updatable_columns if c.name in plan.value_fns]
        chosen = [c for c in candidates if rng.random() < 0.5] or [rng.choice(candidates)]
        now = self.now()
        ctx = RowContext(serial=0, now=now, row={})
        cols = [c.name for c in chosen]
        vals = [plan.value_fns[c.name](rng, ctx) for c in chosen]
        for c in t.columns:  # last-change timestamps follow every update
            if c.role == "updated_at":
                cols.append(c.name)
                vals.append(truncate_time(now, c.type))
        return tuple(cols), tuple(vals)


def execute_plan(conn: pymysql.Connection, state: ClientState, p: TxnPlan, result: BatchResult | None = None) -> BatchResult:
    """Run one planned transaction and commit it; returns the row changes the server reported."""
    result = result or BatchResult()
    with conn.cursor() as cur:
        for t in state.model.tables:  # parents first
            rows = p.inserts.get(t.name)
            if rows:
                cur.executemany(insert_sql(state.database, t), rows)
                result.inserts += len(rows)
                pk_idx = [t.column_names.index(k) for k in t.primary_key]
                result.changes += [("insert", t.name, {k: r[i] for k, i in zip(t.primary_key, pk_idx)}) for r in rows]
        for t, cols, vals, key in p.updates:
            where = " AND ".join(f"{quote_ident(k)} = %s" for k in t.primary_key)
            sets = ", ".join(f"{quote_ident(c)} = %s" for c in cols)
            n = cur.execute(f"UPDATE {quote_qualified(state.database, t.name)} SET {sets} WHERE {where}", vals + key)
            result.updates += n
            if n:
                result.changes.append(("update", t.name, dict(zip(t.primary_key, key))))
        for t, key in p.deletes:
            where = " AND ".join(f"{quote_ident(k)} = %s" for k in t.primary_key)
            n = cur.execute(f"DELETE FROM {quote_qualified(state.database, t.name)} WHERE {where}", key)
            result.deletes += n
            if n:
                result.changes.append(("delete", t.name, dict(zip(t.primary_key, key))))
    conn.commit()
    return result


def _open(settings: Settings, database: str | None = None) -> pymysql.Connection:
    conn = db.connect(settings, "admin", database, autocommit=False)
    prepare_session(conn)
    return conn


def _production_db(settings: Settings, client: str) -> str:
    from dw_assets.onboarding.registry import RegistryError, get_client

    try:
        return get_client(settings, client).production_db
    except RegistryError as e:
        raise WorkloadError(str(e)) from None


def apply_batch(settings: Settings, client: str, seed: int = 0, rows: int = 50, model: StandardModel | None = None,
                now: datetime | None = SEED_EPOCH) -> BatchResult:
    """Apply ONE deterministic transaction of about `rows` row changes to a client's production database.

    Same database state + same seed -> the same changes (keys and values). Timestamps use `now` (a fixed
    instant by default so that values are reproducible; pass None for the wall clock).
    """
    validate_client_name(client)
    model = model or settings.standard_model()
    database = _production_db(settings, client)
    state = ClientState(model, client, database, (lambda: now) if now else utc_now)
    conn = _open(settings)
    try:
        state.load(conn)
        return execute_plan(conn, state, state.plan(random.Random(seed), rows))
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def _resolve_clients(settings: Settings, clients: Sequence[str] | None) -> list[tuple[str, str]]:
    from dw_assets.onboarding.registry import STATUSES, list_clients

    if clients:
        names = [validate_client_name(c) for c in clients]  # all names checked before any SQL
        return [(n, _production_db(settings, n)) for n in names]
    live = list_clients(settings, status=[s for s in STATUSES if s != "offboarded"])
    if not live:
        raise WorkloadError("no registered clients (run `dw seed` first)")
    return [(c.name, c.production_db) for c in live]


def run_workload(settings: Settings, clients: Sequence[str] | None = None, rate: float = 2000, duration: float = 10,
                 seed: int = 0, connections: int = 3, txn_rows: int = 10, model: StandardModel | None = None,
                 progress: Callable[[WorkloadStats], None] | None = None) -> WorkloadStats:
    """Write about `rate` row changes per second for `duration` seconds to the clients' production databases.

    `clients` default: every registered client not offboarded. `connections` worker threads share the clients
    (each transaction goes to one client, round robin); transactions hold about `txn_rows` row changes. If the
    server cannot keep up, the achieved rate in the returned stats is lower than requested.
    """
    if rate <= 0 or duration <= 0 or connections < 1 or txn_rows < 1:
        raise WorkloadError("rate, duration, connections and txn_rows must be positive")
    model = model or settings.standard_model()
    targets = _resolve_clients(settings, clients)
    states = [ClientState(model, name, database, utc_now) for name, database in targets]
    with db.connection(settings) as conn:
        for s in states:
            s.load(conn)

    stats = WorkloadStats(requested_rate=rate, duration_s=0.0, per_client={s.client: 0 for s in states})
    stats_lock = threading.Lock()
    errors: list[BaseException] = []
    start = time.monotonic()
    deadline = start + duration

    def worker(index: int) -> None:
        rng = random.Random(seed * 7919 + index)  # per worker: threads interleave, so runs are not repeatable
        conn = _open(settings)
        turn = index
        try:
            while not errors:
                now = time.monotonic()
                if now >= deadline:
                    return
                ahead = stats.row_changes - rate * (now - start)
                if ahead > 0:  # pace: stay on the line rate * elapsed
                    time.sleep(min(ahead / rate, deadline - now))
                    continue
                state = states[turn % len(states)]
                turn += connections
                with state.lock:
                    p = state.plan(rng, txn_rows)
                try:
                    r = execute_plan(conn, state, p)
                except pymysql.err.MySQLError as e:
                    conn.rollback()
                    with state.lock:
                        state.release(p)
                    if not (e.args and e.args[0] in RETRYABLE):
                        raise
                    with state.lock:  # the pools may hold keys of the rolled-back transaction
                        state.load(conn)
                        conn.commit()
                    with stats_lock:
                        stats.retries += 1
                    continue
                with state.lock:
                    state.release(p)
                with stats_lock:
                    stats.row_changes += r.row_changes
                    stats.inserts += r.inserts
                    stats.updates += r.updates
                    stats.deletes += r.deletes
                    stats.commits += 1
                    stats.per_client[state.client] += r.row_changes
        except BaseException as e:  # surfaced to the caller after the other workers stop
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), name=f"workload-{i}", daemon=True)
               for i in range(connections)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.5)
        if progress:
            stats.duration_s = time.monotonic() - start
            progress(stats)
    stats.duration_s = time.monotonic() - start
    if errors:
        raise errors[0]
    return stats
