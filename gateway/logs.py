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
        record.msg = redact(record.getMessage())
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
        line: dict[str, Any] = {"ts": self.timestamp(record.created), "level": record.levelname,
                                "logger": record.name, "msg": record.getMessage()}
        fields = record.__dict__
        for name in ALLOWED_FIELDS:
            if name in fields:  # a field the emitter names is kept, null included (access lines have a fixed set)
                line[name] = fields[name]
        if record.exc_info:
            line["traceback"] = redact(self.formatException(record.exc_info))
        return encoded(line)

    def line(self, name: str, level: str, created: float, message: str, fields: dict[str, Any]) -> str:
        """The line of a message and fields that no filter has seen (write_line's), redacted here:
        one pass over the fields, one dict, in the fields' own order."""
        line: dict[str, Any] = {"ts": self.timestamp(created), "level": level, "logger": name, "msg": redact(message)}
        for field, value in fields.items():
            if field in ALLOWED_NAMES:
                line[field] = redact(value) if isinstance(value, str) else value
        return encoded(line)


def encoded(line: dict[str, Any]) -> str:
    try:
        return orjson.dumps(line, default=str).decode()
    except TypeError:  # what orjson refuses (an integer past 64 bits) still makes a line
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)-5s %(name)s - %(message)s")

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))

    def line(self, name: str, level: str, created: float, message: str, fields: dict[str, Any]) -> str:
        return f"{level:<5} {name} - {redact(message)}"


class LineHandler(logging.StreamHandler):
    """The one handler, on stdout: every record redacted (RedactingFilter) and formatted; and lines made
    from fields already collected, written without a LogRecord (`write_line`)."""

    formatter: JsonFormatter | TextFormatter

    def __init__(self, stream: Any, formatter: JsonFormatter | TextFormatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.addFilter(RedactingFilter())

    def write_line(self, name: str, message: str, fields: dict[str, Any]) -> None:
        """The INFO line of logger `name` that a record of `message` and `fields` would make, redacted as
        RedactingFilter does. A LogRecord and its trip through the logging machinery cost a tenth of a
        relayed request's CPU, for the access line every request writes."""
        text = self.formatter.line(name, "INFO", time.time(), message, fields)
        self.acquire()
        try:
            self.stream.write(text + self.terminator)
            self.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"name": name, "msg": message}))
        finally:
            self.release()


def log_line(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """`logger.info(message, extra=fields)`, written directly when the gateway's own handler is the only
    one it reaches (serve, and tests that configure logging as serve does); through `logging` otherwise."""
    handlers = logging.root.handlers
    if (len(handlers) == 1 and isinstance(handlers[0], LineHandler) and not logger.handlers
            and logger.propagate and handlers[0].level <= logging.INFO):
        handlers[0].write_line(logger.name, message, fields)
    else:
        logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, None, None,
                                        extra=fields))


def configure_logging(level: str, fmt: str, stream: Any = None) -> None:
    """Route every logger through one handler on stdout, with redaction at the root."""
    handler = LineHandler(stream or sys.stdout, JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").disabled = True  # the access_log plugin writes ours
    # No formatter prints these, and each costs a call for every record (one per request with access_log).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger("aiosqlite").setLevel(logging.INFO)  # its DEBUG lines carry SQL parameters: stored key material
