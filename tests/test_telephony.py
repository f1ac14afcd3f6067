"""Telephony: signed `realtime.call.incoming` webhooks are routed by called number and answered upstream.

Deliveries are signed with the independent `standardwebhooks` library, and the gateway's verdict on
each is compared with the official SDK's `openai.webhooks.unwrap`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import openai
import pytest
from standardwebhooks import Webhook

from gateway import errors, keys
from gateway.__main__ import main
from gateway.callroutes import called_number
from gateway.logs import JsonFormatter, RedactingFilter
from gateway.schema import ConfigError
from gateway.settings import load_settings
from gateway.storage import Store
from gateway.webhooks import Deliveries
from tests.hosted_harness import ADMIN, ALICE, DEFAULT_PLUGINS, eventually, start

WHSEC = "whsec_" + base64.b64encode(b"telephony-test-signing-key-32by!").decode()
RAW = "a-raw-shared-secret-of-our-own"
OTHER = "whsec_" + base64.b64encode(b"someone-else-entirely-32-bytes!!").decode()

WORKFLOWS = """
workflows:
  - {slug: sales, workflow_id: wf_sales}
  - {slug: vip, workflow_id: wf_vip}
  - {slug: fallback, workflow_id: wf_fallback}
  - slug: support
    workflow_id: wf_support
    realtime:
      instructions: Réponds en français, brièvement.
      voice: marin
      prompt: {id: pmpt_support, version: 4}
"""
ROUTES = """
telephony:
  reject_status: 486
  routes:
    - {number: "+1 555 123 4567", workflow: vip}
    - {number: "+1555*", workflow: sales}
    - {number: "+155512*", workflow: support}
    - {number: "+4420*", workflow: retired}
  realtime:
    model: gpt-realtime
    instructions: You answer the phone for ACME.
    voice: alloy
    tools: [{type: function, name: lookup_order, parameters: {type: object}}]
"""


# Signed deliveries ---------------------------------------------------------------------------------

def call_event(to: str = "+15551234567", call_id: str | None = None) -> dict:
    return {"id": "evt_" + secrets.token_hex(8), "object": "event", "created_at": int(time.time()),
            "type": "realtime.call.incoming",
            "data": {"call_id": call_id or "rtc_" + secrets.token_hex(8), "sip_media_security": "srtp",
                     "sip_headers": [{"name": "From", "value": '"Caller" <sip:+33612345678@carrier.example>;tag=9'},
                                     {"name": "To", "value": f"<sip:{to}@sip.api.openai.com>"},
                                     {"name": "Call-ID", "value": secrets.token_hex(6)}]}}


def signed(secret: str, event: dict, *, webhook_id: str | None = None,
           at: datetime | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery, signed by `standardwebhooks` as OpenAI signs them."""
    body = json.dumps(event).encode()
    webhook_id = webhook_id or "wh_" + secrets.token_hex(8)
    at = at or datetime.now(tz=UTC)
    key = secret if secret.startswith("whsec_") else secret.encode()  # a raw secret is its bytes, as in the SDK
    signature = Webhook(key).sign(webhook_id, at, body.decode())
    return body, {"webhook-id": webhook_id, "webhook-timestamp": str(int(at.timestamp())),
                  "webhook-signature": signature, "content-type": "application/json"}


def tampered_body(secret, body, headers):
    return body.replace(b"rtc_", b"rtc_x"), headers


def tampered_id(secret, body, headers):
    return body, {**headers, "webhook-id": headers["webhook-id"] + "x"}


def stale(secret, body, headers):
    return signed(secret, json.loads(body), at=datetime.now(tz=UTC) - timedelta(seconds=330))


def almost_stale(secret, body, headers):
    return signed(secret, json.loads(body), at=datetime.now(tz=UTC) - timedelta(seconds=290))


def future_dated(secret, body, headers):
    return signed(secret, json.loads(body), at=datetime.now(tz=UTC) + timedelta(seconds=330))


def wrong_secret(secret, body, headers):
    return signed(OTHER, json.loads(body))


