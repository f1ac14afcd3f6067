"""The admin and chat pages in a real headless Chromium (Debian's), driven by Playwright for Python.

One browser serves the whole module; each test starts its own gateway (in this process, on a free
port) in front of the fake OpenAI upstream. The chat page loads a stand-in of the ChatKit web
component from another origin, as it would load OpenAI's from their CDN. Screenshots of every page
go to test-output/screenshots/ for a person to look at.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from admin_pages import ADMIN_KEY, SESSION_SECRET, admin_settings
from aiohttp import web
from tests.fakes.openai_upstream import FakeOpenAI, start_fake
from tests.support.fixtures import require_binary

from gateway import keys
from gateway.app import create_app
from plugins import REGISTRY

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"
STAND_IN = Path(__file__).parent / "fakes" / "chatkit_stand_in.js"
SUPPORT = "workflows:\n  - {slug: support, workflow_id: wf_support, label: Support, description: Answers customers}\n"



async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[object]:
    require_binary(None if CHROMIUM.exists() else f"{CHROMIUM} is missing: run scripts/install-test-deps.sh")
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chatkit_cdn() -> AsyncIterator[str]:
    """The stand-in of OpenAI's chatkit.js, served from another origin, as the CDN would serve it."""
    app = web.Application()

    async def script(request: web.Request) -> web.Response:
        return web.Response(body=STAND_IN.read_bytes(), content_type="text/javascript")

    app.router.add_get("/deployments/chatkit/chatkit.js", script)
    runner, url = await serve(app)
    yield url + "/deployments/chatkit/chatkit.js"
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def fake() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    runner, fake.base_url = await start_fake(fake)
    yield fake
    await runner.cleanup()


class Gateways:
    """Gateways started for one test, in front of the fake, their chat page using the stand-in."""

    def __init__(self, tmp_path: Path, fake: FakeOpenAI, chatkit_script: str) -> None:
        self.tmp_path, self.fake, self.chatkit_script = tmp_path, fake, chatkit_script
        self.runners: list[web.AppRunner] = []
        self.apps: dict[str, web.Application] = {}

    async def __call__(self, config: str = "") -> str:
        """A started gateway with `config` added to its config.yaml; its base URL."""
        admin = ("admin:\n  session_secret: {$env: ADMIN_SESSION_SECRET}\n"
                 f"  chatkit_script: {self.chatkit_script}\n  chatkit_domain_key: domain_pk_test\n")
        app = create_app(admin_settings(self.tmp_path, self.fake, config=config, admin=admin), REGISTRY, {})
        runner, url = await serve(app)
        self.runners.append(runner)
        self.apps[url] = app
        return url

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def start(tmp_path, fake, chatkit_cdn) -> AsyncIterator[Gateways]:
    gateways = Gateways(tmp_path, fake, chatkit_cdn)
    yield gateways
    await gateways.close()


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser):
    context = await browser.new_context(locale="en-US", viewport={"width": 1280, "height": 860})
    yield context
    await context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(context):
    page = await context.new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))  # admin.js confirm() prompts
    return page


async def sign_in(page, base: str, key: str = ADMIN_KEY) -> None:
    await page.goto(base + "/admin/login")
    await page.fill("#api_key", key)
    await page.click("form button.primary")
    await page.wait_for_load_state()


async def shot(page, name: str) -> None:
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def row(page, slug: str):
    return page.locator(f'#workflows tr[data-slug="{slug}"]')


# The admin pages ------------------------------------------------------------------------------------

async def test_an_admin_signs_in_adds_a_hosted_workflow_and_sees_it_listed(page, start):
    base = await start()
    await page.goto(base + "/admin/workflows")
    assert page.url.startswith(base + "/admin/login?next=")
    await shot(page, "login")
    await sign_in(page, base)
    assert page.url == base + "/admin/workflows"
    await page.fill("#f-slug", "assistant-voix")
    await page.fill("#f-workflow_id", "wf_68f1c0ffee")
    await page.fill("#f-label", "Assistant vocal")
    await page.fill("#f-description", "Answers the phone")
    await page.click("#add button.primary")
    await page.wait_for_load_state()
    assert await page.locator(".flash").inner_text() == "Workflow assistant-voix added."
    listed = row(page, "assistant-voix")
    assert "Assistant vocal" in await listed.inner_text() and "wf_68f1c0ffee" in await listed.inner_text()
    assert await listed.locator(".badge.source-managed").inner_text() == "managed"
    assert await listed.locator(".badge.default").count() == 1  # the first managed entry is the default
    await shot(page, "workflows")


