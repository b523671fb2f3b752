"""The fault suite's long-running processes: `python -m dw_assets_tests.fault_processes --home H ...`

`landing run ...` and `lake apply ...` are the product's own commands (`dw landing run`, `dw lake apply`) without
the CLI's other stages (`dw` imports Dagster: ~10 s of CPU per start on two shared cores); `apply-loop
CLIENT=MODEL_FILE ...` applies its clients again and again until SIGTERM, like the continuous mode's apply loop
(bench/roles.py), with a model per client. Each command imports only what it needs.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import replace

log = logging.getLogger("dw_assets_tests.fault_processes")


def apply_loop(settings, specs: list[str]) -> int:
    """Apply every client in turn until SIGTERM; a failed pass is logged and retried next round (as in the
    bench's loop)."""
    from dw_assets.lakehouse.apply import apply_client
    from dw_assets.model import load_model

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    clients = {}
    for spec in specs:
        client, _, path = spec.partition("=")
        clients[client] = load_model(path or None)
    while not stop.is_set():
        for client, model in clients.items():
            try:
                r = apply_client(settings, client, model)
                log.info("apply %s: %d files, %d events in %.2f s", client, r.files, r.events, r.seconds)
                if r.failed:
                    log.error("apply %s: tables failed: %s", client, r.failed)
            except Exception:  # noqa: BLE001 - the next round retries
                log.exception("apply %s failed", client)
        # A pass costs ~0.1 s CPU per client idle, 1-3 s with ~20 Delta commits when busy: 2 s between rounds
        # keep the loop from taking a whole core of the two the suite shares (freshness is not measured here).
        stop.wait(2.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    from dw_assets.cli import CommandError
    from dw_assets.settings import load_settings

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m dw_assets_tests.fault_processes")
    parser.add_argument("--home", required=True)
    parser.add_argument("--model", help="the model file of the client(s) a one-off command is for")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    if "landing" in argv:
        from dw_assets.landing import commands as landing_commands

        landing_commands.register(sub)
    if "lake" in argv:
        from dw_assets.lakehouse import commands as lake_commands

        lake_commands.register(sub)
    if "reconcile" in argv:
        from dw_assets.checks import commands as check_commands

        check_commands.register(sub)
    loop = sub.add_parser("apply-loop", help="apply clients continuously")
    loop.add_argument("specs", nargs="+", metavar="CLIENT=MODEL_FILE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(env={}, home=args.home)
    if args.model:
        settings = replace(settings, model_path=args.model)
    if args.command == "apply-loop":
        return apply_loop(settings, args.specs)
    try:
        return int(args.func(args, settings) or 0)
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
