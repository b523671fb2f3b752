"""`dw stack up|down|status`."""
from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from ..settings import Settings
from .process import ServiceError
from .stack import Stack, StackConfig

console = Console()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stack", help="start, stop and inspect the local stack (MariaDB, Kafka, S3)")
    ssub = p.add_subparsers(dest="stack_command", metavar="ACTION")
    ssub.required = True
    up = ssub.add_parser("up", help="start the stack (idempotent)")
    up.add_argument("--mariadb-port", type=int, help="default $DW_MARIADB_PORT or 13306")
    up.add_argument("--kafka-port", type=int, help="default $DW_KAFKA_PORT or 19092")
    up.add_argument("--broker-storage", choices=["memory", "s3"], help="default $DW_BROKER_STORAGE or memory")
    up.add_argument("--spark", action="store_true", default=None,
                    help="also start Sail, a local Spark Connect server (default when DW_ENGINE=spark)")
    up.add_argument("--spark-port", type=int, help="default $DW_SPARK_PORT or a free port")
    up.add_argument("--postgres", action="store_true", default=None,
                    help="keep the Dagster instance in PostgreSQL (default when DW_DAGSTER_STORAGE=postgres): the "
                         "stack's own server unless DW_DAGSTER_POSTGRES_URL names one")
    up.add_argument("--postgres-port", type=int, help="port of the stack's own PostgreSQL (default: a free port)")
    up.set_defaults(func=cmd_up)
    down = ssub.add_parser("down", help="stop what `up` started")
    down.set_defaults(func=cmd_down)
    st = ssub.add_parser("status", help="state and connection settings of each service")
    st.add_argument("--json", action="store_true", help="machine-readable, including passwords")
    st.set_defaults(func=cmd_status)


def _stack(args: argparse.Namespace, settings: Settings) -> Stack:
    cfg = StackConfig.from_env(
        settings.home,
        mariadb_port=getattr(args, "mariadb_port", None),
        kafka_port=getattr(args, "kafka_port", None),
        broker_storage=getattr(args, "broker_storage", None),
        spark=getattr(args, "spark", None),
        spark_port=getattr(args, "spark_port", None),
        dagster_storage="postgres" if getattr(args, "postgres", None) else None,
        postgres_port=getattr(args, "postgres_port", None),
    )
    return Stack(cfg, progress=lambda msg: console.print(f"[cyan]•[/] {msg}"))


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from ..cli import CommandError

    try:
        status = _stack(args, settings).up()
    except ServiceError as e:
        raise CommandError(str(e)) from None
    _print_status(status)
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = _stack(args, settings).down()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    status = _stack(args, settings).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_status(status)
    return 0 if status["mariadb"]["state"] == status["kafka"]["state"] == "running" else 1


def _print_status(status: dict) -> None:
    t = Table(title=f"dw stack ({status['home']})")
    for col in ("service", "state", "connect", "log"):
        t.add_column(col)
    m, k = status["mariadb"], status["kafka"]
    t.add_row("mariadb", m["state"], f"mysql://{m['admin_user']}:***@{m['host']}:{m['port']} (cdc: {m['cdc_user']})", m.get("log") or "")
    t.add_row("kafka", k["state"], f"{k['bootstrap']} ({k['storage']} storage)", k.get("log") or "")
    if "spark" in status:
        t.add_row("spark (sail)", status["spark"]["state"], status["spark"].get("remote") or "", status["spark"].get("log") or "")
    if "postgres" in status:
        pg = status["postgres"]
        t.add_row("postgres", pg["state"], f"127.0.0.1:{pg.get('port')} (Dagster storage)", pg.get("log") or "")
    if "s3" in status:
        t.add_row("s3", status["s3"]["state"], status["s3"]["endpoint_url"] or "", status["s3"].get("log") or "")
    t.add_row("landing", "", status["landing"].get("url", ""), "")
    t.add_row("lake", "", status["lake"].get("url", ""), "")
    t.add_row("dagster", "", status["dagster"].get("home", ""), "")
    console.print(t)
