"""Telephony: answer OpenAI's `realtime.call.incoming` webhooks with the workflow a route names; the routes API.

`POST /api/telephony/incoming` carries no user credential: its Standard Webhooks signature is its
auth, so it is served outside the plugin chain, and it writes its own log line and metrics per call.
A call is accepted (`POST /v1/realtime/calls/{id}/accept`, the workflow's `realtime:` block over
`telephony.realtime`) or rejected with `telephony.reject_status`. A failed accept or reject is
answered 5xx so the sender retries; a webhook id is recorded only once its call was acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from . import errors, keys
from .bodies import json_object
from .callroutes import CallRoute, Match, called_number, last_digits, parse_route, route_pattern
from .principal import require_admin
from .realtime import accept_body
from .webhooks import SignatureRejected, signing_key, verify

if TYPE_CHECKING:
    from .registry import Catalog, Registry, WorkflowEntry
    from .settings import Settings

log = logging.getLogger("chatkit_gateway.telephony")

CALL_INCOMING = "realtime.call.incoming"
PURGE_SECONDS = 3600.0  # how often webhook ids past the replay window are forgotten


@dataclass(frozen=True)
class IncomingCall:
    call_id: str
    number: str | None  # the called number, "+" and digits; None when the To header holds none

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> IncomingCall:
        data = event.get("data")
        call_id = data.get("call_id") if isinstance(data, Mapping) else None
        if not isinstance(call_id, str) or not call_id:
            raise ValueError("data.call_id is missing")
        headers = data.get("sip_headers")
        if not isinstance(headers, list):
            headers = []
        return cls(call_id, called_number(h for h in headers if isinstance(h, Mapping)))


# The webhook -----------------------------------------------------------------------------------

async def incoming_call(request: web.Request) -> web.Response:
    app = request.app
    settings = app[keys.settings].telephony
    count = app[keys.telephony_webhooks].labels
    if settings.webhook_secret is None:
        count("not_configured").inc()
        raise errors.TelephonyNotConfigured()
    body = await request.read()
    try:
        webhook_id = verify(signing_key(settings.webhook_secret.reveal()), request.headers, body,
                            now=time.time(), tolerance=settings.tolerance_seconds)
    except SignatureRejected as rejected:
        count("invalid_signature").inc()
        log.warning("telephony webhook refused: %s", rejected.reason,
                    extra={"request_id": request[keys.request_id], "client_ip": request[keys.client_ip],
                           "reason": rejected.reason})
        raise errors.WebhookSignatureInvalid() from None
    try:
        event = json.loads(body)
        if not isinstance(event, dict):
            raise ValueError("not a JSON object")
        if event.get("type") != CALL_INCOMING:
            count("ignored").inc()
            log.info("telephony webhook of type %r ignored", str(event.get("type"))[:64],
                     extra={"request_id": request[keys.request_id], "reason": "ignored_event_type"})
            return web.json_response({"result": "ignored"})
        call = IncomingCall.of(event)
    except ValueError as exc:
        count("invalid_payload").inc()
        raise errors.BadRequest(f"The webhook event is not a usable {CALL_INCOMING}: {exc}.") from None
    answered = await app[keys.webhook_deliveries].once(webhook_id, lambda: answer(request, call))
    if answered is None:
        count("replayed").inc()
        log.info("telephony webhook %s already handled; nothing done", webhook_id,
                 extra={"request_id": request[keys.request_id], "call_id": call.call_id, "reason": "replayed"})
        return web.json_response({"result": "replayed", "call_id": call.call_id})
    count("handled").inc()
    return web.json_response({"result": answered.outcome, "call_id": call.call_id, "workflow": answered.workflow})


@dataclass(frozen=True)
class Answered:
    outcome: str  # accepted | rejected
    workflow: str | None


async def answer(request: web.Request, call: IncomingCall) -> Answered:
    """Accept the call with its route's workflow, or reject it; one log line and one count either way."""
    app = request.app
    settings = app[keys.settings].telephony
    match = app[keys.call_routes].table.match(call.number)
    entry = app[keys.registry].find(match.workflow) if match is not None else None
    if entry is not None:
        options = entry.realtime.over(settings.realtime) if entry.realtime else settings.realtime
        action, body, outcome, reason = "accept", accept_body(options), "accepted", None
    else:
        action, body, outcome = "reject", {"status_code": settings.reject_status}, "rejected"
        reason = "no_route" if match is None else "workflow_not_found"
    try:
        await control(request, call.call_id, action, body)
    except errors.GatewayError as error:
        log_call(request, call, match, "failed", error.code)
        raise
    log_call(request, call, match, outcome, reason)
    return Answered(outcome, entry.slug if entry else None)


async def control(request: web.Request, call_id: str, action: str, body: dict[str, Any]) -> None:
    """One call-control request through the model upstream (its proxy, key and timeouts)."""
    upstream = request.app[keys.upstream]
    exchange = request[keys.exchange]
    exchange.upstream = upstream.name
    started = time.perf_counter()
    try:
        reply = await upstream.post_json(f"/v1/realtime/calls/{quote(call_id, safe='')}/{action}", body,
                                         headers={"X-Request-ID": request[keys.request_id]})
    finally:
        exchange.upstream_wait += time.perf_counter() - started
    exchange.upstream_status = reply.status
    if not reply.ok:
        raise errors.CallControlFailed(f"The upstream refused to {action} the call (status {reply.status}).",
                                       upstream_status=reply.status, upstream_message=reply.error_message())