async def test_the_add_form_shows_the_validation_error_next_to_its_field(page, start):
    base = await start(SUPPORT)
    await sign_in(page, base)
    await page.fill("#f-slug", "support")
    await page.fill("#f-workflow_id", "wf_other")
    await page.click("#add button.primary")
    await page.wait_for_load_state()
    assert await page.locator("#e-slug").inner_text() == "This slug is already taken (config)."
    await page.fill("#f-slug", "Support Pro")
    await page.fill("#f-workflow_id", "workflow-7")
    await page.click("#add button.primary")
    await page.wait_for_load_state()
    assert "Not a slug" in await page.locator("#e-slug").inner_text()
    assert await page.locator("#f-slug").get_attribute("aria-invalid") == "true"
    assert await page.input_value("#f-workflow_id") == "workflow-7"  # what was typed stays
    await shot(page, "workflows-validation-error")


async def test_without_javascript_a_workflow_becomes_start_and_is_deleted_after_confirmation(browser, start):
    base = await start()
    context = await browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    try:
        await sign_in(page, base)
        for slug in ("first", "second"):
            await page.fill("#f-slug", slug)
            await page.fill("#f-workflow_id", f"wf_{slug}")
            await page.click("#add button.primary")
            await page.wait_for_load_state()
        await row(page, "second").get_by_role("button", name="Use as Start workflow").click()
        await page.wait_for_load_state()
        assert await row(page, "second").locator(".badge.start").inner_text() == "Start"
        assert await row(page, "first").locator(".badge").count() == 1  # only its source: no longer the default
        await row(page, "second").get_by_role("link", name="Delete").click()
        await page.wait_for_load_state()
        assert page.url == base + "/admin/workflows/second/delete"
        assert "It is the Start workflow" in await page.inner_text("main")
        await shot(page, "workflow-delete-confirmation")
        await page.click("#confirm-delete")
        await page.wait_for_load_state()
        assert await page.locator(".flash").inner_text() == "Workflow second deleted."
        assert await row(page, "second").count() == 0 and await row(page, "first").count() == 1
    finally:
        await context.close()


async def test_an_admin_cancels_a_session(page, start, fake):
    base = await start(SUPPORT)
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/api/chatkit/session", json={"hosted_workflow_slug": "support"},
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as response:
            session_id = (await response.json())["session_id"]
    await sign_in(page, base)
    await page.click("nav >> text=Sessions")
    listed = page.locator(f'#sessions tr[data-session="{session_id}"]')
    assert "support" in await listed.inner_text() and "active" in await listed.inner_text()
    await shot(page, "sessions")
    await listed.get_by_role("button", name="Cancel").click()  # admin.js asks first; the dialog is accepted
    await page.wait_for_url("**/admin/sessions?done=*")
    assert "cancelled" in await page.locator(f'#sessions tr[data-session="{session_id}"]').inner_text()
    assert fake.sessions[session_id].status(fake.now()) == "cancelled"


