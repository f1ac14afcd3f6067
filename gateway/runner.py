"""One gateway process: the app served on its port (under uvloop when installed), draining on SIGTERM."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from . import collector
from .app import create_app
from .logs import configure_logging
from .settings import Settings, load_settings


def run_server(settings: Settings, plugin_classes: Mapping[str, type], environ: Mapping[str, str], *,
               reuse_port: bool = False) -> int:
    """Serve until SIGTERM or SIGINT; `reuse_port` when this is one of several workers sharing the port."""
    configure_logging(settings.log.level, settings.log.format)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    app = create_app(settings, plugin_classes, environ)
    app.cleanup_ctx.append(collector.policy())  # last, after every resource has opened
    runner_kwargs = dict(host=settings.server.host, port=settings.server.port, access_log=None,
                         print=None, handler_cancellation=True, reuse_port=reuse_port,
                         shutdown_timeout=settings.server.drain_seconds)
    if uvloop is not None:
        web.run_app(app, loop=uvloop.new_event_loop(), **runner_kwargs)
    else:
        web.run_app(app, **runner_kwargs)
    return 0


def run_worker(config_path: str | None, environ: Mapping[str, str], plugin_classes: Mapping[str, type]) -> int:
    """One of several workers: settings read again from the same file and environment, the port shared."""
    return run_server(load_settings(config_path, environ), plugin_classes, environ, reuse_port=True)
