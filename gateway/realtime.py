"""How a phone call is answered: a `realtime:` block (a workflow's, over telephony's defaults) and the accept body.

The block mirrors the fields of POST /v1/realtime/calls/{call_id}/accept the gateway lets you set.
A workflow's block is merged over the defaults key by key: a key it sets replaces the default whole
(a prompt or a tool list is never spliced from two places).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .schema import ConfigError, dump, join

PROMPT_ID = re.compile(r"pmpt_[A-Za-z0-9]+")
PROMPT_VERSION = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class PublishedPrompt:
    """A prompt published in the OpenAI dashboard, pinned to a version or its current one."""

    id: str
    version: str | int | None = None  # held as a string

    def __post_init__(self) -> None:
        if not PROMPT_ID.fullmatch(self.id):
            raise ConfigError("id", f"expected pmpt_ followed by letters and digits, got {self.id!r}")
        if self.version is not None:
            version = str(self.version)
            if not PROMPT_VERSION.fullmatch(version):
                raise ConfigError("version", f"expected a version number, got {version!r}")
            object.__setattr__(self, "version", version)


@dataclass(frozen=True)
class RealtimeOptions:
    """What a call is answered with. None means "not set here": the defaults', else the upstream's."""

    model: str | None = None  # the upstream's default is gpt-realtime
    instructions: str | None = None
    voice: str | None = None
    tools: tuple[Mapping[str, Any], ...] | None = None
    prompt: PublishedPrompt | None = None

    def __post_init__(self) -> None:
        for name in ("model", "voice"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(name, "must not be empty")
        for i, tool in enumerate(self.tools or ()):
            if not isinstance(tool.get("type"), str):
                raise ConfigError(join("tools", i), 'each tool needs a "type" (function, mcp)')

    def over(self, defaults: RealtimeOptions) -> RealtimeOptions:
        """These options where they set a value, `defaults` elsewhere."""
        mine = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        return dataclasses.replace(defaults, **mine)


def accept_body(options: RealtimeOptions) -> dict[str, Any]:
    """The body of POST /v1/realtime/calls/{call_id}/accept; unset fields are left to the upstream."""
    body: dict[str, Any] = {"type": "realtime"}
    if options.model is not None:
        body["model"] = options.model
    if options.instructions is not None:
        body["instructions"] = options.instructions
    if options.voice is not None:
        body["audio"] = {"output": {"voice": options.voice}}
    if options.tools is not None:
        body["tools"] = dump(options.tools)
    if options.prompt is not None:
        body["prompt"] = {k: v for k, v in dump(options.prompt).items() if v is not None}
    return body
