"""The registry: three sources merged by slug, the Start step and the default, one slug rule, reloads,
and the workflow plugin that names each request's workflow."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from gateway import keys
from gateway.__main__ import main
from gateway.registry import canonical_slug
from gateway.schema import ConfigError
from gateway.settings import load_settings
from gateway.storage import Store
from tests.hosted_harness import ADMIN, ALICE, eventually, start

TWO = """
workflows:
  - {slug: zeta, workflow_id: wf_zeta}
  - {slug: shared, workflow_id: wf_configshared}
"""


def slugs(rows):
    return [(row["slug"], row["source"]) for row in rows]


def default_of(rows):
    return [row["slug"] for row in rows if row["default"]]


async def test_sources_merge_managed_oldest_first_then_config_then_legacy_and_the_first_wins(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, "workflows:\n  - {slug: zeta, workflow_id: wf_zeta}\n",
                          environ={"CHATKIT_WORKFLOW_ID": "wf_legacy"})
    assert (await gateway.create(slug="shared", workflow_id="wf_managedshared"))[0] == 201
    assert (await gateway.create(slug="alpha", workflow_id="wf_alpha"))[0] == 201
    # config.yaml later declares slugs that another source already has
    gateway.config.write_text(gateway.config.read_text() + """  - {slug: hosted-workflow, workflow_id: wf_yaml}
  - {slug: shared, workflow_id: wf_configshared}