def log_call(request: web.Request, call: IncomingCall, match: Match | None, outcome: str, reason: str | None) -> None:
    """The call's one line (the number by its last 4 digits only) and its count by workflow and outcome."""
    workflow = match.workflow if match is not None else "none"
    request.app[keys.telephony_calls].labels(workflow=workflow, outcome=outcome).inc()
    exchange = request[keys.exchange]
    route = match.label() if match is not None else "none"
    level = logging.INFO if outcome == "accepted" else logging.WARNING if outcome == "rejected" else logging.ERROR
    log.log(level, "call %s to %s %s: workflow %s, route %s%s", call.call_id, last_digits(call.number), outcome,
            workflow, route, f" ({reason})" if reason else "",
            extra={"request_id": request[keys.request_id], "call_id": call.call_id,
                   "number": last_digits(call.number), "route": route, "slug": workflow, "outcome": outcome,
                   "reason": reason, "upstream_status": exchange.upstream_status,
                   "duration_ms": round(exchange.elapsed_ms(), 2)})


# The routes API (admin) ---------------------------------------------------------------------------

def described(route: CallRoute, request: web.Request, shadowed_by: CallRoute | None = None) -> dict[str, Any]:
    registry = request.app[keys.registry]
    return {**route.described(), "resolves": registry.find(route.workflow) is not None,
            "shadowed_by": shadowed_by.source if shadowed_by else None}


def checked_route(registry: Registry, data: object) -> tuple[CallRoute, WorkflowEntry]:
    """A route to create, by the rules the API and the admin page share: a number or prefix and a slug
    (parse_route), and a workflow that exists now. Whether the number is free is CallRoutes.create's to say."""
    route = parse_route(data, source="managed")
    return route, registry.resolve(route.workflow)


def checked_workflow(registry: Registry, workflow: object) -> WorkflowEntry:
    """The workflow a managed route is given, by the same rules: a slug that names a workflow now."""
    if not isinstance(workflow, str):
        raise errors.InvalidField("workflow: is required, as a string.", field="workflow")
    return registry.resolve(workflow)


async def list_routes(request: web.Request) -> web.Response:
    require_admin(request)
    table = request.app[keys.call_routes].table
    rows = [described(route, request) for route in table.routes]
    rows += [described(route, request, winner) for route, winner in table.shadowed]
    return web.json_response(rows)


async def create_route(request: web.Request) -> web.Response:
    principal = require_admin(request)
    route, request[keys.workflow] = checked_route(request.app[keys.registry], await json_object(request))
    route = await request.app[keys.call_routes].create(route, actor=principal.id)
    return web.json_response(described(route, request), status=201,
                             headers={"Location": f"/api/telephony/routes/{quote(route.number, safe='*')}"})


async def update_route(request: web.Request) -> web.Response:
    """PATCH {"workflow": "<slug>"}: a route's number never changes (create the new one, delete this one)."""
    principal = require_admin(request)
    body = await json_object(request)
    number = request.match_info["number"]
    unknown = sorted(set(body) - {"workflow", "number"})
    if unknown:
        raise errors.InvalidField(f"{unknown[0]}: unknown key (known: workflow).", field=unknown[0])
    if "number" in body and route_pattern(body["number"]) != route_pattern(number):
        raise errors.InvalidField("number: a route's number cannot change; create the new one, then delete this one.",
                                  field="number")
    request[keys.workflow] = checked_workflow(request.app[keys.registry], body.get("workflow"))
    route = await request.app[keys.call_routes].update(number, body["workflow"], actor=principal.id)
    return web.json_response(described(route, request))


async def delete_route(request: web.Request) -> web.Response:
    principal = require_admin(request)
    await request.app[keys.call_routes].delete(request.match_info["number"], actor=principal.id)
    return web.Response(status=204)


# Start-up and check-config ---------------------------------------------------------------------

def config_warnings(settings: Settings, catalog: Catalog) -> list[str]:
    """What would make calls fail although the config is valid: slugs that name no workflow, no secret."""
    telephony = settings.telephony
    warnings = [f"telephony.routes[{i}].workflow: {route.workflow!r} names no workflow; "
                f"calls to {route.number} will be rejected"
                for i, route in enumerate(telephony.routes) if catalog.find(route.workflow) is None]
    if telephony.default_workflow is not None and catalog.find(telephony.default_workflow) is None:
        warnings.append(f"telephony.default_workflow (TELEPHONY_DEFAULT_WORKFLOW_SLUG): "
                        f"{telephony.default_workflow!r} names no workflow; calls no route matches will be rejected")
    if (telephony.routes or telephony.default_workflow) and telephony.webhook_secret is None:
        warnings.append("telephony: no webhook secret (OPENAI_WEBHOOK_SECRET or telephony.webhook_secret); "
                        "POST /api/telephony/incoming answers 503 telephony_not_configured")
    return warnings


async def telephony_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the managed routes once the store is open; follow other processes' changes; forget old webhook ids."""
    routes, deliveries = app[keys.call_routes], app[keys.webhook_deliveries]
    await routes.load()
    for warning in config_warnings(app[keys.settings], app[keys.registry].catalog):
        log.warning("%s", warning, extra={"config": "telephony"})
    for route in routes.table.routes:
        if route.source == "managed" and app[keys.registry].find(route.workflow) is None:
            log.warning("telephony route %s names no workflow (%r); its calls will be rejected",
                        route.number, route.workflow, extra={"slug": route.workflow})

    async def purge_regularly() -> None:
        while True:
            await asyncio.sleep(PURGE_SECONDS)
            try:
                await deliveries.purge()
            except Exception:
                log.exception("could not forget old webhook ids")

    app[keys.store_changes].follow("telephony routes", routes.load)
    app[keys.registry].on_reload(lambda settings: routes.configure(settings.telephony.routes,
                                                                   settings.telephony.default_workflow))
    purger = asyncio.create_task(purge_regularly())
    yield
    await deliveries.settle()
    purger.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await purger
