"""The plugin chain: plugins declared in config.yaml wrap the gateway routes, outermost first.

A plugin is a class with a `name`, an optional frozen `Settings` dataclass (its options schema),
an optional `after` tuple naming plugins that must come before it, `async __call__(request,
handler)` and an optional `setup(app)`. Built-ins are looked up by name; anything else by
dotted path (``package.module.ClassName``), and both follow the same contract.

A plugin answers locally by raising a GatewayError. The chain turns such errors into the
gateway's JSON answer at each link, so every plugin sees a response from `await handler(request)`
(with its status, body and headers); only a client that went away, or a bug, raises through it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from aiohttp import web

from . import errors, keys
from .middlewares import answer_for
from .schema import ConfigError, build
from .settings import PluginSpec

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Plugin(Protocol):
    name: ClassVar[str]
    after: ClassVar[tuple[str, ...]]

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse: ...


def load_class(name: str, builtins: Mapping[str, type], path: str) -> type:
    if name in builtins:
        return builtins[name]
    module_name, _, class_name = name.rpartition(".")
    if not module_name:
        raise ConfigError(path, f"unknown plugin {name!r} (built-ins: {', '.join(sorted(builtins))})")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(path, f"cannot load plugin {name!r}: {exc}") from None


def build_plugins(specs: Sequence[PluginSpec], builtins: Mapping[str, type]) -> tuple[Any, ...]:
    """Instantiate each plugin with its validated options; reject misordered or repeated ones."""
    plugins: list[Any] = []
    for i, spec in enumerate(specs):
        path = f"plugins[{i}]"
        cls = load_class(spec.name, builtins, f"{path}.name")
        options_cls = getattr(cls, "Settings", None)
        if options_cls is None:
            if spec.options:
                raise ConfigError(f"{path}.{next(iter(spec.options))}", f"plugin {spec.name!r} takes no options")
            plugin = cls()
        else:
            plugin = cls(build(options_cls, dict(spec.options), path))
        seen = [p.name for p in plugins]
        if plugin.name in seen:
            raise ConfigError(path, f"plugin {plugin.name!r} is listed twice")
        for needed in getattr(plugin, "after", ()):
            if needed not in seen:
                raise ConfigError(path, f"plugin {plugin.name!r} must be listed after {needed!r}")
        plugins.append(plugin)
    return tuple(plugins)


def wrap(terminal: Handler, plugins: Sequence[Any]) -> Handler:
    """One handler that runs `plugins` around `terminal`; built once per route, not per request.

    Each plugin is handed an inner handler that turns gateway-made errors into their JSON answer.
    One frame per link: the link that calls a plugin is also the one that answers for its errors
    to the plugin around it; the outermost plugin's errors go to the core middleware.
    """
    if not plugins:
        return terminal
    handler = _answering(terminal)
    for plugin in reversed(plugins[1:]):
        handler = _link(plugin, handler)
    return _outermost(plugins[0], handler)


def _outermost(plugin: Any, inner: Handler) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await plugin(request, inner)

    return handler


def _link(plugin: Any, inner: Handler) -> Handler:
    """`plugin` around `inner`, with the errors it raises turned into their JSON answer for the plugin around it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await plugin(request, inner)
        except (errors.GatewayError, web.HTTPException) as exc:
            return answer_for(request, exc)

    return handler


def _answering(inner: Handler) -> Handler:
    """`inner`, with gateway-made errors turned into their JSON answer for the plugin around it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await inner(request)
        except (errors.GatewayError, web.HTTPException) as exc:
            return answer_for(request, exc)

    return handler


def observe_chunks(request: web.Request, observer: Callable[[bytes], None]) -> None:
    """Have `observer` see each body chunk the gateway streams back, as it goes out."""
    request.setdefault(keys.chunk_observers, []).append(observer)


def add_response_header(request: web.Request, name: str, value: str) -> None:
    """Have the response carry `name: value`, streams included; call it before awaiting the handler."""
    request.setdefault(keys.response_headers, []).append((name, value))


def route_of(request: web.Request) -> str:
    """The route template for logs and labels: the handler's, else the matched resource's, else "other"."""
    route = request.get(keys.route)
    if route is None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "other"
    return route


def ended_by(exc: BaseException) -> tuple[int, str]:
    """The status and error code to record for a request whose handler raised `exc`."""
    if isinstance(exc, (asyncio.CancelledError, ConnectionError)):
        return 499, "client_disconnected"  # nginx's code for a client that closed the connection
    if isinstance(exc, errors.GatewayError):
        return exc.status, exc.code
    return 500, errors.InternalError.code
