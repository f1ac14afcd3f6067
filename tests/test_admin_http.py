"""The admin and chat pages over plain HTTP: login, cookie, CSRF, headers, 403, languages, secrets, Status."""

from __future__ import annotations

import re

import pytest
from admin_pages import (ADMIN_KEY, INLINE_HANDLER, INLINE_SCRIPT, INLINE_STYLE, SESSION_SECRET, admin_settings,
                         csrf_of, leaked, login)
from harness import start_gateway

from gateway import keys
from gateway.admin.cookie import COOKIE, SECRET_KEY
from gateway.traffic import Traffic

PAGES = ("/admin/workflows", "/admin/sessions", "/admin/keys", "/admin/audit", "/admin/status", "/chat")
ADMIN_ONLY = PAGES[:-1]


@pytest.fixture
async def gateway(aiohttp_client, tmp_path, fake_openai):
    return await start_gateway(aiohttp_client, admin_settings(tmp_path, fake_openai))


async def signed_in(gateway):
    response = await login(gateway)
    assert response.status == 303, await response.text()
    return gateway


async def user_key(gateway, name: str = "alice") -> str:
    return await gateway.server.app[keys.api_keys].create(name, admin=False, actor="test")


def cookie_value(client) -> str:
    return client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value


def put_cookie(client, value: str) -> None:
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({COOKIE: value}, response_url=client.make_url("/"))


def set_cookie(response) -> str:
    return next(v for v in response.headers.getall("Set-Cookie") if v.startswith(COOKIE + "="))


# Login and the session cookie ------------------------------------------------------------------