def several_signatures(secret, body, headers):
    forged = "v1," + base64.b64encode(b"x" * 32).decode()
    return body, {**headers, "webhook-signature": f"{forged} {headers['webhook-signature']}"}


def only_forged_signatures(secret, body, headers):
    forged = "v1," + base64.b64encode(b"x" * 32).decode()
    return body, {**headers, "webhook-signature": f"{forged} v2,{headers['webhook-signature'][3:]}"}


def unsigned(secret, body, headers):
    return body, {k: v for k, v in headers.items() if k != "webhook-signature"}


def untouched(secret, body, headers):
    return body, headers


CASES = (untouched, tampered_body, tampered_id, stale, almost_stale, future_dated, wrong_secret,
         several_signatures, only_forged_signatures, unsigned)


@pytest.fixture(scope="module")
def sdk():
    with openai.OpenAI(api_key="sk-unused-by-these-tests") as client:
        yield client


def sdk_accepts(sdk, secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        event = sdk.webhooks.unwrap(body, headers, secret=secret)
    except (openai.InvalidWebhookSignatureError, ValueError):
        return False
    assert event.type == "realtime.call.incoming"
    return True


async def telephony_gateway(aiohttp_client, tmp_path, fake, config: str = WORKFLOWS + ROUTES,
                            secret: str | None = WHSEC, plugins: str = "plugins: []\n", **environ: str):
    """A gateway in front of `fake`; by default with no plugin at all, which the webhook does not need."""
    env = {"OPENAI_WEBHOOK_SECRET": secret} if secret else {}
    return await start(aiohttp_client, tmp_path, fake, config, plugins=plugins, environ={**env, **environ})


async def admin_gateway(aiohttp_client, tmp_path, fake):
    """The same gateway with the auth plugin, for the admin routes API (keys: ADMIN, ALICE)."""
    return await telephony_gateway(aiohttp_client, tmp_path, fake, plugins=DEFAULT_PLUGINS)


async def deliver(gateway, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    response = await gateway.client.post("/api/telephony/incoming", data=body, headers=headers)
    return response.status, await response.json()


async def call(gateway, to: str, secret: str = WHSEC) -> tuple[int, dict]:
    return await deliver(gateway, *signed(secret, call_event(to)))


@contextlib.contextmanager
def json_logs() -> Iterator[io.StringIO]:
    """The gateway's log lines as `serve` writes them (JSON, redacted), into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("chatkit_gateway")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def sample(gateway, name: str, **labels: str) -> float:
    return gateway.app[keys.metrics_registry].get_sample_value(name, labels) or 0.0


# Signatures ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("secret", [WHSEC, RAW], ids=["whsec", "raw"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
async def test_the_gateway_acts_on_exactly_the_deliveries_the_official_sdk_accepts(
        aiohttp_client, tmp_path, fake_openai, sdk, secret, case):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai, secret=secret)
    body, headers = case(secret, *signed(secret, call_event("+15551234567")))
    trusted = sdk_accepts(sdk, secret, body, headers)

    status, answer = await deliver(gateway, body, headers)

    if trusted:
        assert status == 200 and answer["result"] == "accepted", answer
        assert [c.action for c in fake_openai.calls] == ["accept"]
    else:
        assert status == 401 and answer["error"] == "webhook_signature_invalid", answer
        assert fake_openai.calls == []
        assert sample(gateway, "gateway_telephony_webhooks_total", result="invalid_signature") == 1
    assert trusted == (case in (untouched, almost_stale, several_signatures))


async def test_a_replayed_delivery_is_answered_200_and_acted_on_once(aiohttp_client, tmp_path, fake_openai, sdk):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)
    body, headers = signed(WHSEC, call_event())
    assert sdk_accepts(sdk, WHSEC, body, headers)  # the SDK alone would accept it each time

    first, second = await deliver(gateway, body, headers), await deliver(gateway, body, headers)

    assert first[0] == second[0] == 200
    assert (first[1]["result"], second[1]["result"]) == ("accepted", "replayed")
    assert len(fake_openai.calls) == 1
    assert sample(gateway, "gateway_telephony_webhooks_total", result="replayed") == 1


async def test_concurrent_copies_of_one_delivery_are_acted_on_once(aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)
    body, headers = signed(WHSEC, call_event())

    answers = await asyncio.gather(*(deliver(gateway, body, headers) for _ in range(5)))

    assert sorted(a["result"] for _, a in answers) == ["accepted"] + ["replayed"] * 4
    assert len(fake_openai.calls) == 1


async def test_a_delivery_is_remembered_across_a_restart(aiohttp_client, tmp_path, fake_openai):
    body, headers = signed(WHSEC, call_event())
    first = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)
    assert (await deliver(first, body, headers))[1]["result"] == "accepted"
    await first.client.close()

    again = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)
    assert (await deliver(again, body, headers))[1]["result"] == "replayed"
    assert len(fake_openai.calls) == 1


async def test_an_event_of_another_type_is_answered_200_ignored_and_counted(aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)
    event = {**call_event(), "type": "response.completed", "data": {"id": "resp_1"}}

    status, answer = await deliver(gateway, *signed(WHSEC, event))

    assert (status, answer) == (200, {"result": "ignored"})
    assert fake_openai.calls == []
    assert sample(gateway, "gateway_telephony_webhooks_total", result="ignored") == 1


async def test_without_a_webhook_secret_the_webhook_is_503_and_nothing_is_done(aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai, secret=None)

    status, answer = await call(gateway, "+15551234567")

    assert (status, answer["error"]) == (503, "telephony_not_configured")
    assert fake_openai.calls == []


async def test_the_webhook_needs_no_user_credential_though_auth_guards_every_other_route(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await admin_gateway(aiohttp_client, tmp_path, fake_openai)
    assert (await gateway.call("GET", "/api/telephony/routes"))[0] == 401
    assert (await call(gateway, "+15551234567"))[0] == 200


# Routing -------------------------------------------------------------------------------------------

def answered(fake) -> tuple[str, dict]:
    """The last call action: ("accept", the workflow its instructions name) or ("reject", its body)."""
    action = fake.calls[-1]
    return action.action, action.body


@pytest.mark.parametrize(("to", "workflow", "rule"), [
    ("+15551234567", "vip", "the exact number beats both prefixes"),
    ("+1 (555) 123-4567", "vip", "a number is compared as + and digits"),
    ("+15551239999", "support", "the longer prefix +155512* beats +1555*"),
    ("+15559990000", "sales", "the shorter prefix when only it matches"),
    ("+33123456789", "fallback", "TELEPHONY_DEFAULT_WORKFLOW_SLUG when no route matches"),
])
async def test_a_call_goes_to_the_exact_number_then_the_longest_prefix_then_the_default(
        aiohttp_client, tmp_path, fake_openai, to, workflow, rule):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai,
                                      TELEPHONY_DEFAULT_WORKFLOW_SLUG="fallback")

    status, answer = await call(gateway, to)

    assert status == 200, answer
    assert (answer["result"], answer["workflow"]) == ("accepted", workflow), rule
    assert fake_openai.calls[-1].action == "accept"


async def test_a_call_no_route_matches_is_rejected_with_the_configured_sip_status(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)

    status, answer = await call(gateway, "+33123456789")

    assert (status, answer["result"], answer["workflow"]) == (200, "rejected", None)
    [action] = fake_openai.calls
    assert (action.action, action.body) == ("reject", {"status_code": 486})
    assert fake_openai.requests[-1].path == f"/v1/realtime/calls/{action.call_id}/reject"
    assert sample(gateway, "gateway_telephony_calls_total", workflow="none", outcome="rejected") == 1


async def test_a_route_to_a_workflow_that_does_not_exist_rejects_the_call(aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai,
                                      TELEPHONY_DEFAULT_WORKFLOW_SLUG="fallback")
    with json_logs() as logs:
        status, answer = await call(gateway, "+442071234567")

    assert (status, answer["result"]) == (200, "rejected")
    assert answered(fake_openai) == ("reject", {"status_code": 486})
    assert "workflow_not_found" in logs.getvalue()


async def test_without_routes_or_default_the_default_reject_status_is_603(aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai, config=WORKFLOWS)
    await call(gateway, "+15551234567")
    assert answered(fake_openai) == ("reject", {"status_code": 603})


# Answering -----------------------------------------------------------------------------------------

async def test_the_accept_carries_the_workflows_realtime_block_over_the_telephony_defaults(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)
    event = call_event("+15551230000", call_id="rtc_support_1")

    status, answer = await deliver(gateway, *signed(WHSEC, event))

    assert (status, answer["workflow"]) == (200, "support")
    sent = fake_openai.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/realtime/calls/rtc_support_1/accept")
    assert sent.headers["authorization"] == f"Bearer {fake_openai.api_key}"
    assert "openai-beta" not in sent.headers
    assert sent.json() == {
        "type": "realtime",
        "model": "gpt-realtime",  # the default: support sets none
        "instructions": "Réponds en français, brièvement.",  # support's own
        "audio": {"output": {"voice": "marin"}},
        "tools": [{"type": "function", "name": "lookup_order", "parameters": {"type": "object"}}],
        "prompt": {"id": "pmpt_support", "version": "4"},
    }


async def test_a_workflow_without_a_realtime_block_is_answered_with_the_defaults(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)
    await call(gateway, "+15559990000")
    assert answered(fake_openai) == ("accept", {
        "type": "realtime", "model": "gpt-realtime", "instructions": "You answer the phone for ACME.",
        "audio": {"output": {"voice": "alloy"}},
        "tools": [{"type": "function", "name": "lookup_order", "parameters": {"type": "object"}}]})


async def test_a_failed_accept_is_a_5xx_and_the_senders_retry_accepts_exactly_once(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)
    delivery = signed(WHSEC, call_event("+15551234567"))
    fake_openai.fail_next_accepts = 1

    status, answer = await deliver(gateway, *delivery)
    assert status >= 500 and answer["error"] == "call_control_failed", answer
    assert answer["upstream_status"] == 500
    assert fake_openai.calls == []
    assert sample(gateway, "gateway_telephony_calls_total", workflow="vip", outcome="failed") == 1

    retry = signed(WHSEC, json.loads(delivery[0]), webhook_id=delivery[1]["webhook-id"])  # same id, new timestamp
    assert (await deliver(gateway, *retry))[1]["result"] == "accepted"
    assert (await deliver(gateway, *retry))[1]["result"] == "replayed"
    assert [c.action for c in fake_openai.calls] == ["accept"]
    assert sample(gateway, "gateway_telephony_calls_total", workflow="vip", outcome="accepted") == 1


async def test_an_unreachable_upstream_is_a_5xx_so_the_sender_retries(aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai,
                                      MODEL_API_BASE="http://127.0.0.1:9")  # the discard port: nothing listens

    status, answer = await call(gateway, "+15551234567")

    assert (status, answer["error"]) == (502, "upstream_unavailable")
    assert sample(gateway, "gateway_telephony_calls_total", workflow="vip", outcome="failed") == 1


async def test_a_sender_that_hangs_up_does_not_cancel_an_action_half_done(tmp_path):
    store = Store(str(tmp_path / "gateway.db"))
    await store.open()
    deliveries, done = Deliveries(store), []

    async def accept() -> str:
        await asyncio.sleep(0.05)
        done.append("accepted")
        return "accepted"

    sender = asyncio.create_task(deliveries.once("wh_hangs_up", accept))
    await asyncio.sleep(0.01)
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    await deliveries.settle()

    assert done == ["accepted"]
    assert await deliveries.once("wh_hangs_up", accept) is None  # the retry finds it recorded
    await store.close()


async def test_two_workers_given_one_delivery_at_once_act_on_it_exactly_once(tmp_path):
    stores = [Store(str(tmp_path / "gateway.db")) for _ in range(2)]  # two workers, one database
    for store in stores:
        await store.open()
    first, second = (Deliveries(store) for store in stores)
    acted = []

    async def accept() -> str:
        await asyncio.sleep(0.1)
        acted.append("accepted")
        return "accepted"

    acting = asyncio.create_task(first.once("wh_twice", accept))
    await asyncio.sleep(0.02)
    with pytest.raises(errors.WebhookInProgress):  # 409: the sender retries later
        await second.once("wh_twice", accept)
    assert await acting == "accepted"
    assert await second.once("wh_twice", accept) is None  # the retry is a replay
    assert acted == ["accepted"]
    for store in stores:
        await store.close()


async def test_a_claim_left_by_a_dead_worker_or_a_failed_action_does_not_block_the_retry(tmp_path):
    store = Store(str(tmp_path / "gateway.db"))
    await store.open()
    await store.claim_delivery("wh_orphan", time.time() - 600, since=0, stale_before=0)  # a worker that died
    deliveries = Deliveries(store, claim_seconds=300)

    async def fails() -> str:
        raise errors.CallControlFailed("upstream said no")

    async def accept() -> str:
        return "accepted"

    assert await deliveries.once("wh_orphan", accept) == "accepted"
    with pytest.raises(errors.CallControlFailed):
        await deliveries.once("wh_failed", fails)
    assert await deliveries.once("wh_failed", accept) == "accepted"  # the failure left no claim behind
    await store.close()


async def test_each_call_writes_one_line_with_the_numbers_last_4_digits_only(aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)
    with json_logs() as logs:
        await deliver(gateway, *signed(WHSEC, call_event("+15551239876", call_id="rtc_logged")))

    lines = [json.loads(line) for line in logs.getvalue().splitlines() if "rtc_logged" in line]
    assert len(lines) == 1
    line = lines[0]
    assert (line["call_id"], line["number"], line["outcome"], line["slug"]) == ("rtc_logged", "…9876", "accepted",
                                                                                  "support")
    assert line["route"] == "prefix +155512*"
    assert "5551239876" not in logs.getvalue() and "33612345678" not in logs.getvalue()


# The routes API ------------------------------------------------------------------------------------

async def test_admins_manage_routes_and_a_managed_route_routes_the_next_call(aiohttp_client, tmp_path, fake_openai):
    gateway = await admin_gateway(aiohttp_client, tmp_path, fake_openai)

    status, created = await gateway.call("POST", "/api/telephony/routes", ADMIN,
                                         json={"number": "+33 1 23 45 67 89", "workflow": "Support"})
    assert status == 201, created
    assert (created["number"], created["workflow"], created["source"]) == ("+33123456789", "support", "managed")
    assert (await call(gateway, "+33123456789"))[1]["workflow"] == "support"

    status, changed = await gateway.call("PATCH", "/api/telephony/routes/%2B33123456789", ADMIN,
                                         json={"workflow": "sales"})
    assert (status, changed["workflow"]) == (200, "sales")
    assert (await call(gateway, "+33123456789"))[1]["workflow"] == "sales"

    status, listing = await gateway.call("GET", "/api/telephony/routes", ADMIN)
    assert status == 200
    assert [(r["number"], r["workflow"], r["source"], r["resolves"]) for r in listing] == [
        ("+33123456789", "sales", "managed", True),
        ("+15551234567", "vip", "config", True), ("+1555*", "sales", "config", True),
        ("+155512*", "support", "config", True), ("+4420*", "retired", "config", False)]

    assert (await gateway.call("DELETE", "/api/telephony/routes/%2B33123456789", ADMIN))[0] == 204
    assert (await call(gateway, "+33123456789"))[1]["result"] == "rejected"

    audit = await gateway.app[keys.store].list_audit(obj="telephony_route:+33123456789")
    assert [(a.actor, a.action, a.before, a.after) for a in reversed(audit)] == [
        ("key:root", "telephony_route.create", None, {"workflow": "support"}),
        ("key:root", "telephony_route.update", {"workflow": "support"}, {"workflow": "sales"}),
        ("key:root", "telephony_route.delete", {"workflow": "sales"}, None)]


async def test_a_prefix_route_is_managed_by_its_number_and_star(aiohttp_client, tmp_path, fake_openai):
    gateway = await admin_gateway(aiohttp_client, tmp_path, fake_openai)
    status, created = await gateway.call("POST", "/api/telephony/routes", ADMIN,
                                         json={"number": "+3361*", "workflow": "vip"})
    assert status == 201
    assert (await call(gateway, "+33612345678"))[1]["workflow"] == "vip"
    assert (await gateway.call("DELETE", "/api/telephony/routes/%2B3361*", ADMIN))[0] == 204


@pytest.mark.parametrize(("method", "path", "body", "status", "error"), [
    ("POST", "/api/telephony/routes", {"number": "+1555*", "workflow": "vip"}, 409, "telephony_route_conflict"),
    ("POST", "/api/telephony/routes", {"number": "call me", "workflow": "vip"}, 400, "invalid_number"),
    ("POST", "/api/telephony/routes", {"number": "+3312", "workflow": "Not A Slug"}, 400, "invalid_slug"),
    ("POST", "/api/telephony/routes", {"number": "+3312", "workflow": "nobody"}, 404, "hosted_workflow_not_found"),
    ("POST", "/api/telephony/routes", {"number": "+3312", "workflow": "vip", "label": "x"}, 400, "invalid_field"),
    ("PATCH", "/api/telephony/routes/%2B1555*", {"workflow": "vip"}, 409, "telephony_route_read_only"),
    ("PATCH", "/api/telephony/routes/%2B999", {"workflow": "vip"}, 404, "telephony_route_not_found"),
    ("DELETE", "/api/telephony/routes/%2B1555*", None, 409, "telephony_route_read_only"),
    ("DELETE", "/api/telephony/routes/%2B999", None, 404, "telephony_route_not_found"),
])
async def test_route_changes_that_cannot_apply_are_refused_with_a_stable_code(
        aiohttp_client, tmp_path, fake_openai, method, path, body, status, error):
    gateway = await admin_gateway(aiohttp_client, tmp_path, fake_openai)
    got_status, answer = await gateway.call(method, path, ADMIN, json=body)
    assert (got_status, answer["error"]) == (status, error), answer


async def test_only_admins_manage_routes(aiohttp_client, tmp_path, fake_openai):
    gateway = await admin_gateway(aiohttp_client, tmp_path, fake_openai)
    assert (await gateway.call("GET", "/api/telephony/routes", ALICE))[0] == 403
    assert (await gateway.call("POST", "/api/telephony/routes", ALICE,
                               json={"number": "+3312", "workflow": "vip"}))[0] == 403


async def test_a_route_created_by_another_process_is_followed(aiohttp_client, tmp_path, fake_openai):
    gateway = await telephony_gateway(aiohttp_client, tmp_path, fake_openai)
    other = Store(str(tmp_path / "gateway.db"))
    await other.open()
    await other.add_call_route("+3399*", "vip")
    await other.close()

    await eventually(lambda: gateway.app[keys.call_routes].table.find("+3399*") is not None, timeout=5)
    assert (await call(gateway, "+33991234"))[1]["workflow"] == "vip"


# Config ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("yaml_text", "environ", "path"), [
    ('telephony:\n  routes: [{number: "+1555", workflow: a}, {number: "+1 555", workflow: b}]\n', {},
     "telephony.routes[1].number"),
    ('telephony:\n  routes: [{number: "sip:sales", workflow: a}]\n', {}, "telephony.routes[0].number"),
    ('telephony:\n  routes: [{number: "+1555", workflow: "Sales Team"}]\n', {}, "telephony.routes[0].workflow"),
    ('telephony:\n  routes: [{number: "+1555", workflow: a, source: managed}]\n', {}, "telephony.routes[0].source"),
    ("telephony:\n  reject_status: 200\n", {}, "telephony.reject_status"),
    ("telephony:\n  realtime: {prompt: {id: prompt-1}}\n", {}, "telephony.realtime.prompt.id"),
    ("telephony:\n  webhook_secret: whsec_abc\n", {}, "telephony.webhook_secret"),
    ("", {"TELEPHONY_DEFAULT_WORKFLOW_SLUG": "Sales Team"}, "telephony.default_workflow"),
    ("", {"OPENAI_WEBHOOK_SECRET": "whsec_a"}, "OPENAI_WEBHOOK_SECRET"),
    ("workflows: [{slug: a, workflow_id: wf_a, realtime: {tools: [{name: x}]}}]\n", {},
     "workflows[0].realtime.tools[0]"),
])
def test_a_bad_telephony_setting_fails_start_up_naming_its_key(tmp_path, yaml_text, environ, path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ)
    assert caught.value.path == path, caught.value


def test_the_webhook_secret_comes_from_the_file_else_openai_webhook_secret(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("telephony:\n  webhook_secret: {$env: PBX_SECRET}\n")
    named = load_settings(config, {"PBX_SECRET": RAW, "OPENAI_WEBHOOK_SECRET": WHSEC})
    assert named.telephony.webhook_secret.reveal() == RAW
    assert load_settings(None, {"OPENAI_WEBHOOK_SECRET": WHSEC}).telephony.webhook_secret.reveal() == WHSEC
    assert load_settings(None, {}).telephony.webhook_secret is None


def test_check_config_warns_about_route_and_default_slugs_that_name_no_workflow(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(WORKFLOWS + ROUTES + f"storage: {{path: {tmp_path / 'gateway.db'}}}\n")

    code = main(["check-config", "--config", str(config)], {"TELEPHONY_DEFAULT_WORKFLOW_SLUG": "nobody"})

    assert code == 0
    err = capsys.readouterr().err
    assert "warning: telephony.routes[3].workflow: 'retired' names no workflow" in err
    assert "warning: telephony.default_workflow (TELEPHONY_DEFAULT_WORKFLOW_SLUG): 'nobody' names no workflow" in err
    assert "no webhook secret" in err


@pytest.mark.parametrize(("name", "value", "number"), [
    ("To", "<sip:+15551234567@sip.api.openai.com>", "+15551234567"),
    ("to", '"Sales" <sips:+1-555-123-4567@pbx.example>;tag=8f2', "+15551234567"),
    ("To", "<tel:+15551234567>", "+15551234567"),
    ("t", "sip:+15551234567;user=phone@pbx.example", "+15551234567"),
    ("To", "<sip:support@pbx.example>", None),
])
def test_the_called_number_is_the_to_headers_user_part_as_plus_and_digits(name, value, number):
    headers = [{"name": "From", "value": "sip:+33612345678@carrier.example"}, {"name": name, "value": value}]
    assert called_number(headers) == number


async def test_a_config_reload_reads_the_telephony_routes_and_default_again(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, WORKFLOWS + ROUTES)
    table = lambda: gateway.app[keys.call_routes].table  # noqa: E731
    assert table().match("+15559876543").workflow == "sales"
    assert table().match("+33100000000") is None
    gateway.config.write_text(DEFAULT_PLUGINS + WORKFLOWS + ROUTES.replace('"+1555*", workflow: sales',
                                                                           '"+1555*", workflow: fallback')
                              + "  default_workflow: vip\n")
    status, body = await gateway.call("POST", "/api/admin/reload", ADMIN)
    assert status == 200, body
    assert table().match("+15559876543").workflow == "fallback"
    assert table().match("+33100000000").workflow == "vip"

    gateway.config.write_text(DEFAULT_PLUGINS + "telephony:\n  routes: [{number: nope, workflow: a}]\n")
    status, body = await gateway.call("POST", "/api/admin/reload", ADMIN)
    assert status == 400 and body["key"] == "telephony.routes[0].number"
    assert table().match("+15559876543").workflow == "fallback"  # the running routes stay