""")
    assert (await gateway.call("POST", "/api/admin/reload", ADMIN))[0] == 200
    rows = await gateway.listing()
    assert slugs(rows) == [("shared", "managed"), ("alpha", "managed"), ("zeta", "config"),
                           ("hosted-workflow", "config"), ("shared", "config"), ("hosted-workflow", "legacy")]
    assert [row["shadowed_by"] for row in rows] == [None, None, None, None, "managed", "config"]
    status, body = await gateway.session(slug="shared")
    assert (status, fake_openai.sessions[body["session_id"]].workflow["id"]) == (200, "wf_managedshared")


async def test_the_legacy_variable_is_listed_as_hosted_workflow(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, environ={"CHATKIT_WORKFLOW_ID": "wf_legacy"})
    [row] = await gateway.listing()
    assert (row["slug"], row["label"], row["workflow_id"], row["source"], row["default"]) == (
        "hosted-workflow", "Hosted ChatKit workflow", "wf_legacy", "legacy", True)
    status, body = await gateway.session()
    assert (status, body["workflow"]) == (200, {"slug": "hosted-workflow", "label": "Hosted ChatKit workflow"})


async def test_the_default_is_the_start_slug_then_the_first_managed_then_the_first_entry(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, TWO + "start: {workflow: Shared}\n")
    assert default_of(await gateway.listing()) == ["shared"]  # config.yaml's Start step
    await gateway.create(slug="first", workflow_id="wf_first")
    await gateway.create(slug="second", workflow_id="wf_second")
    assert default_of(await gateway.listing()) == ["shared"]  # the Start step still resolves
    status, body = await gateway.call("PUT", "/api/chatkit/start", ADMIN, json={"workflow": "SECOND"})
    assert (status, body) == (200, {"workflow": "second", "default": "second"})  # the API wins over the file
    _, session = await gateway.session()
    assert session["workflow"]["slug"] == "second"
    await gateway.call("DELETE", "/api/chatkit/hosted/second", ADMIN)
    assert default_of(await gateway.listing()) == ["first"]  # the Start slug no longer resolves: first managed
    await gateway.call("PUT", "/api/chatkit/start", ADMIN, json={"workflow": None})
    assert default_of(await gateway.listing()) == ["shared"]  # back to config.yaml's choice


async def test_without_start_or_managed_entries_the_first_entry_is_the_default(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, TWO, environ={"CHATKIT_WORKFLOW_ID": "wf_legacy"})
    _, body = await gateway.session()
    assert body["workflow"]["slug"] == "zeta"


async def test_nothing_configured_is_400_hosted_workflow_not_configured(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai)
    status, body = await gateway.session()
    assert status == 400
    assert body == {"error": "hosted_workflow_not_configured", "message": body["message"],
                    "request_id": body["request_id"]}
    status, body = await gateway.session(slug="anything")
    assert (status, body["error"], body["slug"]) == (404, "hosted_workflow_not_found", "anything")


async def test_slugs_are_canonical_and_case_insensitive_in_create_session_and_delete(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai)
    status, body = await gateway.create(slug="Support_Pro-2", workflow_id="wf_sp")
    assert (status, body["slug"]) == (201, "support_pro-2")
    status, body = await gateway.session(slug="SUPPORT_PRO-2")
    assert (status, body["workflow"]["slug"]) == (200, "support_pro-2")
    status, body = await gateway.create(slug="support_PRO-2", workflow_id="wf_other")
    assert (status, body["error"], body["slug"]) == (409, "hosted_workflow_conflict", "support_pro-2")
    assert (await gateway.call("DELETE", "/api/chatkit/hosted/Support_Pro-2", ADMIN))[0] == 204
    status, body = await gateway.session(slug="support_pro-2")
    assert (status, body["error"], body["slug"]) == (404, "hosted_workflow_not_found", "support_pro-2")


@pytest.mark.parametrize("slug", ["Support Pro!", "-lead", "équipe", "a" * 64, "", "sup/port", 42])
async def test_anything_but_a_slug_is_400_invalid_slug_never_rewritten(aiohttp_client, tmp_path, fake_openai, slug):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, TWO)
    status, body = await gateway.create(slug=slug, workflow_id="wf_x")
    assert (status, body["error"], body["slug"]) == (400, "invalid_slug", slug)
    status, body = await gateway.session(slug=slug)
    assert (status, body["error"]) == (400, "invalid_slug")
    assert await gateway.listing() and all(row["slug"] in ("zeta", "shared") for row in await gateway.listing())


def test_the_canonical_slug_only_lowers_the_case():
    assert canonical_slug("Assistant-Voix_2") == "assistant-voix_2"
    assert canonical_slug("\u212a") is None  # the Kelvin sign would lower to "k": not ASCII, not a slug
    assert canonical_slug(" support") is None and canonical_slug(None) is None


@pytest.mark.parametrize(("entry", "code", "field"), [
    ({"workflow_id": "wf-remote-1"}, "invalid_workflow_id", None),
    ({"workflow_id": "remote-42"}, "invalid_workflow_id", None),
    ({"workflow_id": None}, "invalid_workflow_id", None),
    ({"label": "x" * 129}, "invalid_field", "label"),
    ({"description": "x" * 513}, "invalid_field", "description"),
    ({"version": "latest"}, "invalid_field", "version"),
    ({"version": "v2"}, "invalid_field", "version"),
    ({"state_variables": {"nested": {"a": 1}}}, "invalid_field", "state_variables.nested"),
    ({"state_variables": {"k" * 65: 1}}, "invalid_field", "state_variables." + "k" * 65),
    ({"session": {"expires_after": 0}}, "invalid_field", "session.expires_after"),
    ({"session": {"chatkit_configuration": {"file_upload": {"max_file_size": 513}}}}, "invalid_field",
     "session.chatkit_configuration.file_upload.max_file_size"),
    ({"kind": "robot"}, "invalid_field", "kind"),
    ({"source": "config"}, "invalid_field", "source"),
    ({"colour": "blue"}, "invalid_field", "colour"),
])
async def test_each_invalid_field_is_400_with_its_code(aiohttp_client, tmp_path, fake_openai, entry, code, field):
    gateway = await start(aiohttp_client, tmp_path, fake_openai)
    status, body = await gateway.create(**{"slug": "ok", "workflow_id": "wf_ok", **entry})
    assert (status, body["error"], body.get("field")) == (400, code, field)
    assert await gateway.listing() == []


async def test_a_blank_label_defaults_to_the_slug_and_a_blank_description_to_none(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai)
    status, body = await gateway.create(slug="plain", workflow_id="wf_plain", label="  ", description="")
    assert (status, body["label"], body["description"]) == (201, "plain", None)


@pytest.mark.parametrize(("config", "environ", "message"), [
    ("workflows:\n  - {slug: a, workflow_id: wf_a}\n  - {slug: b, workflow_id: wf-b}\n", {},
     "workflows[1].workflow_id: expected wf_ followed by letters and digits"),
    ("workflows:\n  - {slug: A, workflow_id: wf_a}\n  - {slug: a, workflow_id: wf_b}\n", {},
     "workflows[1].slug: 'a' is already declared by workflows[0]"),
    ("workflows:\n  - {slug: a, workflow_id: wf_a, version: latest}\n", {}, "workflows[0].version: 'latest'"),
    ("workflows:\n  - {slug: a, workflow_id: wf_a, source: managed}\n", {}, "workflows[0].source: unknown key"),
    ("workflows:\n  - {slug: a, workflow_id: wf_a, session: {expires_afer: 5}}\n", {},
     "workflows[0].session.expires_afer: unknown key"),
    ("start: {workflow: 'not a slug'}\n", {}, "start.workflow: 'not a slug' is not a slug"),
    ("sessions: {rate_limits: {max_requests_per_1_minute: 0}}\n", {},
     "sessions.rate_limits.max_requests_per_1_minute: expected at least 1"),
    ("sessions: {user_hash_secret: written-in-the-file}\n", {}, "sessions.user_hash_secret: secrets must be given"),
    ("", {"CHATKIT_WORKFLOW_ID": "wf-remote-1"}, "CHATKIT_WORKFLOW_ID: expected wf_"),
])
def test_check_config_fails_with_the_key_path(tmp_path, capsys, config, environ, message):
    path = tmp_path / "config.yaml"
    path.write_text(config)
    assert main(["check-config", "--config", str(path)], {"GATEWAY__STORAGE__PATH": str(tmp_path / "g.db"), **environ}) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(ConfigError):
        load_settings(path, environ)


async def test_check_config_reports_shadowed_entries_from_every_source(tmp_path, capsys):
    database = tmp_path / "g.db"
    store = Store(str(database))
    await store.open()
    await store.add_workflow("zeta", {"workflow_id": "wf_managedzeta"})
    await store.close()
    path = tmp_path / "config.yaml"
    path.write_text(TWO + "  - {slug: hosted-workflow, workflow_id: wf_yaml}\nstart: {workflow: nowhere}\n")
    environ = {"GATEWAY__STORAGE__PATH": str(database), "CHATKIT_WORKFLOW_ID": "wf_legacy"}
    assert await asyncio.to_thread(main, ["check-config", "--config", str(path)], environ) == 0
    err = capsys.readouterr().err
    assert "workflow 'zeta' from config is shadowed by the managed entry" in err
    assert "workflow 'hosted-workflow' from legacy is shadowed by the config entry" in err
    assert "the Start workflow 'nowhere' does not exist; the default is 'zeta'" in err


# Reloads -----------------------------------------------------------------------------------------

async def test_reload_swaps_in_the_files_workflows_and_start_step(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, TWO)
    await gateway.create(slug="kept", workflow_id="wf_kept")
    gateway.config.write_text(gateway.config.read_text().replace(TWO, "") + """