async def test_an_admin_page_sends_a_visitor_to_the_login_page(gateway):
    response = await gateway.get("/admin/keys", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/admin/login?next=/admin/keys"


async def test_logging_in_sets_a_signed_httponly_samesite_strict_cookie_with_an_expiry(gateway):
    response = await login(gateway, next_path="/admin/status")
    assert response.status == 303 and response.headers["Location"] == "/admin/status"
    cookie = set_cookie(response)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert int(re.search(r"Max-Age=(\d+)", cookie).group(1)) == 8 * 3600
    assert "Secure" not in cookie  # plain HTTP, and no trusted proxy said otherwise
    assert (await gateway.get("/admin/keys")).status == 200


async def test_the_cookie_is_secure_when_the_trusted_proxy_says_https(gateway):
    response = await gateway.get("/admin/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in set_cookie(response)


async def test_x_forwarded_proto_from_an_untrusted_peer_does_not_count(aiohttp_client, tmp_path, fake_openai):
    settings = admin_settings(tmp_path, fake_openai, environ={"GATEWAY__SERVER__TRUSTED_PROXIES": "[10.0.0.0/8]"})
    client = await start_gateway(aiohttp_client, settings)
    response = await client.get("/admin/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in set_cookie(response)


async def test_a_tampered_cookie_signs_nobody_in(gateway):
    await signed_in(gateway)
    payload, signature = cookie_value(gateway).split(".")
    put_cookie(gateway, payload + "." + signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB"))
    response = await gateway.get("/admin/keys", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/admin/login")


async def test_a_wrong_key_is_refused_on_the_login_page(gateway):
    response = await login(gateway, key="gk_not-a-key-00000000000000000000000000000")
    assert response.status == 401
    assert "This key is not valid, or it has been revoked." in await response.text()


async def test_login_failures_are_rate_limited_like_api_calls(aiohttp_client, tmp_path, fake_openai):
    plugins = "plugins:\n  - name: auth\n    max_failures: 2\n"
    client = await start_gateway(aiohttp_client, admin_settings(tmp_path, fake_openai, plugins=plugins))
    for _ in range(2):
        assert (await login(client, key="gk_wrong-key-00000000000000000000000000000000")).status == 401
    response = await login(client)  # even the right key waits for the window to end
    assert response.status == 429
    assert "Too many failed attempts" in await response.text()


async def test_a_non_admin_key_gets_a_403_page_and_no_login(gateway):
    response = await login(gateway, key=await user_key(gateway))
    assert response.status == 403
    assert "This page is for administrators. You are signed in as alice" in await response.text()
    assert (await gateway.get("/admin/workflows", allow_redirects=False)).status == 303


async def test_trusted_nginx_headers_sign_in_admins_and_refuse_other_users(gateway):
    ops = {"X-Forwarded-User": "ann", "X-Forwarded-Groups": "ops,dev"}
    assert (await gateway.get("/admin/workflows", headers=ops)).status == 200
    response = await gateway.get("/admin/workflows", headers={"X-Forwarded-User": "bob"})
    assert response.status == 403
    assert "You are signed in as bob" in await response.text()
    assert (await gateway.get("/chat", headers={"X-Forwarded-User": "bob"})).status == 200  # any user may chat


async def test_forwarded_headers_from_an_untrusted_peer_sign_nobody_in(aiohttp_client, tmp_path, fake_openai):
    settings = admin_settings(tmp_path, fake_openai, environ={"GATEWAY__SERVER__TRUSTED_PROXIES": "[10.0.0.0/8]"})
    client = await start_gateway(aiohttp_client, settings)
    response = await client.get("/admin/workflows", headers={"X-Forwarded-User": "ann", "X-Forwarded-Groups": "ops"},
                                allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/admin/login")


async def test_revoking_the_key_ends_its_login(gateway):
    await signed_in(gateway)
    await gateway.server.app[keys.api_keys].revoke("bootstrap-admin", actor="test")
    response = await gateway.get("/admin/workflows", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/admin/login")


async def test_logout_ends_the_login(gateway):
    await signed_in(gateway)
    token = csrf_of(await (await gateway.get("/admin/workflows")).text())
    response = await gateway.post("/admin/logout", data={"csrf_token": token}, allow_redirects=False)
    assert response.status == 303 and "Max-Age=0" in set_cookie(response)
    assert (await gateway.get("/admin/workflows", allow_redirects=False)).status == 303


async def test_the_cookie_secret_is_generated_once_and_kept_in_the_store(aiohttp_client, tmp_path, fake_openai):
    settings = admin_settings(tmp_path, fake_openai, admin="")
    first = await start_gateway(aiohttp_client, settings)
    assert (await login(first)).status == 303
    cookie = cookie_value(first)
    stored = await first.server.app[keys.store].get_value(SECRET_KEY)
    assert stored and len(stored) == 64
    await first.close()
    second = await start_gateway(aiohttp_client, settings)
    put_cookie(second, cookie)
    assert (await second.get("/admin/keys", allow_redirects=False)).status == 200


# CSRF ---------------------------------------------------------------------------------------------

async def test_a_form_post_without_its_csrf_token_is_refused(gateway):
    await signed_in(gateway)
    form = {"slug": "sneaky", "workflow_id": "wf_sneaky"}
    response = await gateway.post("/admin/workflows", data=form)
    assert response.status == 403
    assert "Form expired" in await response.text()
    response = await gateway.post("/admin/workflows", data={**form, "csrf_token": "forged"})
    assert response.status == 403
    assert gateway.server.app[keys.registry].find("sneaky") is None


async def test_a_csrf_token_from_another_visit_is_refused(gateway, aiohttp_client):
    other = await aiohttp_client(gateway.server)
    stolen = csrf_of(await (await other.get("/admin/login")).text())
    await signed_in(gateway)
    response = await gateway.post("/admin/workflows", data={"slug": "x1", "workflow_id": "wf_x1", "csrf_token": stolen})
    assert response.status == 403


async def test_the_chat_session_endpoint_wants_the_csrf_header(gateway):
    await signed_in(gateway)
    token = csrf_of(await (await gateway.get("/chat")).text())
    response = await gateway.post("/chat/session", json={})
    assert response.status == 403 and (await response.json())["error"] == "forbidden"
    response = await gateway.post("/chat/session", json={"hosted_workflow_slug": "nope"},
                                  headers={"X-CSRF-Token": token})
    assert response.status == 404 and (await response.json())["error"] == "hosted_workflow_not_found"


# Headers and markup -------------------------------------------------------------------------------

async def test_every_page_sends_strict_headers_and_has_no_inline_script_or_style(gateway):
    await signed_in(gateway)
    for path in ("/admin/login", *PAGES):
        response = await gateway.get(path)
        assert response.status == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, path
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["Cache-Control"] == "no-store", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        html = await response.text()
        for pattern in (INLINE_SCRIPT, INLINE_HANDLER, INLINE_STYLE):
            assert not pattern.search(html), (path, pattern.search(html))
        for form in re.findall(r"<form\b[^>]*method=\"post\".*?</form>", html, re.S):
            assert 'name="csrf_token"' in form, (path, form[:80])


async def test_the_chat_page_may_load_the_chatkit_script_and_nothing_else(gateway):
    await signed_in(gateway)
    response = await gateway.get("/chat")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self' https://cdn.platform.openai.com;" in csp
    assert '<script src="https://cdn.platform.openai.com/deployments/chatkit/chatkit.js" async>' in await response.text()


async def test_an_unknown_admin_path_is_a_404_page(gateway):
    await signed_in(gateway)
    response = await gateway.get("/admin/nowhere")
    assert response.status == 404 and response.content_type == "text/html"


# Languages ----------------------------------------------------------------------------------------

async def test_french_follows_accept_language_with_the_seeds_words(gateway):
    await signed_in(gateway)
    html = await (await gateway.get("/admin/workflows", headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"})).text()
    assert '<html lang="fr">' in html
    for words in ("Workflows hébergés", "Ajouter", "Slug", "Libellé", "Description", "Identifiant du workflow OpenAI"):
        assert words in html


async def test_the_language_toggle_wins_over_accept_language_and_sticks(gateway):
    await signed_in(gateway)
    french = {"Accept-Language": "fr"}
    assert "Hosted workflows" in await (await gateway.get("/admin/workflows?lang=en", headers=french)).text()
    assert "Hosted workflows" in await (await gateway.get("/admin/sessions", headers=french)).text()
    assert "Workflows hébergés" in await (await gateway.get("/admin/sessions?lang=fr")).text()


# Pages --------------------------------------------------------------------------------------------

async def test_the_add_form_shows_the_registrys_rule_next_to_the_field_and_keeps_the_values(gateway):
    await signed_in(gateway)
    token = csrf_of(await (await gateway.get("/admin/workflows")).text())
    response = await gateway.post("/admin/workflows", data={
        "csrf_token": token, "slug": "Support Pro", "workflow_id": "wf_abc", "label": "Support"})
    assert response.status == 400
    html = await response.text()
    assert re.search(r'id="f-slug"[^>]*aria-invalid="true"', html)
    assert "Not a slug: 1 to 63 characters" in html and 'value="Support"' in html
    response = await gateway.post("/admin/workflows", data={"csrf_token": token, "slug": "support", "workflow_id": "abc"})
    assert "Expected wf_ followed by letters and digits." in await response.text()


async def test_config_entries_are_read_only_and_shadowed_ones_are_listed(aiohttp_client, tmp_path, fake_openai):
    config = "workflows:\n  - {slug: hosted-workflow, workflow_id: wf_fromfile}\n"
    client = await start_gateway(aiohttp_client, admin_settings(tmp_path, fake_openai, config=config,
                                                                environ={"CHATKIT_WORKFLOW_ID": "wf_legacy1"}))
    await client.server.app[keys.registry].create({"slug": "support", "workflow_id": "wf_mine"}, "test")
    assert (await login(client)).status == 303
    html = await (await client.get("/admin/workflows")).text()
    assert "source-config" in html and "source-managed" in html and "read-only" in html
    assert 'id="shadowed"' in html and "wf_legacy1" in html
    assert (await client.get("/admin/workflows/hosted-workflow/edit")).status == 409
    assert (await client.get("/admin/workflows/support/edit")).status == 200


async def test_no_page_shows_a_secret(gateway, fake_openai):
    await gateway.server.app[keys.registry].create({"slug": "support", "workflow_id": "wf_support"}, "test")
    await signed_in(gateway)
    cookie = cookie_value(gateway)
    token = csrf_of(await (await gateway.get("/chat")).text())
    minted = await (await gateway.post("/chat/session", json={}, headers={"X-CSRF-Token": token})).json()
    secrets = [ADMIN_KEY, fake_openai.api_key, SESSION_SECRET, minted["client_secret"], cookie]
    for path in ("/admin/login", *PAGES, "/admin/audit?actor=key:bootstrap-admin"):
        assert leaked(await (await gateway.get(path)).text(), secrets) == [], path


async def test_the_status_page_checks_the_upstream_and_charts_the_last_hour(gateway):
    registry = gateway.server.app[keys.registry]
    await registry.create({"slug": "broken", "workflow_id": "wf_fail500"}, "test")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for _ in range(3):
        assert (await gateway.post("/api/chatkit/session", json={"hosted_workflow_slug": "broken"},
                                   headers=admin)).status == 502
    assert (await gateway.get("/api/chatkit/hosted", headers=admin)).status == 200
    await signed_in(gateway)
    html = await (await gateway.get("/admin/status")).text()
    upstream = html[html.index('id="upstream"'):html.index('id="charts"')]
    assert "GET http://127.0.0.1:" in upstream and "/v1/models" in upstream and "200 OK" in upstream
    assert "direct" in upstream
    charts = html[html.index('id="charts"'):html.index('id="config"')]
    assert charts.count("<svg") == 3 and "<polyline" in charts
    assert '<span class="swatch series-0"></span>broken</li>' in charts  # the workflow with errors comes first
    config = html[html.index('id="config"'):]
    assert "&lt;secret …" in config and SESSION_SECRET not in config


async def test_the_status_page_names_a_failing_upstream(aiohttp_client, tmp_path, fake_openai):
    client = await start_gateway(aiohttp_client, admin_settings(tmp_path, fake_openai,
                                                                environ={"OPENAI_API_KEY": "sk-wrong-key-000000"}))
    assert (await login(client)).status == 303
    html = await (await client.get("/admin/status")).text()
    assert "401 Unauthorized" in html and "sk-wrong-key-000000" not in html


def test_traffic_keeps_an_hour_of_minutes_with_latency_quantiles():
    now = [7200.0]
    traffic = Traffic(clock=lambda: now[0])
    for ms in [10] * 98 + [900, 900]:
        traffic.record("support", 200, ms / 1000, failed=False)
    traffic.record("support", 502, 0.05, failed=True)
    minute = traffic.last_hour()[-1]
    assert 10 <= minute.p50_ms < 15 and 900 <= minute.p99_ms < 1300
    assert minute.errors_by_workflow == {"support": 1} and minute.requests_by_workflow == {"support": 101}
    now[0] += 3600  # an hour later the ring has moved on
    assert all(m.requests_per_second == 0 and m.p50_ms is None for m in traffic.last_hour())


# Static files -------------------------------------------------------------------------------------

async def test_the_js_helper_is_served_as_a_module_any_site_may_import(gateway):
    response = await gateway.get("/static/chatkit-gateway.js")
    assert response.status == 200 and response.content_type == "text/javascript"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    body = await response.text()
    assert "export class HostedWorkflowNotFound" in body and "export async function chatKitApi" in body
    again = await gateway.get("/static/chatkit-gateway.js", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304
    assert (await gateway.get("/static/admin.css")).content_type == "text/css"
    assert (await gateway.get("/static/nothing.js")).status == 404
