"""The "Telephony routes" admin page (issue 7): list, add, edit, delete after confirmation, over HTTP and in Chromium.

The page changes routes through the same functions as /api/telephony/routes, so a bad form gets the
API's verdict (same status, same error) shown next to its field, and every change is audited.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from admin_pages import (ADMIN_KEY, INLINE_HANDLER, INLINE_SCRIPT, INLINE_STYLE, admin_settings, csrf_of,
                         login)
from aiohttp import web
from harness import start_gateway
from tests.support.fixtures import require_binary

from gateway import keys
from gateway.app import create_app
from gateway.callroutes import CallRoute
from plugins import REGISTRY

CONFIG = """
workflows:
  - {slug: sales, workflow_id: wf_sales, label: Sales}
  - {slug: vip, workflow_id: wf_vip, label: VIP line}
  - {slug: support, workflow_id: wf_support, label: Support}
telephony:
  reject_status: 486
  routes:
    - {number: "+1 555 123 4567", workflow: vip}
    - {number: "+1555*", workflow: sales}
    - {number: "+4420*", workflow: retired}
"""
DEFAULT = {"TELEPHONY_DEFAULT_WORKFLOW_SLUG": "support"}
ADMIN_ACTOR = "key:bootstrap-admin"
BEARER = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def gateway(aiohttp_client, tmp_path, fake_openai):
    client = await start_gateway(aiohttp_client, admin_settings(tmp_path, fake_openai, config=CONFIG, environ=DEFAULT))
    assert (await login(client, next_path="/admin/telephony")).status == 303
    return client


async def shadow(app: web.Application, number: str = "+4420*", workflow: str = "vip") -> None:
    """A managed route for a number config.yaml also routes, as when config.yaml gains it later."""
    await app[keys.store].add_call_route(number, workflow)
    await app[keys.call_routes].load()


def routes(client) -> dict[str, tuple[str, str]]:
    """The live route table: number → (workflow, source)."""
    return {r.number: (r.workflow, r.source) for r in client.server.app[keys.call_routes].table.routes}


async def route_changes(client) -> list[str]:
    """The admin's audited route changes (logins are audited too)."""
    audit = await client.server.app[keys.store].list_audit(actor=ADMIN_ACTOR)
    return [a.action for a in audit if a.action.startswith("telephony_route.")]


async def token(client, path: str = "/admin/telephony") -> str:
    return csrf_of(await (await client.get(path)).text())


def row_of(html: str, number: str) -> str:
    found = re.search(r'<tr[^>]*data-number="' + re.escape(number) + r'".*?</tr>', html, re.S)
    assert found, f"no row for {number}"
    return found.group(0)


def section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start:html.index("</table>", start)]


# Listing -------------------------------------------------------------------------------------------

async def test_the_page_lists_the_merged_routes_the_default_and_the_reject_status(gateway):
    await shadow(gateway.server.app)
    response = await gateway.get("/admin/telephony")
    assert response.status == 200
    html = await response.text()
    nav = html[html.index("<nav"):html.index("</nav>")]
    assert nav.index('href="/admin/workflows"') < nav.index('href="/admin/telephony"') < nav.index("/admin/sessions")
    assert 'href="/admin/telephony" aria-current="page">Telephony routes</a>' in nav

    listed = section(html, "routes")
    assert [m for m in re.findall(r'data-number="([^"]+)"', listed)] == ["+4420*", "+15551234567", "+1555*"]
    managed = row_of(listed, "+4420*")
    assert "source-managed" in managed and "<code>vip</code>" in managed and "exists" in managed
    assert 'href="/admin/telephony/+4420*/edit"' in managed and 'href="/admin/telephony/+4420*/delete"' in managed
    exact = row_of(listed, "+15551234567")
    assert "exact number" in exact and "source-config" in exact and "read-only" in exact and "/edit" not in exact
    assert "prefix" in row_of(listed, "+1555*")

    shadowed = row_of(section(html, "shadowed"), "+4420*")  # config.yaml's +4420* loses to the managed one
    assert "<code>retired</code>" in shadowed and "source-config" in shadowed and "source-managed" in shadowed

    fallback = html[html.index('id="fallback"'):html.index("</dl>")]
    assert "<code>support</code>" in fallback and "exists" in fallback and "TELEPHONY_DEFAULT_WORKFLOW_SLUG" in fallback
    assert "<code>486</code>" in fallback