async def test_an_admin_creates_a_key_sees_it_once_and_revokes_it(page, start):
    base = await start()
    await sign_in(page, base)
    await page.click("nav >> text=API keys")
    await page.fill("#f-name", "ci-bot")
    await page.click("form[action='/admin/keys'] button.primary")
    await page.wait_for_load_state()
    key = (await page.inner_text("#new-key")).strip()
    assert key.startswith("gk_") and len(key) > 40
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/api/chatkit/hosted", headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status == 200
        await page.goto(base + "/admin/keys")
        assert key not in await page.content()
        await shot(page, "keys")
        ci_bot = page.locator('#keys tr[data-key="ci-bot"]')
        assert key[:9] in await ci_bot.inner_text()
        await ci_bot.get_by_role("button", name="Revoke").click()
        await page.wait_for_url("**/admin/keys?done=*")
        assert "revoked" in await page.locator('#keys tr[data-key="ci-bot"]').inner_text()
        async with http.get(base + "/api/chatkit/hosted", headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status == 401


async def test_the_audit_and_status_pages_show_what_happened(page, start):
    base = await start(SUPPORT)
    await sign_in(page, base)
    await page.fill("#f-slug", "billing")
    await page.fill("#f-workflow_id", "wf_billing")
    await page.click("#add button.primary")
    await page.wait_for_load_state()
    await page.goto(base + "/admin/audit")
    first = page.locator("#audit tbody tr").first
    assert "workflow.create" in await first.inner_text()  # newest first
    await page.fill("input[name=object]", "workflow:billing")
    await page.click(".filters button")
    await page.wait_for_load_state()
    assert await page.locator("#audit tbody tr").count() == 1
    await shot(page, "audit")
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.get(base + "/api/chatkit/hosted", headers={"Authorization": f"Bearer {ADMIN_KEY}"}):
                pass
    await page.goto(base + "/admin/status")
    assert "200 OK" in await page.inner_text("#upstream")
    assert await page.locator("#charts svg polyline").count() >= 1
    await shot(page, "status")


async def test_the_french_page_shows_the_seeds_words(browser, start):
    base = await start(SUPPORT)
    context = await browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    try:
        await sign_in(page, base)
        text = await page.inner_text("body")
        for words in ("Workflows hébergés", "Ajouter", "Slug", "Libellé", "Description",
                      "Identifiant du workflow OpenAI", "Utiliser dans l'étape Start"):
            assert words in text, words
        await shot(page, "workflows-fr")
        await page.click("text=EN")
        assert "Hosted workflows" in await page.inner_text("h1")
    finally:
        await context.close()


async def test_a_non_admin_is_refused_and_a_form_without_its_token_too(page, start):
    base = await start()
    user_key = await start.apps[base][keys.api_keys].create("alice", admin=False, actor="test")
    await sign_in(page, base, user_key)
    assert "This page is for administrators" in await page.inner_text("main")
    await shot(page, "forbidden")
    await sign_in(page, base)
    await page.fill("#f-slug", "sneaky")
    await page.fill("#f-workflow_id", "wf_sneaky")
    await page.eval_on_selector("#add input[name=csrf_token]", "input => input.remove()")
    await page.click("#add button.primary")
    await page.wait_for_load_state()
    assert await page.inner_text("h1") == "Form expired"
    assert start.apps[base][keys.registry].find("sneaky") is None


async def test_no_page_source_or_visible_text_contains_a_secret(page, start, fake):
    base = await start(SUPPORT)
    await sign_in(page, base)
    await page.goto(base + "/chat")
    await page.wait_for_function("() => window.chatkitStandIn && window.chatkitStandIn.secrets.length > 0")
    client_secret = await page.evaluate("window.chatkitStandIn.secrets[0].secret")
    cookies = [c["value"] for c in await page.context.cookies() if c["name"] == "ckg_session"]
    secrets = [ADMIN_KEY, fake.api_key, SESSION_SECRET, client_secret, *cookies]
    assert all(secrets)
    for path in ("/admin/workflows", "/admin/sessions", "/admin/keys", "/admin/audit", "/admin/status", "/chat"):
        await page.goto(base + path)
        source, text = await page.content(), await page.inner_text("body")
        assert not [s[:6] for s in secrets if s in source or s in text], path


# The chat page ----------------------------------------------------------------------------------------

async def test_the_chat_page_mounts_chatkit_with_a_getClientSecret_that_refreshes_before_expiry(page, start, fake):
    short = ("workflows:\n  - {slug: support, workflow_id: wf_support, label: Support,\n"
             "     session: {expires_after: 3}}\n")
    base = await start(short)
    await sign_in(page, base)
    await page.goto(base + "/chat")
    await page.wait_for_function("() => window.chatkitStandIn && window.chatkitStandIn.secrets.length > 0")
    record = await page.evaluate("window.chatkitStandIn")
    assert record["options"] == [{"keys": ["getClientSecret"], "url": None, "domainKey": None,
                                  "getClientSecret": "function"}]
    first = record["secrets"][0]["secret"]
    session = next(s for s in fake.sessions.values() if s.client_secret == first)
    assert session.workflow["id"] == "wf_support" and session.expires_at - session.created_at <= 3
    assert await conversation_works(base, first)
    await shot(page, "chat")
    # The helper mints the next secret before the first expires; ChatKit asking again gets it at once.
    await asyncio.sleep(max(0.0, session.expires_at - fake.now() - 0.3))
    second = await page.evaluate("(current) => document.querySelector('openai-chatkit').ask(current)", first)
    assert second and second != first
    renewed = next(s for s in fake.sessions.values() if s.client_secret == second)
    assert renewed.created_at < session.expires_at  # minted before the first one expired
    assert await conversation_works(base, second)
    assert len([s for s in fake.sessions.values() if s.workflow["id"] == "wf_support"]) == 2
    assert (await page.evaluate("window.chatkitStandIn.errors")) == []


async def conversation_works(base: str, client_secret: str) -> bool:
    """The secret lists threads through the gateway's relay, as the ChatKit client would use it."""
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/api/chatkit/conversation", json={"type": "threads.list", "params": {}},
                             headers={"Authorization": f"Bearer {client_secret}"}) as response:
            return response.status == 200 and "data" in await response.json()