workflows:
  - {slug: fresh, workflow_id: wf_fresh}
start: {workflow: fresh}
""")
    status, body = await gateway.call("POST", "/api/admin/reload", ADMIN)
    assert (status, body["result"], body["start"]) == (200, "ok", "fresh")
    rows = await gateway.listing()
    assert slugs(rows) == [("kept", "managed"), ("fresh", "config")]
    assert default_of(rows) == ["fresh"]
    counter = gateway.app[keys.config_reloads]
    assert counter.labels(result="ok")._value.get() == 1
    [audit] = await gateway.app[keys.store].list_audit(obj="config")
    assert (audit.actor, audit.action) == ("key:root", "config.reload")
    assert audit.before["workflows"] == ["kept (managed)", "zeta (config)", "shared (config)"]
    assert audit.after["workflows"] == ["kept (managed)", "fresh (config)"]


async def test_a_bad_file_is_rejected_with_a_clear_log_line_and_the_running_config_kept(
        aiohttp_client, tmp_path, fake_openai, caplog):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, TWO)
    before = await gateway.listing()
    gateway.config.write_text(gateway.config.read_text().replace("wf_zeta", "wf-zeta"))
    status, body = await gateway.call("POST", "/api/admin/reload", ADMIN)
    assert (status, body["error"], body["key"]) == (400, "config_invalid", "workflows[0].workflow_id")
    assert await gateway.listing() == before
    assert any(r.getMessage().startswith("config reload failed, keeping the running config: workflows[0].workflow_id")
               for r in caplog.records)
    assert gateway.app[keys.config_reloads].labels(result="error")._value.get() == 1
    gateway.config.write_text("plugins: [")
    assert (await gateway.call("POST", "/api/admin/reload", ADMIN))[0] == 400
    assert await gateway.listing() == before


async def test_only_an_admin_reloads(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, TWO)
    assert (await gateway.call("POST", "/api/admin/reload", ALICE))[1]["error"] == "forbidden"
    assert (await gateway.call("POST", "/api/admin/reload"))[1]["error"] == "unauthenticated"


async def test_sighup_reloads_the_file(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, TWO)
    gateway.config.write_text(gateway.config.read_text().replace("zeta", "omega"))
    os.kill(os.getpid(), signal.SIGHUP)

    async def reloaded():
        return slugs(await gateway.listing())[0] == ("omega", "config")

    await eventually(reloaded)


async def test_a_reload_leaves_requests_in_flight_alone(aiohttp_client, tmp_path, fake_openai):
    fake_openai.slow_seconds = 0.3
    gateway = await start(aiohttp_client, tmp_path, fake_openai, "workflows:\n  - {slug: slow, workflow_id: wf_slow}\n")
    in_flight = asyncio.create_task(gateway.session(slug="slow"))
    await eventually(lambda: fake_openai.requests_to("/v1/chatkit/sessions"))
    gateway.config.write_text(gateway.config.read_text().replace("slow, workflow_id: wf_slow", "quick, workflow_id: wf_quick"))
    assert (await gateway.call("POST", "/api/admin/reload", ADMIN))[0] == 200
    status, body = await in_flight
    assert (status, body["workflow"]["slug"]) == (200, "slow")
    assert (await gateway.session(slug="slow"))[0] == 404


# The workflow plugin -----------------------------------------------------------------------------

async def test_the_plugin_names_the_workflow_from_the_header_the_query_or_the_client_secret(
        aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, TWO)
    status, body = await gateway.call("POST", "/api/chatkit/session", ALICE, headers={"X-ChatKit-Workflow": "SHARED"})
    assert (status, body["workflow"]["slug"]) == (200, "shared")
    status, minted = await gateway.call("POST", "/api/chatkit/session?workflow=zeta", ALICE)
    assert minted["workflow"]["slug"] == "zeta"
    await gateway.call("POST", "/api/chatkit/conversation", json={"type": "threads.list", "params": {}},
                       headers={"Authorization": f"Bearer {minted['client_secret']}"})
    await gateway.call("GET", "/api/chatkit/threads", ALICE)
    assert gateway.seen == [("/api/chatkit/session", "shared"), ("/api/chatkit/session", "zeta"),
                            ("/api/chatkit/conversation", "zeta"), ("/api/chatkit/threads", None)]


async def test_the_body_slug_wins_and_goes_through_the_same_rule(aiohttp_client, tmp_path, fake_openai):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, TWO)
    status, body = await gateway.call("POST", "/api/chatkit/session", ALICE, headers={"X-ChatKit-Workflow": "zeta"},
                                      json={"hosted_workflow_slug": "Shared"})
    assert (status, body["workflow"]["slug"]) == (200, "shared")
    assert gateway.seen[-1] == ("/api/chatkit/session", "shared")


@pytest.mark.parametrize("where", ["header", "query", "route"])
async def test_an_unknown_slug_anywhere_is_404_with_the_slug(aiohttp_client, tmp_path, fake_openai, where):
    gateway = await start(aiohttp_client, tmp_path, fake_openai, TWO)
    if where == "header":
        status, body = await gateway.call("GET", "/api/chatkit/threads", ALICE, headers={"X-ChatKit-Workflow": "nope"})
    elif where == "query":
        status, body = await gateway.call("GET", "/api/chatkit/threads?workflow=nope", ALICE)
    else:
        status, body = await gateway.call("PATCH", "/api/chatkit/hosted/nope", ADMIN, json={"label": "x"})
    assert (status, body["error"], body["slug"]) == (404, "hosted_workflow_not_found", "nope")
    assert not fake_openai.requests_to("/v1/chatkit/threads")
