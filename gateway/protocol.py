"""The ChatKit protocol endpoint of server slugs: POST /api/chatkit/w/{slug} → that slug's ChatKit server.

The ChatKit web component, mounted with `api.url` pointing here, POSTs `{type, params}`; the body
goes on as it arrives and the answer (JSON, or an event stream) comes back as it arrives. The
gateway vouches for the caller with the signed headers of gateway/identity.py, after dropping any
such header the client sent, and replaces the client's credentials with the server's own key.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from . import errors, identity, keys, operations
from .principal import require_principal
from .relay import passed_headers, request_body, stream_back, upstream_error_message

log = logging.getLogger("chatkit_gateway.protocol")


async def relay_to_server(request: web.Request) -> web.StreamResponse:
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    principal = require_principal(request)
    app = request.app
    entry = request.get(keys.workflow) or app[keys.registry].resolve(request.match_info["slug"])
    request[keys.workflow] = entry
    if entry.kind != "server":
        raise errors.WorkflowNotServer(slug=entry.slug, kind=entry.kind)
    secret = app[keys.settings].identity.secret
    if secret is None:
        raise errors.UpstreamNotConfigured("identity.secret is not set, so the gateway cannot vouch for users "
                                           "to ChatKit servers.", slug=entry.slug)
    exchange = request[keys.exchange]
    body = request_body(request, app[keys.settings].server.max_body_bytes, exchange)
    operation, body = await operations.peek(body)
    request[keys.operation] = operation
    request.setdefault(keys.log_fields, {})["operation"] = operation

    headers = passed_headers(request, drop_prefix=identity.PREFIX)
    headers += identity.signed_headers(
        secret.reveal(), user=app[keys.sessions].user_of(principal.id), name=principal.name,
        groups=principal.groups, workflow=entry.slug).items()
    async with app[keys.servers].lease(entry) as upstream:
        exchange.upstream = upstream.name
        if upstream.api_key:
            headers.append(("Authorization", "Bearer " + upstream.api_key.reveal()))
        elif entry.api_key_env:
            raise errors.UpstreamNotConfigured(f"{entry.api_key_env}, the variable holding this ChatKit server's "
                                               "key, is not set.", slug=entry.slug)
        waited = time.perf_counter()
        async with upstream.request("POST", "", headers=headers, data=body) as upstream_response:
            exchange.upstream_wait += time.perf_counter() - waited
            exchange.upstream_status = upstream_response.status
            if upstream_response.status in (401, 403):  # never passed on as our own 401/403
                message = await upstream_error_message(upstream_response)
                log.error("ChatKit server %s refused the gateway (%s): %s", upstream.name, upstream_response.status,
                          message, extra={"upstream_status": upstream_response.status, "upstream": upstream.name,
                                          "slug": entry.slug})
                raise errors.UpstreamAuthFailed(upstream_status=upstream_response.status, upstream_message=message,
                                                slug=entry.slug)
            return await stream_back(request, upstream_response, upstream.name)
