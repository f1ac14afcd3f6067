"""create_app: the one place that wires settings, resources, routes and the plugin chain."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from . import admin, diag, errors, health, hosted, keys, protocol, relay, sessions, telephony
from .callroutes import CallRoutes
from .changes import StoreChanges, store_ctx
from .chain import Handler, build_plugins, wrap
from .forwarded import TrustedProxies
from .lifecycle import Lifecycle
from .middlewares import core, stamp_response
from .registry import FileSources, Registry, registry_ctx
from .servers import ServerPool, servers_ctx
from .sessions import SessionBook, sessions_ctx
from .settings import Settings, load_settings
from .storage import Store
from .traffic import Traffic, recorded
from .heartbeats import Heartbeats
from .upstream import Upstream, choose_route
from .webhooks import Deliveries

log = logging.getLogger("chatkit_gateway")

JSON_BODY_LIMIT = 1024 * 1024  # bodies the gateway reads itself (sessions, admin); the relay streams


def model_upstream(settings: Settings) -> Upstream:
    config = settings.upstream
    return Upstream(
        config.provider, config.base, api_key=config.api_key,
        route=choose_route(config.base, config.proxy, settings.proxy_env),
        timeouts=config.timeouts, ca_bundle=config.ca_bundle,
        max_connections=config.max_connections, keepalive_seconds=config.keepalive_seconds,
    )


async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    upstream = app[keys.upstream]
    await upstream.open()
    key = upstream.api_key
    log.info("ChatKit gateway up: upstream %s via %s, key %s", upstream.base, upstream.route.proxy_label,
             f"set ({key.fingerprint})" if key else f"MISSING (set {app[keys.settings].upstream.api_key_env})",
             extra={"upstream": upstream.name, "proxy": upstream.route.proxy_label,
                    "key_fingerprint": key.fingerprint if key else None})
    yield
    await upstream.close()


async def heartbeats_ctx(app: web.Application) -> AsyncIterator[None]:
    app[keys.heartbeats] = Heartbeats(app[keys.settings].server.heartbeat_seconds)
    yield
    await app[keys.heartbeats].close()


def allowed_methods(routes: tuple[tuple[str, str, Handler, str], ...]) -> dict[str, tuple[str, ...]]:
    """The methods each path answers, for paths that do not take every method."""
    methods: dict[str, tuple[str, ...]] = {}
    for method, path, _, _ in routes:
        methods[path] = (*methods.get(path, ()), method)
    return {path: allowed for path, allowed in methods.items() if "*" not in allowed}


def method_not_allowed(allowed: tuple[str, ...]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise errors.MethodNotAllowed(headers={"Allow": ", ".join(allowed)}, allowed=list(allowed))

    return handler


async def mark_shutting_down(app: web.Application) -> None:
    app[keys.lifecycle].shutting_down = True


def workflow_registry(app: web.Application, environ: Mapping[str, str]) -> Registry:
    """The registry, re-reading config.yaml (and the environment it was loaded with) on reload."""
    settings = app[keys.settings]
    return Registry(
        app[keys.store], FileSources.of(settings),
        reread=lambda: load_settings(settings.source, environ),
        upstream_key_set=bool(settings.upstream.api_key),
        on_reload=lambda result: app[keys.config_reloads].labels(result=result).inc(),
    )


def create_app(settings: Settings, plugin_classes: Mapping[str, type] | None = None,
               environ: Mapping[str, str] | None = None) -> web.Application:
    trusted = TrustedProxies(settings.server.trusted_proxies)
    app = web.Application(middlewares=[core(trusted)], client_max_size=JSON_BODY_LIMIT)
    app[keys.settings] = settings
    app[keys.lifecycle] = Lifecycle()
    app[keys.metrics_registry] = CollectorRegistry(auto_describe=True)
    app[keys.upstream] = model_upstream(settings)
    app[keys.store] = Store(settings.storage.path)
    app[keys.config_reloads] = Counter("gateway_config_reloads", "Reloads of workflows: and start: by result.",
                                       ["result"], registry=app[keys.metrics_registry])
    app[keys.auth_failures] = Counter("gateway_auth_failures", "Failed or suspicious authentications by reason.",
                                      ["reason"], registry=app[keys.metrics_registry])
    app[keys.registry] = workflow_registry(app, os.environ if environ is None else environ)
    app[keys.sessions] = SessionBook(app[keys.store], settings.sessions)
    app[keys.traffic] = Traffic()
    app[keys.servers] = ServerPool(app[keys.registry], settings, os.environ if environ is None else environ)
    app[keys.call_routes] = CallRoutes(app[keys.store], settings.telephony.routes, settings.telephony.default_workflow)
    app[keys.webhook_deliveries] = Deliveries(app[keys.store])
    app[keys.telephony_calls] = Counter("gateway_telephony_calls", "Incoming calls by workflow slug and outcome.",
                                        ["workflow", "outcome"], registry=app[keys.metrics_registry])
    app[keys.telephony_webhooks] = Counter("gateway_telephony_webhooks", "Telephony webhook deliveries by result.",
                                           ["result"], registry=app[keys.metrics_registry])
    app[keys.readiness_checks] = {
        "config": lambda: (True, settings.source or "defaults"),
        "upstream_key": lambda: (bool(settings.upstream.api_key),
                                 "set" if settings.upstream.api_key else f"{settings.upstream.api_key_env} is not set"),
        "storage": lambda: (app[keys.store].is_open, settings.storage.path),
    }
    app[keys.store_changes] = StoreChanges(app[keys.store], settings.storage.poll_seconds)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(upstream_ctx)
    app.cleanup_ctx.append(heartbeats_ctx)
    app.cleanup_ctx.append(registry_ctx)
    app.cleanup_ctx.append(sessions_ctx)
    app.cleanup_ctx.append(servers_ctx)
    app.cleanup_ctx.append(telephony.telephony_ctx)
    admin.install(app)  # /admin, /chat and /static: outside the plugin chain, with their own login
    app.on_shutdown.append(mark_shutting_down)
    app.on_response_prepare.append(stamp_response)

    plugins = build_plugins(settings.plugins, plugin_classes or {})
    app[keys.plugins] = plugins
    for plugin in plugins:
        setup = getattr(plugin, "setup", None)
        if setup is not None:
            setup(app)

    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    gateway_routes = (
        ("POST", "/api/chatkit/session", sessions.create_session, "chatkit_session"),
        ("POST", "/api/chatkit/session/{session_id}/cancel", sessions.cancel_session, "chatkit_session_cancel"),
        ("GET", "/api/chatkit/hosted", hosted.list_workflows, "hosted_list"),
        ("POST", "/api/chatkit/hosted", hosted.create_workflow, "hosted_create"),
        ("PATCH", "/api/chatkit/hosted/{slug}", hosted.update_workflow, "hosted_update"),
        ("DELETE", "/api/chatkit/hosted/{slug}", hosted.delete_workflow, "hosted_delete"),
        ("PUT", "/api/chatkit/start", hosted.set_start, "hosted_start"),
        ("POST", "/api/admin/reload", hosted.reload_config, "admin_reload"),
        ("*", sessions.SERVER_API_URL, protocol.relay_to_server, "chatkit_server"),
        ("GET", diag.ROUTE, diag.diag_stream, "diag_stream"),
        ("GET", "/api/telephony/routes", telephony.list_routes, "telephony_routes_list"),
        ("POST", "/api/telephony/routes", telephony.create_route, "telephony_routes_create"),
        ("PATCH", "/api/telephony/routes/{number}", telephony.update_route, "telephony_routes_update"),
        ("DELETE", "/api/telephony/routes/{number}", telephony.delete_route, "telephony_routes_delete"),
    )
    traffic = app[keys.traffic]
    for method, path, handler, name in gateway_routes:  # before the relay's catch-all, which would match them
        app.router.add_route(method, path, recorded(wrap(handler, plugins), traffic), name=name)
    for path, methods in allowed_methods(gateway_routes).items():  # else a wrong method would reach the relay
        app.router.add_route("*", path, recorded(wrap(method_not_allowed(methods), plugins), traffic))
    app.router.add_route("*", "/api/chatkit/{tail:.*}", recorded(wrap(relay.relay, plugins), traffic),
                         name="chatkit_relay")
    # Outside the chain: the webhook's signature is its auth, and it logs and counts each call itself.
    app.router.add_post("/api/telephony/incoming", telephony.incoming_call, name="telephony_incoming")
    return app
