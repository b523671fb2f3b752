"""The pipeline's long-running roles as separate processes for the continuous end-to-end benchmark.

`python -m dw_assets.bench.roles capture|landing|apply --home H --clients a,b,... --out F` runs one role until
SIGTERM, then writes its statistics to F (JSON; the apply role also logs every pass to F + ".jsonl"). A process
per role puts each on its own interpreter (no shared GIL) and gives each its own peak RSS through wait4.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from dw_assets.settings import load_settings

log = logging.getLogger("dw_assets.bench.roles")


def _stop_on_sigterm(stop: threading.Event, also: Any = None) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()
        if also is not None:
            also()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_capture(settings, clients: list[str], out: Path, once: bool = False) -> dict[str, Any]:
    from dw_assets.cdc.capture import CaptureOptions, CaptureService
    from dw_assets.cdc.sources import fixed_source

    stop = threading.Event()
    service = CaptureService(settings, CaptureOptions(once=once, databases=fixed_source(settings, set(clients)),
                                                      stats_interval_s=30))
    _stop_on_sigterm(stop, service.stop)
    stats = service.run()
    return {"events": stats.events, "snapshot_rows": stats.snapshot_rows, "transactions": stats.transactions,
            "binlog_bytes": stats.binlog_bytes, "position": stats.position}


def run_landing(settings, clients: list[str], out: Path, idle_s: float, max_age_s: float) -> dict[str, Any]:
    from dw_assets.landing import FlushPolicy, land_client

    stop = threading.Event()
    _stop_on_sigterm(stop)
    policy = FlushPolicy(idle_seconds=idle_s, max_age_seconds=max_age_s)
    reports: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def one(client: str) -> None:
        try:
            reports[client] = land_client(settings, client, bounded=False, stop=stop, policy=policy)
        except BaseException as e:  # noqa: BLE001 - recorded; the other clients go on
            log.exception("landing %s failed", client)
            errors[client] = repr(e)

    threads = [threading.Thread(target=one, args=(c,), name=f"land-{c}", daemon=True) for c in clients]
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(0.5)
    for t in threads:
        t.join(60)
    return {"messages": sum(r.messages for r in reports.values()),
            "files": sum(len(r.files) for r in reports.values()),
            "records": sum(r.records for r in reports.values()), "errors": errors,
            "policy": {"idle_seconds": idle_s, "max_age_seconds": max_age_s}}


def run_apply(settings, clients: list[str], out: Path, parallel: int) -> dict[str, Any]:
    from dw_assets.lakehouse.apply import apply_client
    from dw_assets.model import load_model

    stop = threading.Event()
    _stop_on_sigterm(stop)
    model = load_model()
    passes_log = open(str(out) + ".jsonl", "a", buffering=1)
    lock = threading.Lock()
    totals = {"passes": 0, "events": 0, "errors": 0}

    def loop(group: list[str]) -> None:
        while not stop.is_set():
            busy = False
            for client in group:
                if stop.is_set():
                    return
                t0 = time.time()
                try:
                    r = apply_client(settings, client, model)
                    events, failed, phases = r.events, r.failed, {k: round(v, 3) for k, v in r.timings.items()}
                except Exception as e:  # noqa: BLE001 - a failed pass is logged and retried next round
                    log.exception("apply %s failed", client)
                    events, failed, phases = 0, {"*": repr(e)}, {}
                t1 = time.time()
                busy = busy or events > 0
                with lock:
                    totals["passes"] += 1
                    totals["events"] += events
                    totals["errors"] += bool(failed)
                    passes_log.write(json.dumps({"client": client, "start": t0, "end": t1, "events": events,
                                                 "failed": failed, "phases": phases}) + "\n")
            if not busy:
                stop.wait(0.2)  # nothing landed anywhere in this group: do not spin on empty passes

    groups = [clients[i::parallel] for i in range(parallel)]
    threads = [threading.Thread(target=loop, args=(g,), name=f"apply-{i}", daemon=True)
               for i, g in enumerate(groups) if g]
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(0.5)
    for t in threads:
        t.join(120)
    passes_log.close()
    return dict(totals, parallel=parallel)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dw_assets.bench.roles")
    ap.add_argument("role", choices=["capture", "landing", "apply"])
    ap.add_argument("--home", required=True)
    ap.add_argument("--clients", required=True,
                    help="comma-separated client names (= production databases), or @FILE with one per line")
    ap.add_argument("--out", required=True)
    ap.add_argument("--idle", type=float, default=0.5)
    ap.add_argument("--max-age", type=float, default=1.0)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--once", action="store_true", help="capture: stop at the binlog end current at start")
    ap.add_argument("--state-home", help="capture: keep checkpoints under this directory instead of --home")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(env={}, home=args.home)
    if args.state_home:
        settings = replace(settings, home=Path(args.state_home))
    raw = Path(args.clients[1:]).read_text().split() if args.clients.startswith("@") else args.clients.split(",")
    clients = [c for c in raw if c]
    out = Path(args.out)
    started = time.time()
    if args.role == "capture":
        stats = run_capture(settings, clients, out, once=args.once)
    elif args.role == "landing":
        stats = run_landing(settings, clients, out, args.idle, args.max_age)
    else:
        stats = run_apply(settings, clients, out, args.parallel)
    stats["seconds"] = round(time.time() - started, 2)
    out.write_text(json.dumps(stats, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
