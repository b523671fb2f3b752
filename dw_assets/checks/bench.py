"""The reconciliation check's cost for one client: the check itself (one round: counts, key and content
checksums of every model table on both sides) beside bare MariaDB queries over the same tables (a COUNT(*), and a
COUNT(*) with a CRC32 checksum of every row), each timed separately.

`prepare_reconcile_bench` seeds the client and runs it through the real pipeline once (snapshot, landing, apply),
so silver is what the product writes; `measure_reconcile` is one repetition.
"""
from __future__ import annotations

import time
from typing import Any

from dw_assets import db
from dw_assets.identifiers import quote_ident, quote_qualified
from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .conformance import client_databases
from .reconciliation import plan_tables, reconcile, silver_digests, source_digests

BENCH_CLIENT = "rcbench"


def prepare_reconcile_bench(settings: Settings, rows: int, client: str = BENCH_CLIENT) -> dict[str, Any]:
    """Seed `client` with about `rows` rows and bring its silver up to date through capture, landing and apply."""
    from dw_assets.cdc.capture import CaptureOptions, CaptureService
    from dw_assets.cdc.sources import fixed_source
    from dw_assets.lakehouse.apply import apply_client
    from dw_assets.landing import land_client
    from dw_assets.workload import seed_clients

    t0 = time.perf_counter()
    seed_clients(settings, [client], rows_per_client=rows, seed=11, replace=True)
    t1 = time.perf_counter()
    CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, {client}))).run()
    land_client(settings, client)
    applied = apply_client(settings, client)
    if not applied.ok:
        raise RuntimeError(f"apply of the bench client failed: {applied.failed}")
    return {"client": client, "seed_s": round(t1 - t0, 2), "pipeline_s": round(time.perf_counter() - t1, 2)}


def _bare(settings: Settings, database: str, model: StandardModel, checksum: bool) -> tuple[float, int]:
    """Seconds for COUNT(*) (and, with `checksum`, BIT_XOR of CRC32 over each row's columns) of every table in
    one consistent snapshot; returns (seconds, rows)."""
    total = 0
    with db.connection(settings, role="cdc") as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        for t in model.tables:
            row_text = "CONCAT_WS(0x1f, " + ", ".join(quote_ident(c) for c in t.column_names) + ")"
            what = f"COUNT(*), BIT_XOR(CRC32({row_text}))" if checksum else "COUNT(*)"
            cur.execute(f"SELECT {what} FROM {quote_qualified(database, t.name)}")
            total += int(cur.fetchone()[0])
        cur.execute("COMMIT")
        return time.perf_counter() - t0, total


def measure_reconcile(settings: Settings, client: str = BENCH_CLIENT) -> dict[str, Any]:
    """One repetition: the check, its two sides alone, and the bare references."""
    model = settings.standard_model()
    dbs = client_databases(settings, client)
    t0 = time.perf_counter()
    res = reconcile(settings, dbs, model, rounds=1, settle_seconds=0)
    check_s = time.perf_counter() - t0
    plans, _ = plan_tables(settings, dbs, model)
    t1 = time.perf_counter()
    source_digests(settings, dbs.production_db, plans)
    t2 = time.perf_counter()
    silver_digests(settings, client, plans)
    t3 = time.perf_counter()
    count_s, rows = _bare(settings, dbs.production_db, model, checksum=False)
    checksum_s, _ = _bare(settings, dbs.production_db, model, checksum=True)
    return {"check_s": check_s, "passed": res.passed, "rows": rows, "tables": len(res.tables),
            "source_side_s": t2 - t1, "silver_side_s": t3 - t2, "bare_count_s": count_s,
            "bare_checksum_s": checksum_s}
