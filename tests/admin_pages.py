"""Helpers for the admin and chat page tests: a gateway with the auth plugin and an admin key, logins, secrets."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from harness import gateway_settings

ADMIN_KEY = "gk_admin-pages-test-key-0000000000000000000"  # the bootstrap admin key (GATEWAY_ADMIN_API_KEY)
SESSION_SECRET = "admin-cookie-signing-secret-for-tests-0123456789"
PLUGINS = "plugins:\n  - name: auth\n    admin_groups: [ops]\n  - name: workflow\n"
ADMIN_CONFIG = "admin:\n  session_secret: {$env: ADMIN_SESSION_SECRET}\n"

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_DATA = re.compile(r'data-csrf-token="([^"]+)"')
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.I)
INLINE_STYLE = re.compile(r"\sstyle\s*=", re.I)


def admin_settings(tmp_path, fake: Any, config: str = "", environ: Mapping[str, str] | None = None, *,
                   plugins: str = PLUGINS, admin: str = ADMIN_CONFIG):
    """Settings with auth (admin group "ops"), workflow, the admin key and a cookie secret, plus `config`."""
    env = {"GATEWAY_ADMIN_API_KEY": ADMIN_KEY, "ADMIN_SESSION_SECRET": SESSION_SECRET, **(environ or {})}
    return gateway_settings(tmp_path, fake.base_url, fake.api_key, config=plugins + admin + config, environ=env)


def csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html) or CSRF_DATA.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def login(client: Any, key: str = ADMIN_KEY, next_path: str = "/admin/workflows") -> Any:
    """Post the login form as a browser would (GET it for the cookie and token first); the 303 or the page."""
    form = await client.get("/admin/login")
    token = csrf_of(await form.text())
    return await client.post("/admin/login", data={"csrf_token": token, "api_key": key, "next": next_path},
                             allow_redirects=False)


def leaked(text: str, secrets: Iterable[str]) -> list[str]:
    """The secrets that appear in `text`, shown by their first characters only."""
    return [secret[:6] + "…" for secret in secrets if secret and secret in text]