async def test_each_error_code_shows_its_message_and_leaves_hosted_mode(page, start):
    base = await start()
    await sign_in(page, base)
    await page.goto(base + "/chat")
    message = page.locator("#error-hosted_workflow_not_configured")
    await message.wait_for(state="visible")
    assert await message.inner_text() == "No hosted workflow is configured: hosted mode is turned off."
    assert await page.locator("openai-chatkit").count() == 0
    assert await page.evaluate("window.chatkitStandIn.options") == []
    await start.apps[base][keys.registry].create({"slug": "support", "workflow_id": "wf_support"}, "test")
    await page.goto(base + "/chat?workflow=retired")
    message = page.locator("#error-hosted_workflow_not_found")
    await message.wait_for(state="visible")
    assert await message.inner_text() == "The requested hosted workflow was not found: hosted mode is turned off."
    assert await page.locator("openai-chatkit").count() == 0
    await shot(page, "chat-not-found")


async def test_a_slug_served_by_a_chatkit_server_is_mounted_with_api_url(page, start):
    server = "workflows:\n  - {slug: helpdesk, kind: server, url: 'http://127.0.0.1:9/chatkit'}\n"
    base = await start(server)
    await sign_in(page, base)
    await page.goto(base + "/chat")
    await page.wait_for_function("() => window.chatkitStandIn && window.chatkitStandIn.options.length > 0")
    options = await page.evaluate("window.chatkitStandIn.options[0]")
    assert options == {"keys": ["domainKey", "url"], "url": base + "/api/chatkit/w/helpdesk",
                       "domainKey": "domain_pk_test", "getClientSecret": "undefined"}


async def test_the_js_helper_raises_typed_errors_for_other_front_ends(page, start):
    base = await start(SUPPORT)
    await page.goto(base + "/healthz")
    outcome = await page.evaluate("""async ([key]) => {
        const helper = await import("/static/chatkit-gateway.js");
        const headers = { Authorization: `Bearer ${key}` };
        const api = await helper.chatKitApi({ workflow: "support", headers });
        const secret = await api.getClientSecret();
        const again = await api.getClientSecret();
        try {
            await helper.chatKitApi({ workflow: "retired", headers });
        } catch (error) {
            return { secret, again, notFound: error instanceof helper.HostedWorkflowNotFound, code: error.code };
        }
        return null;
    }""", [ADMIN_KEY])
    assert outcome["secret"].startswith("ek_") and outcome["again"] == outcome["secret"]  # cached while fresh
    assert outcome["notFound"] and outcome["code"] == "hosted_workflow_not_found"

