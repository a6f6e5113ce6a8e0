"""Structured JSON logs: one object per line, for a hospital's log pipeline.

Fields are ids, counts, timings and verdicts only. Never pass a token, a name or a clinical value to a
logger: there is no scrubbing here to rely on, by design — what is not logged cannot leak.

What is bounded here is size: a value the caller chose (a JWT `kid`, a path, a hookInstance) can be a
megabyte, and one request must not write a megabyte of log. `BoundValues` cuts every field, the message
and the traceback of every record our handler writes, whoever logged it (bounded() is the one rule).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# LogRecord attributes that are not ours
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


MAX_FIELD_CHARS = 256  # one field of a log line (a reason, a path, an id)
MAX_MESSAGE_CHARS = 1024  # the message (ours are fixed sentences; uvicorn's may carry input)
MAX_EXCEPTION_CHARS = 8192  # a traceback: enough to debug, not a copy of the request

_factory = logging.getLogRecordFactory()


def bounded(value: str, limit: int = MAX_FIELD_CHARS) -> str:
    """At most `limit` characters of `value`, then how many were cut: the start identifies it."""
    return value if len(value) <= limit else f"{value[:limit]}…[{len(value) - limit} more chars]"


def _bounded_field(value: Any) -> Any:
    if isinstance(value, str):
        return bounded(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)  # a list or dict of caller data: its text is what the formatter would write
    return value if len(text) <= MAX_FIELD_CHARS else bounded(text)


class BoundValues(logging.Filter):
    """Cuts every value of a record to a bounded length, in place, before any formatter sees it (the JSON
    lines, the plain format, the sandbox's one-liners)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and not name.startswith("_"):
                setattr(record, name, _bounded_field(value))
        if record.args or not isinstance(record.msg, str) or len(record.msg) > MAX_MESSAGE_CHARS:
            record.msg, record.args = bounded(record.getMessage(), MAX_MESSAGE_CHARS), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = bounded(record.exc_text, MAX_EXCEPTION_CHARS)
        return True


def bound_values() -> BoundValues:
    """The filter every handler of the service carries."""
    return BoundValues()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _factory(*args, **kwargs)
    request_id = request_id_var.get()
    if request_id is not None:
        record.request_id = request_id
    return record


def install_request_ids() -> None:
    """Stamp every log record made during a request with its id (at creation, whatever formats it later)."""
    logging.setLogRecordFactory(_record_with_request_id)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_text:
            out["exception"] = record.exc_text
        elif record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "INFO", json_lines: bool = True) -> None:
    """Route every logger (uvicorn's too) through one handler on stderr, values bounded.

    uvicorn's access log stays off: its line is the request target with the query string, where a
    careless client puts `?access_token=…`. The service writes its own (cds/middleware.py: method,
    path without the query, status, duration, request id)."""
    handler = logging.StreamHandler()
    handler.addFilter(bound_values())
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False  # uvicorn then sees no handler and writes no line
