"""A third-party plugin, named in config.yaml by its dotted path: ``tests.plugins_thirdparty.StampHeader``.

It uses only the public plugin contract: a frozen Settings validated at start-up, setup(app),
add_response_header (which reaches streams too) and observe_chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from aiohttp import web

from gateway.chain import Handler, add_response_header, observe_chunks
from gateway.schema import ConfigError

# What the plugin saw of each request's answer: (chunks, bytes), in the order requests ended.
SEEN = web.AppKey("stamp_header_seen", list)

HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")


@dataclass(frozen=True)
class StampSettings:
    value: str
    header: str = "X-Stamp"

    def __post_init__(self) -> None:
        if not HEADER_NAME.fullmatch(self.header):
            raise ConfigError("header", f"not a header name: {self.header!r}")


class StampHeader:
    """Reads: the chunks streamed back (through observe_chunks), without holding them.
    Writes: the `header: value` response header; (chunks, bytes) seen per request into app[SEEN].
    Answers locally: never."""

    name: ClassVar[str] = "stamp_header"
    after: ClassVar[tuple[str, ...]] = ()
    Settings: ClassVar[type] = StampSettings

    def __init__(self, settings: StampSettings) -> None:
        self.settings = settings

    def setup(self, app: web.Application) -> None:
        app[SEEN] = []

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        add_response_header(request, self.settings.header, self.settings.value)
        sizes: list[int] = []
        observe_chunks(request, lambda chunk: sizes.append(len(chunk)))
        response = await handler(request)
        request.app[SEEN].append((len(sizes), sum(sizes)))
        return response
