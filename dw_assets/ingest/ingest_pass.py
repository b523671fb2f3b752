"""One bounded ingest pass over some clients: land up to the current end offsets, then per client gate on
production schema conformance and apply to bronze/silver. A failing client never stops the others: its outcome
carries the reason. The Dagster ingest job logs these outcomes as events; the ingest service applies through
`apply_one` per micro-batch.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping

from dw_assets.landing.client_lock import LandingBusy
from dw_assets.landing.flush import FlushPolicy
from dw_assets.landing.sweep import DEFAULT_PARALLEL, land_clients
from dw_assets.landing.writer import LandingReport, land_client
from dw_assets.model import StandardModel, load_model
from dw_assets.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ClientOutcome:
    """What one pass did for one client. `landing` is None when landing failed or another writer held it."""

    client: str
    database: str
    landing: LandingReport | None = None
    landing_busy: str | None = None  # another writer (the ingest service or a run) is landing it
    conformance: Any = None  # checks.conformance.ConformanceResult, when the gate ran
    apply: Any = None  # lakehouse.apply.ApplyResult, when applied
    error: str | None = None  # why this client failed in this pass

    @property
    def gated(self) -> bool:
        """Stopped by the conformance gate: a breaking schema difference, silver not updated."""
        return self.conformance is not None and not self.conformance.conforming


def apply_one(settings: Settings, client: str, database: str, model: StandardModel,
              outcome: ClientOutcome | None = None, conformance: Any = None, files: Any = None,
              rows: Any = None) -> ClientOutcome:
    """Gate `client` on production schema conformance, then apply its new landing files (one micro-batch).

    The gate stops only this client: a breaking difference (e.g. a retyped column) leaves its silver as it was
    and names the differences; the caller alerts and retries later. `conformance`: a recent result to use instead
    of reading the schema again (the service re-reads it every few seconds, not per micro-batch). `files`: the
    new landing files to apply instead of listing the store; `rows`: rows of files by key, as uploaded (see
    `lakehouse.apply.apply_files`).
    """
    from dw_assets.checks.conformance import production_conformance
    from dw_assets.engine.dispatch import apply_with_engine

    out = outcome or ClientOutcome(client, database)
    out.conformance = conformance if conformance is not None else production_conformance(settings, client, model)
    if not out.conformance.conforming:
        out.error = f"{len(out.conformance.breaking)} breaking schema difference(s): silver not updated"
        return out
    out.apply = apply_with_engine(settings, client, model, database=database, files=files, rows=rows)
    if out.apply.failed:
        out.error = "; ".join(f"{t}: {e}" for t, e in out.apply.failed.items())
    return out


def ingest_pass(settings: Settings, databases: Mapping[str, str], *, parallel: int = DEFAULT_PARALLEL,
                apply: bool = True, apply_parallel: int = 2, model: StandardModel | None = None
                ) -> dict[str, ClientOutcome]:
    """Land `databases` (client -> production database) up to their current end offsets, then apply each.

    A client another writer is landing (LandingBusy) is still applied: what that writer landed is applied here or
    by it, under the apply lock. Clients are applied `apply_parallel` at a time.
    """
    model = model or load_model(settings.model_path)
    outcomes = {c: ClientOutcome(c, d) for c, d in databases.items()}
    for client, result in land_clients(settings, databases, parallel=parallel).items():
        out = outcomes[client]
        if isinstance(result, LandingReport):
            out.landing = result
        elif isinstance(result, LandingBusy):
            out.landing_busy = str(result)
        else:
            out.error = repr(result)
    if not apply:
        return outcomes
    todo = [o for o in outcomes.values() if o.error is None]

    def one(o: ClientOutcome) -> None:
        try:
            apply_one(settings, o.client, o.database, model, o)
        except Exception as e:  # noqa: BLE001 - reported per client, the pass goes on
            log.exception("apply %s failed", o.client)
            o.error = f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=max(1, apply_parallel), thread_name_prefix="ingest-apply") as pool:
        list(pool.map(one, todo))
    return outcomes


def land_or_await(settings: Settings, client: str, database: str, *, policy: FlushPolicy | None = None,
                  timeout_s: float = 120.0) -> LandingReport | None:
    """Land `client` up to its current end offsets; if another writer holds it (the ingest service serves every
    active client continuously, or a sensor run), wait until that writer has landed everything instead.

    Returns the report when this call landed, None when another writer did. Raises LandingBusy after `timeout_s`.
    """
    from dw_assets.landing.lag import measure_lag

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return land_client(settings, client, database=database, policy=policy)
        except LandingBusy:
            if time.monotonic() > deadline:
                raise
        try:
            lag = measure_lag(settings, {client: database}).get(client)
        except Exception:  # noqa: BLE001 - retried below
            lag = None
        if lag is not None and lag.lag == 0:
            return None  # the other writer has landed everything that was there
        time.sleep(0.5)
