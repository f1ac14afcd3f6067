"""The plan off Agent Builder: every hosted entry, its ChatKit server replacement, and what the front end gets.

A replacement is a server entry whose `replaces:` names the hosted slug. It can be tried at its own
`/api/chatkit/w/<its slug>` while the hosted entry keeps serving; the flip then turns the hosted
slug itself into `kind: server`, so the front end keeps asking for the same slug.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .registry import Catalog, WorkflowEntry
from .sessions import SERVER_API_URL

SHUTDOWN = "2026-11-30"  # when OpenAI shuts Agent Builder down


@dataclass(frozen=True)
class Step:
    hosted: WorkflowEntry
    replacements: tuple[WorkflowEntry, ...]  # server entries whose `replaces:` names it, in catalog order

    @property
    def replacement(self) -> WorkflowEntry | None:
        return self.replacements[0] if self.replacements else None

    def session_after_flip(self) -> dict[str, Any] | None:
        """POST /api/chatkit/session's answer for the slug once it is flipped; None without a replacement."""
        if self.replacement is None:
            return None
        slug = self.hosted.slug
        return {"kind": "server", "api_url": SERVER_API_URL.format(slug=slug),
                "workflow": {"slug": slug, "label": self.hosted.label}}

    def how_to_flip(self) -> str:
        entry, server = self.hosted, self.replacement
        url = server.url if server else "<your ChatKit server's URL>"
        if entry.source == "managed":
            return (f'PATCH /api/chatkit/hosted/{entry.slug} {{"kind": "server", "url": "{url}", "workflow_id": null, '
                    '"version": null, "state_variables": null, "session": null}')
        if entry.source == "legacy":
            return (f"unset CHATKIT_WORKFLOW_ID and declare slug {entry.slug} in config.yaml with kind: server, "
                    f"url: {url}; then reload")
        return (f"in config.yaml, give slug {entry.slug} kind: server and url: {url} (drop workflow_id, version, "
                "state_variables, session); then reload (SIGHUP or POST /api/admin/reload)")


def plan(catalog: Catalog) -> list[Step]:
    servers = [e for e in catalog.entries if e.kind == "server"]
    return [Step(entry, tuple(s for s in servers if s.replaces == entry.slug))
            for entry in catalog.entries if entry.kind == "hosted"]


def strays(catalog: Catalog) -> list[str]:
    """Warnings for `replaces:` that name no hosted entry (a typo, or a flip already done)."""
    warnings = []
    for entry in catalog.entries:
        if entry.kind != "server" or entry.replaces is None:
            continue
        target = catalog.find(entry.replaces)
        if target is None:
            warnings.append(f"{entry.slug} replaces {entry.replaces!r}, which is not declared")
        elif target.kind == "server":
            warnings.append(f"{entry.slug} replaces {entry.replaces!r}, which is already a ChatKit server (flipped)")
    return warnings


def as_json(catalog: Catalog) -> dict[str, Any]:
    return {"shutdown": SHUTDOWN, "warnings": strays(catalog), "hosted": [{
        "slug": step.hosted.slug, "source": step.hosted.source, "workflow_id": step.hosted.workflow_id,
        "replacement": step.replacement.slug if step.replacement else None,
        "replacement_url": step.replacement.url if step.replacement else None,
        "session_after_flip": step.session_after_flip(), "how_to_flip": step.how_to_flip(),
    } for step in plan(catalog)]}


def as_text(catalog: Catalog) -> str:
    steps = plan(catalog)
    lines = [f"Agent Builder (hosted wf_… workflows) shuts down on {SHUTDOWN}. Hosted entries: {len(steps)}."]
    for step in steps:
        entry, server = step.hosted, step.replacement
        lines += ["", f"{entry.slug} ({entry.source}, {entry.workflow_id})"]
        if server is None:
            lines += ["  replacement:  none (add a kind: server entry with replaces: " + entry.slug + ")",
                      "  front end:    a client secret until the shutdown, then session creation fails"]
        else:
            others = f" (also: {', '.join(s.slug for s in step.replacements[1:])})" if len(step.replacements) > 1 else ""
            lines += [f"  replacement:  {server.slug} -> {server.url}{others}; try it at "
                      f"{SERVER_API_URL.format(slug=server.slug)}",
                      f"  after flip:   {json.dumps(step.session_after_flip())}"]
        lines.append(f"  to flip:      {step.how_to_flip()}")
    warnings = strays(catalog)
    if warnings:
        lines += ["", *(f"warning: {w}" for w in warnings)]
    return "\n".join(lines)