async def test_a_route_whose_workflow_does_not_exist_is_marked(aiohttp_client, tmp_path, fake_openai):
    settings = admin_settings(tmp_path, fake_openai, config=CONFIG, environ={"TELEPHONY_DEFAULT_WORKFLOW_SLUG": "gone"})
    client = await start_gateway(aiohttp_client, settings)
    assert (await login(client)).status == 303
    html = await (await client.get("/admin/telephony")).text()
    assert "no such workflow" in row_of(html, "+4420*") and "Calls to this route are rejected (SIP 486)" in html
    assert "exists" in row_of(html, "+1555*")
    fallback = html[html.index('id="fallback"'):html.index("</dl>")]
    assert "<code>gone</code>" in fallback and "no such workflow" in fallback


async def test_every_telephony_page_has_strict_headers_no_inline_code_and_a_token_on_each_form(gateway):
    await gateway.server.app[keys.call_routes].create(CallRoute("+3361*", "vip", "managed"), actor="test")
    for path in ("/admin/telephony", "/admin/telephony/+3361*/edit", "/admin/telephony/+3361*/delete"):
        response = await gateway.get(path)
        assert response.status == 200, path
        assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"], path
        assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
        html = await response.text()
        for pattern in (INLINE_SCRIPT, INLINE_HANDLER, INLINE_STYLE):
            assert not pattern.search(html), (path, pattern.search(html))
        forms = re.findall(r"<form\b[^>]*method=\"post\".*?</form>", html, re.S)
        assert forms and all('name="csrf_token"' in form for form in forms), path


