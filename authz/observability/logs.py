"""The gateway's own log lines: text for people, or JSON for log pipelines.

A JSON line is one object: `time`, `level`, `logger`, `message`, and `decision_id` when the
line was written while a check was being decided (the id its decision log line and its
answer's metadata carry), so a log search can join them. The id follows the check through
`decision_scope`, a context variable: each check runs in its own asyncio task, so lines of
checks in flight at the same time are never mixed up. A check that is traced adds
`trace_id` and `span_id` (its check span's), so a trace backend can show its log lines.
Log lines never hold a token (the pipelines log short hashes), whatever the format.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]

_DECISION_ID: ContextVar[str | None] = ContextVar("decision_id", default=None)
TRACE_CONTEXT: ContextVar[tuple[str, str] | None] = ContextVar("trace_context", default=None)
"""(trace id, span id) in hex of the traced check being decided; set by the tracing."""


@contextlib.contextmanager
def decision_scope(decision_id: str) -> Iterator[None]:
    """Lines logged inside carry `decision_id`."""
    token = _DECISION_ID.set(decision_id)
    try:
        yield
    finally:
        _DECISION_ID.reset(token)


class CheckContextFilter(logging.Filter):
    """Adds the check's `decision_id` (and `trace_context`) to each record logged for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.decision_id = _DECISION_ID.get()
        record.trace_context = TRACE_CONTEXT.get()
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self._tag = tag.strip()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._tag:
            line["process"] = self._tag
        decision_id = getattr(record, "decision_id", None)
        if decision_id is not None:
            line["decision_id"] = decision_id
        trace_context = getattr(record, "trace_context", None)
        if trace_context is not None:
            line["trace_id"], line["span_id"] = trace_context
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, log_format: LogFormat = "text", tag: str = "") -> None:
    """Send the gateway's log lines to stderr at `level`, as text or JSON; `tag` names the
    process (a worker of `serve --workers N`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CheckContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(tag))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {tag}%(name)s %(message)s")
        )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
