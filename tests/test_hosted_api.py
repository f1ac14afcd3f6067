"""The hosted-workflow HTTP API: who may do what, what each sees, conflicts, changes and their audit."""

from __future__ import annotations

import asyncio

import pytest

from gateway import keys
from tests.hosted_harness import ADMIN, ALICE, start

CONFIG = """
workflows:
  - {slug: from-file, workflow_id: wf_file, label: From the file, description: Declared in config.yaml}
"""
PUBLIC_FIELDS = {"slug", "kind", "label", "description", "available", "default", "source"}


async def test_listing_needs_an_authenticated_caller(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG)
    response = await gateway.client.get("/api/chatkit/hosted")
    assert response.status == 401
    assert (await response.json())["error"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_users_see_the_public_fields_and_admins_also_the_remote_ids(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG)
    [row] = await gateway.listing(ALICE)
    assert row == {"slug": "from-file", "kind": "hosted", "label": "From the file",
                   "description": "Declared in config.yaml", "available": True, "default": True, "source": "config"}
    [row] = await gateway.listing(ADMIN)
    assert set(row) - PUBLIC_FIELDS == {"workflow_id", "version", "state_variables", "session", "managed",
                                        "shadowed_by", "created_at"}
    assert (row["workflow_id"], row["managed"], row["shadowed_by"]) == ("wf_file", False, None)
    assert "wf_file" not in str(await gateway.listing(ALICE))


async def test_only_admins_change_anything(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG)
    changes = [("POST", "/api/chatkit/hosted", {"slug": "x", "workflow_id": "wf_x"}),
               ("PATCH", "/api/chatkit/hosted/from-file", {"label": "y"}),
               ("DELETE", "/api/chatkit/hosted/from-file", None),
               ("PUT", "/api/chatkit/start", {"workflow": "from-file"}),
               ("POST", "/api/admin/reload", None)]
    for method, path, body in changes:
        assert (await gateway.call(method, path, {}, json=body))[1]["error"] == "unauthenticated", path
        assert (await gateway.call(method, path, ALICE, json=body))[1]["error"] == "forbidden", path


async def test_without_an_auth_plugin_the_api_is_closed_not_open(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG, plugins="plugins: [workflow]\n")
    for method, path in (("GET", "/api/chatkit/hosted"), ("POST", "/api/chatkit/hosted"),
                         ("DELETE", "/api/chatkit/hosted/from-file"), ("PUT", "/api/chatkit/start"),
                         ("POST", "/api/admin/reload"), ("POST", "/api/chatkit/session")):
        status, body = await gateway.call(method, path, ADMIN, json={"slug": "x", "workflow_id": "wf_x"})
        assert (status, body["error"]) == (401, "unauthenticated"), path


async def test_an_admin_creates_an_entry_with_201_and_it_is_usable_at_once(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG)
    response = await gateway.client.post("/api/chatkit/hosted", headers=ADMIN, json={
        "slug": "assistant-voix", "workflow_id": "wf_voix", "description": "Répond au téléphone",
        "version": "2", "state_variables": {"lang": "fr"}, "session": {"expires_after": 120}})
    body = await response.json()
    assert response.status == 201
    assert response.headers["Location"] == "/api/chatkit/hosted/assistant-voix"
    assert {k: body[k] for k in ("slug", "label", "workflow_id", "version", "source", "managed", "default")} == {
        "slug": "assistant-voix", "label": "assistant-voix", "workflow_id": "wf_voix", "version": "2",
        "source": "managed", "managed": True, "default": True}
    assert body["session"] == {"expires_after": 120}
    status, session = await gateway.session()
    assert (status, session["workflow"]) == (200, {"slug": "assistant-voix", "label": "assistant-voix"})
    sent = fake_openai.requests_to("/v1/chatkit/sessions")[-1].json()
    assert sent["workflow"] == {"id": "wf_voix", "version": "2", "state_variables": {"lang": "fr"}}
    assert sent["expires_after"]["seconds"] == 120


async def test_a_slug_that_exists_in_any_source_is_409_conflict(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG, environ={"CHATKIT_WORKFLOW_ID": "wf_legacy"})
    await gateway.create(slug="managed-one", workflow_id="wf_m")
    for slug, source in (("from-file", "config"), ("Hosted-Workflow", "legacy"), ("MANAGED-ONE", "managed")):
        status, body = await gateway.create(slug=slug, workflow_id="wf_again")
        assert (status, body["error"], body["slug"], body["source"]) == (409, "hosted_workflow_conflict",
                                                                          slug.lower(), source)


async def test_concurrent_creates_of_one_slug_give_one_201_and_409s_never_a_500(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai)
    results = await asyncio.gather(*(gateway.create(slug="race", workflow_id=f"wf_r{i}") for i in range(5)))
    assert sorted(status for status, _ in results) == [201, 409, 409, 409, 409]
    assert [row["slug"] for row in await gateway.listing()] == ["race"]


async def test_two_workers_racing_on_one_database_give_one_201_and_one_409(aiohttp_client, tmp_path, fake_openai):
    first = await start(aiohttp_client, tmp_path, fake_openai)
    second = await start(aiohttp_client, tmp_path, fake_openai)  # same config, same SQLite file
    results = await asyncio.gather(first.create(slug="race", workflow_id="wf_a"),
                                   second.create(slug="race", workflow_id="wf_b"))
    assert sorted(status for status, _ in results) == [201, 409]
    assert len(await first.app[keys.store].list_workflows()) == 1


async def test_patch_changes_a_managed_entry_but_never_its_slug(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG)
    await gateway.create(slug="desk", workflow_id="wf_desk", label="Desk", version="1")
    status, body = await gateway.call("PATCH", "/api/chatkit/hosted/DESK", ADMIN,
                                      json={"label": "Help desk", "version": None, "workflow_id": "wf_desk2"})
    assert status == 200
    assert (body["slug"], body["label"], body["version"], body["workflow_id"]) == ("desk", "Help desk", None, "wf_desk2")
    status, body = await gateway.call("PATCH", "/api/chatkit/hosted/desk", ADMIN, json={"slug": "other"})
    assert (status, body["error"], body["field"]) == (400, "invalid_field", "slug")
    status, body = await gateway.call("PATCH", "/api/chatkit/hosted/desk", ADMIN, json={"workflow_id": "wf-bad"})
    assert (status, body["error"]) == (400, "invalid_workflow_id")
    status, body = await gateway.call("PATCH", "/api/chatkit/hosted/from-file", ADMIN, json={"label": "x"})
    assert (status, body["error"], body["slug"]) == (409, "hosted_workflow_read_only", "from-file")
    [desk] = [row for row in await gateway.listing() if row["slug"] == "desk"]
    assert (desk["label"], desk["workflow_id"]) == ("Help desk", "wf_desk2")


async def test_delete_removes_managed_entries_only(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG, environ={"CHATKIT_WORKFLOW_ID": "wf_legacy"})
    await gateway.create(slug="temp", workflow_id="wf_temp")
    response = await gateway.client.delete("/api/chatkit/hosted/Temp", headers=ADMIN)
    assert (response.status, await response.read()) == (204, b"")
    status, body = await gateway.call("DELETE", "/api/chatkit/hosted/temp", ADMIN)
    assert (status, body["error"], body["slug"]) == (404, "hosted_workflow_not_found", "temp")
    for slug, source in (("from-file", "config"), ("hosted-workflow", "legacy")):
        status, body = await gateway.call("DELETE", f"/api/chatkit/hosted/{slug}", ADMIN)
        assert (status, body["error"], body["source"]) == (409, "hosted_workflow_read_only", source)
    status, body = await gateway.call("DELETE", "/api/chatkit/hosted/Not%20A%20Slug", ADMIN)
    assert (status, body["error"]) == (400, "invalid_slug")


async def test_put_start_needs_an_existing_slug(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG)
    status, body = await gateway.call("PUT", "/api/chatkit/start", ADMIN, json={"workflow": "ghost"})
    assert (status, body["error"], body["slug"]) == (404, "hosted_workflow_not_found", "ghost")
    status, body = await gateway.call("PUT", "/api/chatkit/start", ADMIN, json={})
    assert (status, body["error"], body["field"]) == (400, "invalid_field", "workflow")
    status, body = await gateway.call("PUT", "/api/chatkit/start", ADMIN, data="not json")
    assert (status, body["error"]) == (400, "invalid_json")


async def test_every_change_is_audited_with_who_when_what_before_and_after(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG)
    await gateway.create(slug="audited", workflow_id="wf_a1")
    await gateway.call("PATCH", "/api/chatkit/hosted/audited", ADMIN, json={"workflow_id": "wf_a2"})
    await gateway.call("PUT", "/api/chatkit/start", ADMIN, json={"workflow": "audited"})
    await gateway.call("DELETE", "/api/chatkit/hosted/audited", ADMIN)
    entries = list(reversed(await gateway.app[keys.store].list_audit()))
    assert [(e.actor, e.action, e.object) for e in entries] == [
        ("key:root", "workflow.create", "workflow:audited"), ("key:root", "workflow.update", "workflow:audited"),
        ("key:root", "start.set", "start"), ("key:root", "workflow.delete", "workflow:audited")]
    create, update, start_set, delete = entries
    assert (create.before, create.after["workflow_id"]) == (None, "wf_a1")
    assert (update.before["workflow_id"], update.after["workflow_id"]) == ("wf_a1", "wf_a2")
    assert (start_set.before, start_set.after) == (None, "audited")
    assert (delete.before["workflow_id"], delete.after) == ("wf_a2", None)
    assert all(e.at > 0 for e in entries)


async def test_an_entry_becomes_unavailable_after_an_upstream_auth_or_not_found_failure(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, """
workflows:
  - {slug: good, workflow_id: wf_good}
  - {slug: wrong-key, workflow_id: wf_fail401}
  - {slug: gone, workflow_id: wf_fail404}
  - {slug: busy, workflow_id: wf_fail500}
""")
    for slug in ("good", "wrong-key", "gone", "busy"):
        await gateway.session(slug=slug)
    available = {row["slug"]: row["available"] for row in await gateway.listing(ALICE)}
    assert available == {"good": True, "wrong-key": False, "gone": False, "busy": True}


async def test_without_an_upstream_key_nothing_is_available(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG, api_key=None)
    assert [row["available"] for row in await gateway.listing(ALICE)] == [False]
    status, body = await gateway.session()
    assert (status, body["error"]) == (503, "upstream_not_configured")


@pytest.mark.parametrize("body", ["[1, 2]", "{not json", '"a string"'])
async def test_a_body_that_is_not_a_json_object_is_400_invalid_json(aiohttp_client, tmp_path, fake_openai, body):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, CONFIG)
    for path in ("/api/chatkit/hosted", "/api/chatkit/session"):
        status, answer = await gateway.call("POST", path, ADMIN, data=body, headers={"Content-Type": "application/json"})
        assert (status, answer["error"]) == (400, "invalid_json"), path
