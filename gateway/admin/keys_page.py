"""The API keys page: list, create (the key is shown in that one answer only), revoke.

Keys go through the auth plugin's KeyBook, as the CLI's do: memory and the store change together.
"""

from __future__ import annotations

from aiohttp import web

from .. import keys
from ..storage import Conflict
from . import i18n
from .forms import posted
from .render import page, redirect


async def listing(request: web.Request, *, form: dict[str, str] | None = None, errors_: dict[str, str] | None = None,
                  new_key: str | None = None, new_key_name: str | None = None, status: int = 200) -> web.Response:
    config = request.config_dict
    enabled = keys.api_keys in config
    rows = await config[keys.store].list_keys() if enabled else []
    form = form or {"name": "", "admin": ""}
    return page(request, "keys.html", status=status, section="keys", enabled=enabled, rows=rows, form=form,
                errors=errors_ or {}, new_key=new_key, new_key_name=new_key_name)


async def show(request: web.Request) -> web.Response:
    return await listing(request)


async def create(request: web.Request) -> web.Response:
    form = await posted(request, ("name", "admin"))
    t = i18n.translator(request[keys.page_language])
    if not form["name"]:
        return await listing(request, form=form, errors_={"name": t("error.required")}, status=400)
    try:
        key = await request.config_dict[keys.api_keys].create(form["name"], admin=form["admin"] == "1",
                                                              actor=request[keys.page_user].id)
    except Conflict:
        return await listing(request, form=form, errors_={"name": t("error.key_name_taken")}, status=409)
    return await listing(request, new_key=key, new_key_name=form["name"], status=201)


async def revoke(request: web.Request) -> web.Response:
    name = (await posted(request, ("name",)))["name"]
    await request.config_dict[keys.api_keys].revoke(name, actor=request[keys.page_user].id)
    return redirect("/admin/keys", done="key_revoked", name=name)