async def test_a_visitor_is_sent_to_the_login_page(aiohttp_client, tmp_path, fake_openai):
    client = await start_gateway(aiohttp_client, admin_settings(tmp_path, fake_openai, config=CONFIG))
    response = await client.get("/admin/telephony", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/admin/login?next=/admin/telephony"


# CSRF and validation ---------------------------------------------------------------------------------

async def test_a_form_without_its_csrf_token_changes_nothing(gateway):
    await gateway.server.app[keys.call_routes].create(CallRoute("+3361*", "vip", "managed"), actor="test")
    before = routes(gateway)
    for path, form in (("/admin/telephony", {"number": "+3312", "workflow": "vip"}),
                       ("/admin/telephony/+3361*/edit", {"workflow": "sales"}),
                       ("/admin/telephony/+3361*/delete", {})):
        for sent in (form, {**form, "csrf_token": "forged"}):
            response = await gateway.post(path, data=sent, allow_redirects=False)
            assert response.status == 403, path
            assert "Form expired" in await response.text()
    assert routes(gateway) == before
    assert await route_changes(gateway) == []


@pytest.mark.parametrize(("form", "field", "message"), [
    ({"number": "call me", "workflow": "vip"}, "number", "Not a number: + and digits"),
    ({"number": "", "workflow": "vip"}, "number", "Not a number: + and digits"),
    ({"number": "+3312", "workflow": "Not A Slug"}, "workflow", "Not a slug: 1 to 63 characters"),
    ({"number": "+3312", "workflow": "nobody"}, "workflow", "No hosted workflow has this slug."),
    ({"number": "+1 555*", "workflow": "vip"}, "number", "This number already has a route (config)."),
])
async def test_the_add_form_shows_the_apis_verdict_next_to_its_field(gateway, form, field, message):
    api = await gateway.post("/api/telephony/routes", json=form, headers=BEARER)
    response = await gateway.post("/admin/telephony", data={**form, "csrf_token": await token(gateway)})
    assert response.status == api.status  # the same validation, so the same status
    html = await response.text()
    assert re.search(rf'id="f-{field}"[^>]*aria-invalid="true"', html), html[html.index('id="add"'):]
    error = re.search(rf'<p class="field-error" id="e-{field}">([^<]*)</p>', html).group(1)
    assert error.startswith(message.replace("'", "&#39;")), error
    assert f'value="{form["workflow"]}"' in html  # what was typed stays
    assert routes(gateway).keys() == {"+15551234567", "+1555*", "+4420*"}


# Add, edit, delete -----------------------------------------------------------------------------------

async def test_an_admin_adds_edits_and_deletes_a_route_after_confirmation_and_each_change_is_audited(gateway):
    response = await gateway.post("/admin/telephony", allow_redirects=False, data={
        "csrf_token": await token(gateway), "number": "+33 1 23 45 67 89", "workflow": "Support"})
    assert response.status == 303
    assert response.headers["Location"] == "/admin/telephony?done=route_created&number=%2B33123456789"
    html = await (await gateway.get(response.headers["Location"])).text()
    assert '<p class="flash" role="status">Route +33123456789 added.</p>' in html
    assert "source-managed" in row_of(html, "+33123456789")
    assert routes(gateway)["+33123456789"] == ("support", "managed")

    edit = await gateway.get("/admin/telephony/+33123456789/edit")
    html = await edit.text()
    assert re.search(r'id="f-number"[^>]*value="\+33123456789"[^>]*readonly', html)
    assert re.search(r'id="f-workflow"[^>]*value="support"', html)
    refused = await gateway.post("/admin/telephony/+33123456789/edit", data={"csrf_token": csrf_of(html),
                                                                            "workflow": "nobody"})
    assert refused.status == 404 and "No hosted workflow has this slug." in await refused.text()
    response = await gateway.post("/admin/telephony/%2B33123456789/edit", allow_redirects=False,
                                  data={"csrf_token": csrf_of(html), "workflow": "sales"})
    assert response.status == 303 and "done=route_updated" in response.headers["Location"]
    assert gateway.server.app[keys.call_routes].table.match("+33123456789").workflow == "sales"

    confirm = await gateway.get("/admin/telephony/+33123456789/delete")
    html = await confirm.text()
    assert confirm.status == 200 and "Delete the route +33123456789, answered by sales?" in html
    assert "else the default workflow support" in html and 'id="confirm-delete"' in html
    assert "+33123456789" in routes(gateway)  # asking is not deleting
    response = await gateway.post("/admin/telephony/+33123456789/delete", allow_redirects=False,
                                  data={"csrf_token": csrf_of(html)})
    assert response.status == 303 and "done=route_deleted" in response.headers["Location"]
    assert "+33123456789" not in routes(gateway)
    assert gateway.server.app[keys.call_routes].table.match("+33123456789").rule == "default"

    audit = await gateway.server.app[keys.store].list_audit(obj="telephony_route:+33123456789")
    assert [(a.actor, a.action, a.before, a.after) for a in reversed(audit)] == [
        (ADMIN_ACTOR, "telephony_route.create", None, {"workflow": "support"}),
        (ADMIN_ACTOR, "telephony_route.update", {"workflow": "support"}, {"workflow": "sales"}),
        (ADMIN_ACTOR, "telephony_route.delete", {"workflow": "sales"}, None)]
    html = await (await gateway.get("/admin/audit?object=telephony_route:%2B33123456789")).text()
    assert html.count("<code>telephony_route.") == 3


async def test_a_prefix_route_is_edited_and_deleted_by_its_number_and_star(gateway):
    response = await gateway.post("/admin/telephony", allow_redirects=False,
                                  data={"csrf_token": await token(gateway), "number": "+3361*", "workflow": "vip"})
    assert response.status == 303
    assert gateway.server.app[keys.call_routes].table.match("+33612345678").workflow == "vip"
    html = await (await gateway.get("/admin/telephony/%2B3361%2A/delete")).text()
    assert 'action="/admin/telephony/+3361*/delete"' in html
    response = await gateway.post("/admin/telephony/+3361*/delete", allow_redirects=False,
                                  data={"csrf_token": csrf_of(html)})
    assert response.status == 303 and "+3361*" not in routes(gateway)


async def test_config_routes_are_read_only(gateway):
    form_token = await token(gateway)
    for path, form in (("/admin/telephony/+1555*/edit", {"workflow": "vip"}),
                       ("/admin/telephony/+1555*/delete", {})):
        assert (await gateway.get(path)).status == 409
        response = await gateway.post(path, data={**form, "csrf_token": form_token})
        assert response.status == 409
        assert "This route is declared in config.yaml; change it there." in await response.text()
    assert (await gateway.get("/admin/telephony/+999/edit")).status == 404
    assert routes(gateway)["+1555*"] == ("sales", "config")
    assert await route_changes(gateway) == []


# French ----------------------------------------------------------------------------------------------

async def test_the_french_page_uses_the_seeds_words(gateway):
    await gateway.server.app[keys.call_routes].create(CallRoute("+3361*", "vip", "managed"), actor="test")
    french = {"Accept-Language": "fr-FR,fr;q=0.9"}
    html = await (await gateway.get("/admin/telephony", headers=french)).text()
    assert '<html lang="fr">' in html and "<title>Routes téléphoniques · chatkit-gateway</title>" in html
    for words in ("Routes téléphoniques", "Ajouter", "Numéro", "Workflow", "Supprimer", "Workflows hébergés",
                  "Workflow par défaut", "Statut de rejet", "lecture seule", "géré"):
        assert words in html, words
    response = await gateway.post("/admin/telephony", headers=french,
                                  data={"csrf_token": csrf_of(html), "number": "appelez-moi", "workflow": "vip"})
    assert "Ce n&#39;est pas un numéro" in await response.text()
    html = await (await gateway.get("/admin/telephony/+3361*/delete", headers=french)).text()
    assert "Supprimer la route +3361* ?" in html


# In Chromium -----------------------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")  # as in test_admin_browser.py
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"


@pytest.fixture
async def served(tmp_path, fake_openai) -> AsyncIterator[tuple[web.Application, str]]:
    """A gateway on a free port, with a managed route shadowing a config one, for a real browser."""
    app = create_app(admin_settings(tmp_path, fake_openai, config=CONFIG, environ=DEFAULT), REGISTRY, {})
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    await shadow(app)
    yield app, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def page() -> AsyncIterator[object]:
    require_binary(None if CHROMIUM.exists() else f"{CHROMIUM} is missing: run scripts/install-test-deps.sh")
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = await browser.new_context(locale="en-US", viewport={"width": 1280, "height": 860})
        yield await context.new_page()
        await browser.close()


@pytest.mark.integration
async def test_in_chromium_an_admin_adds_a_route_sees_it_listed_and_deletes_it(served, page):
    app, base = served
    await page.goto(base + "/admin/telephony")
    await page.fill("#api_key", ADMIN_KEY)
    await page.click("form button.primary")
    await page.wait_for_load_state()
    assert page.url == base + "/admin/telephony"

    await page.fill("#f-number", "+33 1 23 45 67 89")
    await page.fill("#f-workflow", "support")
    await page.click("#add button.primary")
    await page.wait_for_load_state()
    assert await page.locator(".flash").inner_text() == "Route +33123456789 added."
    listed = page.locator('#routes tr[data-number="+33123456789"]')
    assert "support" in await listed.inner_text()
    assert await listed.locator(".badge.source-managed").inner_text() == "managed"
    assert await page.locator('#routes tr[data-number="+1555*"] .badge.source-config').count() == 1
    await page.screenshot(path=str(SCREENSHOTS / "telephony.png"), full_page=True)

    await listed.get_by_role("link", name="Delete").click()
    await page.wait_for_load_state()
    assert page.url == base + "/admin/telephony/+33123456789/delete"
    await page.click("#confirm-delete")
    await page.wait_for_load_state()
    assert await page.locator(".flash").inner_text() == "Route +33123456789 deleted."
    assert await page.locator('#routes tr[data-number="+33123456789"]').count() == 0
    assert app[keys.call_routes].table.find("+33123456789") is None
    async with aiohttp.ClientSession() as http:  # the API agrees with the page
        async with http.get(base + "/api/telephony/routes", headers=BEARER) as response:
            assert "+33123456789" not in [r["number"] for r in await response.json()]
