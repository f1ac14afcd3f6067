"""Command line: serve, check-config, keys (create | list | revoke), doctor, migrate-plan."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from aiohttp import web

from .app import create_app
from .doctor import run as run_doctor
from .logs import configure_logging
from .migration import as_json as migration_json, as_text as migration_text
from .registry import preview
from .schema import ConfigError, dump
from .settings import Settings, load_settings
from .telephony import config_warnings as telephony_warnings

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
    configure_logging(settings.log.level, settings.log.format)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    app = create_app(settings, builtin_plugins(), environ)
    runner_kwargs = dict(host=settings.server.host, port=settings.server.port, access_log=None,
                         print=None, handler_cancellation=True,
                         shutdown_timeout=settings.server.drain_seconds)
    if uvloop is not None:
        web.run_app(app, loop=uvloop.new_event_loop(), **runner_kwargs)
    else:
        web.run_app(app, **runner_kwargs)
    return 0


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
    for name, help_text in (("serve", "run the gateway"),
                            ("check-config", "print the effective config (secrets masked) or the error")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--config", help="path to config.yaml (default: $GATEWAY_CONFIG, ./config.yaml)")
    check = commands.add_parser("doctor", help="check the way in (buffering) and the way out (proxy, key, clock)")
    check.add_argument("--config", help="path to config.yaml (default: $GATEWAY_CONFIG, ./config.yaml)")
    check.add_argument("--url", help="the gateway's public URL, as clients reach it (default: server.host:port)")
    check.add_argument("--api-key", help="a gateway key, when an auth plugin guards /api/chatkit")
    migration = commands.add_parser("migrate-plan", help="hosted workflows, their ChatKit server replacements, "
                                                         "and what the front end gets after the flip")
    migration.add_argument("--config", help="path to config.yaml (default: $GATEWAY_CONFIG, ./config.yaml)")
    migration.add_argument("--json", action="store_true", help="print the plan as JSON")
    return root


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        settings = load(args, environ)
        if args.command == "serve":
            return serve(settings, environ)
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
