"""The core middleware, on every route: the request context, then the error shape; and the response stamp."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

from aiohttp import web

from . import errors, keys
from .exchange import Exchange
from .forwarded import TrustedProxies

log = logging.getLogger("chatkit_gateway")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")

# aiohttp's own HTTP errors, named in our shape.
HTTP_CODES = {404: errors.NotFound, 405: errors.MethodNotAllowed, 413: errors.BodyTooLarge}


def new_request_id() -> str:
    """32 random hex digits, like uuid4().hex without building a UUID."""
    return os.urandom(16).hex()


def core(trusted: TrustedProxies) -> web.middleware:
    """Request id, real client address and a fresh Exchange before anything else runs; then every
    gateway-made error leaves as {"error", "message", "request_id", …context}. One middleware, not two:
    each is a coroutine (and a partial) more per request."""

    @web.middleware
    async def middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-ID")
        request[keys.request_id] = incoming if incoming and REQUEST_ID.fullmatch(incoming) else new_request_id()
        peer = request.remote
        request[keys.peer_trusted] = trusted.trusts(peer)
        request[keys.client_ip] = trusted.client_ip(peer, request.headers.get("X-Forwarded-For"))
        request[keys.exchange] = Exchange.begin()
        # Made here, so that plugins adding to them and the relay and stamp_response reading them find them
        # (a missing key costs aiohttp's Request a KeyError raised and caught).
        request[keys.chunk_observers] = []
        request[keys.response_headers] = []
        try:
            return await handler(request)
        except (errors.GatewayError, web.HTTPException) as exc:
            return answer_for(request, exc)
        except ConnectionResetError:
            # The client went away mid-answer; the plugins have seen it. A response that cannot be
            # written is returned rather than raised, so an ordinary disconnect logs no traceback.
            return web.Response(status=499)
        except (asyncio.CancelledError, ConnectionError):
            raise  # the client went away; nothing to answer
        except Exception:
            log.exception("unexpected error handling %s %s", request.method, request.path,
                          extra={"request_id": request[keys.request_id]})
            request[keys.exchange].error = errors.InternalError.code
            return error_response(errors.InternalError(), request[keys.request_id])

    return middleware


def error_response(error: errors.GatewayError, request_id: str) -> web.Response:
    response = web.json_response(error.body(request_id), status=error.status)
    response.headers.update(error.headers)
    return response


def answer_for(request: web.Request, exc: errors.GatewayError | web.HTTPException) -> web.Response:
    """The JSON answer for a gateway-made or aiohttp HTTP error (400 and up); anything else is raised again."""
    if isinstance(exc, errors.GatewayError):
        request[keys.exchange].error = exc.code
        return error_response(exc, request[keys.request_id])
    if exc.status < 400:
        raise exc  # a redirect, not an error
    error_class = HTTP_CODES.get(exc.status)
    error = error_class() if error_class else errors.BadRequest(exc.reason)
    request[keys.exchange].error = error.code
    response = error_response(error, request[keys.request_id])
    response.set_status(exc.status)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


async def stamp_response(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the request id, plugins' headers and Server-Timing on every response, streams included."""
    request_id = request.get(keys.request_id)
    if request_id is not None:
        response.headers["X-Request-ID"] = request_id
    extra = request.get(keys.response_headers)
    if extra:
        for name, value in extra:
            response.headers[name] = value
    exchange = request.get(keys.exchange)
    if exchange is not None:
        total = (time.perf_counter() - exchange.started) * 1000.0
        upstream = exchange.upstream_wait * 1000.0
        response.headers["Server-Timing"] = f"gateway;dur={total - upstream:.2f}, upstream;dur={upstream:.2f}"
