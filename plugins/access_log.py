"""AccessLog: one line per gateway request when it ends; for a stream, when the stream ends."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, ClassVar

from aiohttp import web

from gateway import keys
from gateway.chain import Handler, ended_by, route_of
from gateway.logs import ALLOWED_FIELDS, log_line

REASONS = {status.value: status.phrase for status in HTTPStatus} | {499: "Client Closed Request"}
EXTRA_FIELDS = frozenset(ALLOWED_FIELDS)  # what handlers may add through request[keys.log_fields]


class AccessLog:
    """Reads: request_id, route, principal, workflow, client_ip and log_fields from the request, and its Exchange.
    Writes: one line on the "backend" logger per request (JSON, or `"POST /path" 200 OK` with log.format: text).
    Answers locally: never; a request that ends with an exception (a client gone: 499) is logged, then re-raised."""

    name: ClassVar[str] = "access_log"
    after: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.log = logging.getLogger("backend")

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except BaseException as exc:
            status, error = ended_by(exc)
            self.write(request, status, error, None)
            raise
        self.write(request, response.status, None, response)
        return response

    def write(self, request: web.Request, status: int, error: str | None, response: web.StreamResponse | None) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        exchange = request[keys.exchange]
        principal = request.get(keys.principal)
        workflow = request.get(keys.workflow)
        ttfb = exchange.ttfb_ms()
        bytes_out = exchange.bytes_out
        if not bytes_out and response is not None:
            bytes_out = response.content_length or 0  # a whole answer the handler built (an error, a session)
        path = request.rel_url.raw_path  # still percent-encoded: no query, no decoded control characters
        fields: dict[str, Any] = {
            "request_id": request[keys.request_id],
            "method": request.method,
            "route": route_of(request),
            "path": path,
            "status": status,
            "duration_ms": round(exchange.elapsed_ms(), 2),
            "upstream_ms": round(exchange.upstream_wait * 1000.0, 2) if exchange.upstream is not None else None,
            "ttfb_ms": round(ttfb, 2) if ttfb is not None else None,
            "bytes_in": exchange.bytes_in or request.content_length or 0,
            "bytes_out": bytes_out,
            "events": exchange.events,
            "principal": principal.id if principal is not None else None,
            "workflow": workflow.slug if workflow is not None else None,
            "client_ip": request[keys.client_ip],
            "upstream_status": exchange.upstream_status,
            "error": error or exchange.error,
        }
        extra = request.get(keys.log_fields)
        if extra:
            fields = {**{k: v for k, v in extra.items() if k in EXTRA_FIELDS}, **fields}
        log_line(self.log, f'"{request.method} {path}" {status} {REASONS.get(status, "")}', fields)
