"""The ChatKit operation of a protocol request, read from the first bytes of its body.

A ChatKit client POSTs `{"type": <operation>, "params": {…}}`. The operation names the request in
logs and metrics, so it must come from a bounded set: a known operation, else "other". Only the
head of the body is looked at (up to `PEEK_BYTES`); the body itself still streams on untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

# The request types of openai-chatkit 1.6.5 (chatkit/types.py).
OPERATIONS = frozenset({
    "threads.create", "threads.add_user_message", "threads.add_client_tool_output",
    "threads.add_structured_input", "threads.retry_after_item", "threads.custom_action",
    "threads.get_by_id", "threads.list", "threads.update", "threads.delete", "threads.sync_custom_action",
    "items.list", "items.feedback", "attachments.create", "attachments.delete", "input.transcribe",
})
OTHER = "other"
PEEK_BYTES = 4096

# One JSON token: a whole string (group 1), a structural character (group 2), or a bare literal.
TOKEN = re.compile(rb'\s*(?:"((?:[^"\\]|\\.)*)"|([{}\[\]:,])|[^\s{}\[\]:,"]+)', re.DOTALL)


def top_level_type(head: bytes) -> str | None:
    """The string value of the top-level "type" key of the JSON object `head` begins, if `head` holds it.

    Nested "type" keys (message content has them) are skipped by tracking the depth.
    """
    depth = 0
    expecting = "key"  # at depth 1: a "key", then its "value" after the colon, then "next" (a comma)
    key: bytes | None = None
    pos = 0
    while (match := TOKEN.match(head, pos)) is not None:
        pos = match.end()
        string, mark = match.group(1), match.group(2)
        if depth == 0 and mark != b"{":
            return None  # not a JSON object
        if mark in (b"{", b"["):
            depth += 1
            if depth == 2:
                expecting = "next"  # a nested value: its keys are not top-level keys
        elif mark in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                return None  # the whole object, without a string "type"
        elif depth > 1:
            continue
        elif mark == b":":
            expecting = "value"
        elif mark == b",":
            expecting, key = "key", None
        elif expecting == "key":
            key = string
        elif expecting == "value":
            if key == b"type" and string is not None:
                try:
                    return json.loads(b'"' + string + b'"')
                except ValueError:
                    return None
            expecting = "next"
    return None


def label(operation: str | None) -> str:
    return operation if operation in OPERATIONS else OTHER


async def peek(body: AsyncIterator[bytes] | None,
               limit: int = PEEK_BYTES) -> tuple[str, AsyncIterator[bytes] | None]:
    """The operation label, and the whole body to send on: the chunks read so far, then the rest as it comes."""
    if body is None:
        return OTHER, None
    seen: list[bytes] = []
    head = b""
    operation = None
    ended = False
    while operation is None and len(head) < limit:
        chunk = await anext(body, None)
        if chunk is None:
            ended = True
            break
        seen.append(chunk)
        head += chunk[: limit - len(head)]
        operation = top_level_type(head)

    async def whole() -> AsyncIterator[bytes]:
        for chunk in seen:
            yield chunk
        if not ended:
            async for chunk in body:
                yield chunk

    return label(operation), whole()
