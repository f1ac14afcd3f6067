"""Command line: serve, check-config, keys (create | list | revoke), doctor, migrate-plan."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence

from .apikeys import KeyBook
from .app import create_app
from .doctor import run as run_doctor
from .logs import configure_logging
from .migration import as_json as migration_json, as_text as migration_text
from .registry import preview
from .schema import ConfigError, dump
from .runner import run_server, run_worker
from .settings import Settings, load_settings
from .storage import Conflict, Store
from .telephony import config_warnings as telephony_warnings
from .workers import serve_workers

log = logging.getLogger("chatkit_gateway")

DEFAULT_CONFIG = "config.yaml"


def builtin_plugins() -> Mapping[str, type]:
    from plugins import REGISTRY  # the composition root is the only place that knows plugins/

    return REGISTRY


def config_path(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    path = args.config or environ.get("GATEWAY_CONFIG")
    if path:
        return path
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


def load(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    return load_settings(config_path(args, environ), environ)


def serve(settings: Settings, environ: Mapping[str, str]) -> int:
    if settings.server.workers == 1:
        return run_server(settings, builtin_plugins(), environ)
    configure_logging(settings.log.level, settings.log.format)
    return serve_workers(settings, run_worker, settings.source, dict(environ), builtin_plugins())


def check_config(settings: Settings, environ: Mapping[str, str]) -> int:
    create_app(settings, builtin_plugins(), environ)  # plugin options are validated when the chain is built
    json.dump(dump(settings), sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    catalog = asyncio.run(preview(settings))
    for entry, winner in catalog.shadowed:
        print(f"warning: workflow {entry.slug!r} from {entry.source} is shadowed by the {winner.source} entry "
              "of the same slug", file=sys.stderr)
    if catalog.start is not None and catalog.find(catalog.start) is None:
        default = catalog.default()
        print(f"warning: the Start workflow {catalog.start!r} does not exist; the default is "
              f"{default.slug if default else 'nothing'!r}", file=sys.stderr)
    for warning in telephony_warnings(settings, catalog):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp)) if timestamp else "-"


async def manage_keys(settings: Settings, args: argparse.Namespace) -> int:
    """keys create | list | revoke, straight on the store; a running gateway notices within seconds."""
    store = Store(settings.storage.path)
    await store.open()
    try:
        book = KeyBook(store)
        if args.keys_command == "create":
            try:
                key = await book.create(args.name, admin=args.admin, actor="cli")
            except Conflict:
                print(f"error: a key named {args.name!r} already exists", file=sys.stderr)
                return 1
            print(key)
            print(f"created key {args.name!r}{' (admin)' if args.admin else ''}; this is the only time it is shown",
                  file=sys.stderr)
            return 0
        if args.keys_command == "list":
            rows = [("NAME", "PREFIX", "ADMIN", "CREATED", "REVOKED")]
            rows += [(r.name, r.prefix, "yes" if r.is_admin else "no", when(r.created_at), when(r.revoked_at))
                     for r in await store.list_keys()]
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
            return 0
        revoked = await book.revoke(args.key, actor="cli")
        if not revoked:
            print(f"error: no live key is named or prefixed {args.key!r}", file=sys.stderr)
            return 1
        print(f"revoked {revoked} key{'s' if revoked > 1 else ''}")
        return 0
    finally:
        await store.close()


def doctor(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging("CRITICAL", "text", stream=sys.stderr)  # the checks' own lines say what went wrong
    return asyncio.run(run_doctor(settings, sys.stdout, url=args.url, api_key=args.api_key))


def migrate_plan(settings: Settings, args: argparse.Namespace) -> int:
    """The hosted entries, their ChatKit server replacements, and what the front end gets after each flip."""
    catalog = asyncio.run(preview(settings))
    print(json.dumps(migration_json(catalog), indent=2) if args.json else migration_text(catalog))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m gateway", description="ChatKit gateway")
    commands = root.add_subparsers(dest="command", required=True)
    config_help = "path to config.yaml (default: $GATEWAY_CONFIG, ./config.yaml)"
    for name, help_text in (("serve", "run the gateway"),
                            ("check-config", "print the effective config (secrets masked) or the error")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--config", help=config_help)
    keys_commands = commands.add_parser("keys", help="manage API keys (gk_…) in the configured storage") \
        .add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--admin", action="store_true", help="the key may use admin routes")
    listing = keys_commands.add_parser("list", help="every key's name, prefix, role and dates (never a secret)")
    revoke = keys_commands.add_parser("revoke", help="revoke the keys with this name or prefix")
    revoke.add_argument("key", metavar="NAME|PREFIX")
    for command in (create, listing, revoke):
        command.add_argument("--config", help=config_help)
    check = commands.add_parser("doctor", help="check the way in (buffering) and the way out (proxy, key, clock)")
    check.add_argument("--config", help=config_help)
    check.add_argument("--url", help="the gateway's public URL, as clients reach it (default: server.host:port)")
    check.add_argument("--api-key", help="a gateway key, when an auth plugin guards /api/chatkit")
    migration = commands.add_parser("migrate-plan", help="hosted workflows, their ChatKit server replacements, "
                                                         "and what the front end gets after the flip")
    migration.add_argument("--config", help=config_help)
    migration.add_argument("--json", action="store_true", help="print the plan as JSON")
    return root


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        settings = load(args, environ)
        if args.command == "serve":
            return serve(settings, environ)
        if args.command == "keys":
            return asyncio.run(manage_keys(settings, args))
        if args.command == "doctor":
            return doctor(settings, args)
        if args.command == "migrate-plan":
            return migrate_plan(settings, args)
        return check_config(settings, environ)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
