"""Onboarding a list of clients from a CSV file with bounded parallelism; one client's failure never stops the
others, and every client ends with a row in the summary.

File: a header row naming `client` and optionally `production_db`, `staging_db`, `topic_partitions`,
`flush_records`, `flush_bytes`, `idle_seconds`, `max_age_seconds`; or no header and one client name per line.
"""
from __future__ import annotations

import csv
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dw_assets.settings import Settings

from .client_options import ClientOptions
from .onboard import OnboardingResult, onboard_client
from .progress import OnboardingObserver

DEFAULT_PARALLEL = 4
_INT_OPTIONS = ("topic_partitions", "flush_records", "flush_bytes")
_FLOAT_OPTIONS = ("idle_seconds", "max_age_seconds")


class ClientsFileError(ValueError):
    """The clients file cannot be read; the message names the line."""


@dataclass(frozen=True)
class ClientSpec:
    client: str
    production_db: str | None = None
    staging_db: str | None = None
    options: ClientOptions = field(default_factory=ClientOptions)


@dataclass
class BatchEntry:
    spec: ClientSpec
    result: OnboardingResult | None = None
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchResult:
    entries: list[BatchEntry]
    seconds: float
    parallel: int

    @property
    def succeeded(self) -> list[BatchEntry]:
        return [e for e in self.entries if e.ok]

    @property
    def failed(self) -> list[BatchEntry]:
        return [e for e in self.entries if not e.ok]

    @property
    def clients_per_minute(self) -> float:
        return len(self.succeeded) / self.seconds * 60 if self.seconds > 0 else 0.0


def _options(row: dict[str, str], where: str) -> ClientOptions:
    values: dict[str, int | float] = {}
    try:
        for k in _INT_OPTIONS:
            if (row.get(k) or "").strip():
                values[k] = int(row[k])
        for k in _FLOAT_OPTIONS:
            if (row.get(k) or "").strip():
                values[k] = float(row[k])
        return ClientOptions(**values)
    except ValueError as e:
        raise ClientsFileError(f"{where}: {e}") from None


def read_clients_file(path: str | Path) -> list[ClientSpec]:
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as e:
        raise ClientsFileError(f"cannot read {p}: {e.strerror}") from None
    body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not body:
        raise ClientsFileError(f"{p}: no clients")
    header = [h.strip() for h in next(csv.reader([body[0]]))]
    if "client" not in header:
        return [ClientSpec(ln.split(",")[0].strip()) for ln in body]
    specs, seen = [], set()
    for n, row in enumerate(csv.DictReader(body), start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        name = row.get("client", "")
        if not name:
            raise ClientsFileError(f"{p} line {n}: empty client name")
        if name in seen:
            raise ClientsFileError(f"{p} line {n}: client {name!r} listed twice")
        seen.add(name)
        specs.append(ClientSpec(name, row.get("production_db") or None, row.get("staging_db") or None,
                                _options(row, f"{p} line {n}")))
    return specs


def onboard_many(settings: Settings, specs: list[ClientSpec], parallel: int = DEFAULT_PARALLEL,
                 run_by: str = "dw", observer: OnboardingObserver | None = None,
                 on_done: Callable[[BatchEntry], None] | None = None) -> BatchResult:
    """Onboard every client, at most `parallel` at a time; entries keep the file's order."""
    if parallel < 1:
        raise ValueError("parallel must be >= 1")
    started = time.perf_counter()
    entries = [BatchEntry(s) for s in specs]

    def one(entry: BatchEntry) -> None:
        t0 = time.perf_counter()
        try:
            entry.result = onboard_client(settings, entry.spec.client, entry.spec.production_db,
                                          entry.spec.staging_db, options=entry.spec.options, run_by=run_by,
                                          observer=observer)
        except Exception as e:  # noqa: BLE001 - recorded per client; the others go on
            entry.error = e
        entry.seconds = time.perf_counter() - t0
        if on_done:
            on_done(entry)

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="onboard") as pool:
        list(pool.map(one, entries))
    return BatchResult(entries, time.perf_counter() - started, parallel)
