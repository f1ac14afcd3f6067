"""Logging: JSON lines (or the seed's text form) with every secret-shaped string masked."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

import orjson

# Anything shaped like a secret, wherever it reaches a log message.
SECRET_PATTERNS = re.compile(
    r"(?P<bearer>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+"
    r"|(?P<url>://)[^/\s:@]+:[^/\s@]+@"
    r"|\b(?:sk|rk)-[A-Za-z0-9_-]{6,}"
    r"|\b(?:ek|gk|whsec)_[A-Za-z0-9_+/=-]{4,}"
)

# Fields a JSON line may carry besides ts, level, logger and msg; anything else is dropped.
ALLOWED_FIELDS = (
    "request_id", "method", "route", "path", "status", "duration_ms", "upstream_ms", "ttfb_ms",
    "bytes_in", "bytes_out", "events", "principal", "workflow", "client_ip", "upstream_status",
    "error", "upstream", "proxy", "host", "key_fingerprint", "slug", "call_id", "number", "outcome",
    "operation", "reason", "config", "kind", "detail",
)


ALLOWED_NAMES = frozenset(ALLOWED_FIELDS)

# Every match of SECRET_PATTERNS contains one of these; plain substring tests are ~20x cheaper than the regex.
SECRET_MARKERS = ("Bearer", "Basic", "://", "k-", "k_", "whsec_")


def _mask(match: re.Match[str]) -> str:
    if match.group("bearer"):
        return match.group("bearer") + "***"
    if match.group("url"):
        return "://***@"
    return match.group(0)[:3] + "***"


def redact(text: str) -> str:
    for marker in SECRET_MARKERS:
        if marker in text:
            return SECRET_PATTERNS.sub(_mask, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in the final message and in every allowed extra field."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message)
        record.args = None
        fields = record.__dict__
        for name in ALLOWED_NAMES.intersection(fields):  # the allowed fields this record has
            value = fields[name]
            if isinstance(value, str):
                fields[name] = redact(value)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = (-1, "")  # (whole second, its "YYYY-MM-DDTHH:MM:SS"): one strftime a second

    def timestamp(self, created: float) -> str:
        second, text = self._second
        if int(created) != second:
            second, text = int(created), time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            self._second = (second, text)
        return f"{text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__
        for name in ALLOWED_FIELDS:
            if name in fields:  # a field the emitter names is kept, null included (access lines have a fixed set)
                line[name] = fields[name]
        if record.exc_info:
            line["traceback"] = redact(self.formatException(record.exc_info))
        try:
            return orjson.dumps(line, default=str).decode()
        except TypeError:  # what orjson refuses (an integer past 64 bits) still makes a line
            return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)-5s %(name)s - %(message)s")

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


def configure_logging(level: str, fmt: str, stream: Any = None) -> None:
    """Route every logger through one handler on stdout, with redaction at the root."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    # No line shows the thread or process: their names are not looked up for every record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").disabled = True  # the access_log plugin writes ours
    # No formatter prints these, and each costs a call for every record (one per request with access_log).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger("aiosqlite").setLevel(logging.INFO)  # its DEBUG lines carry SQL parameters: stored key material
