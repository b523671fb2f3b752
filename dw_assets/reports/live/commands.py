"""`dw reports serve` and `dw reports tokens add|list|revoke`: the live report server and its access tokens.

Registered by `dw_assets.reports.commands`; nothing heavy is imported until a command runs.
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone

from .urls import DEFAULT_HOST, DEFAULT_PORT


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="live report pages over current silver, per client and for the portfolio")
    s.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    s.add_argument("--client", action="append", dest="clients", metavar="NAME",
                   help="serve only these clients (repeatable); default: the registry's active clients")
    s.set_defaults(func=cmd_serve)
    t = sub.add_parser("tokens", help="access tokens of the live report server")
    tsub = t.add_subparsers(dest="tokens_command", metavar="COMMAND")
    tsub.required = True
    a = tsub.add_parser("add", help="make a token (printed once; only its hash is kept)")
    who = a.add_mutually_exclusive_group(required=True)
    who.add_argument("--client", metavar="NAME", help="a viewer of this client only")
    who.add_argument("--operator", action="store_true", help="every client and the portfolio")
    a.add_argument("--note", default="", help="who the token is for (shown by `tokens list`)")
    a.set_defaults(func=cmd_tokens_add)
    tsub.add_parser("list", help="token ids and grants (never the tokens)").set_defaults(func=cmd_tokens_list)
    r = tsub.add_parser("revoke", help="stop a token from working (at once, also in a running server)")
    r.add_argument("token_id")
    r.set_defaults(func=cmd_tokens_revoke)


def cmd_serve(args: argparse.Namespace, settings) -> int:  # noqa: ANN001 - Settings, imported lazily
    from dw_assets.identifiers import validate_client_name

    from .app import serve

    clients = [validate_client_name(c) for c in args.clients] if args.clients else None
    print(f"live reports: http://{args.host}:{args.port}/ (tokens: `dw reports tokens add --client NAME` or "
          f"`--operator`); Ctrl-C stops", flush=True)
    serve(settings, args.host, args.port, clients)
    return 0


def _store(settings):  # noqa: ANN001, ANN202
    from .auth import TokenStore

    return TokenStore(settings.home)


def cmd_tokens_add(args: argparse.Namespace, settings) -> int:  # noqa: ANN001
    from dw_assets.cli import CommandError

    from .auth import TokenError

    try:
        token, grant = _store(settings).add(client=args.client, operator=args.operator, note=args.note)
    except TokenError as e:
        raise CommandError(str(e)) from None
    print(f"token {grant.token_id} for {grant.describe()} (shown once; keep it, only its hash is stored):")
    print(token)
    return 0


def cmd_tokens_list(args: argparse.Namespace, settings) -> int:  # noqa: ANN001
    rows = _store(settings).list()
    for token_id, grant, created, note in rows:
        when = datetime.fromtimestamp(created, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        print(f"{token_id}  {grant.describe():<45} {when}  {note}")
    if not rows:
        print("no tokens (dw reports tokens add --client NAME | --operator)")
    return 0


def cmd_tokens_revoke(args: argparse.Namespace, settings) -> int:  # noqa: ANN001
    from dw_assets.cli import CommandError

    from .auth import TokenError

    try:
        _store(settings).revoke(args.token_id)
    except TokenError as e:
        raise CommandError(str(e)) from None
    print(f"revoked {args.token_id}")
    return 0
