"""JSON-lines logs (`--log_format=json` / `MODELPLANE_LOG_FORMAT=json`) and request ids.

One JSON object per line on stderr: time (RFC 3339, UTC), level, logger, message, an
`exception` field holding the traceback as one string, and, for a record logged while a
request is handled, its `request_id` (and `method`, `model`, `version`, `trace_id` where
known). Both planes use this module (the control plane's image copies it), so their lines
have the same fields and a push can be followed across both by its request id.

Nothing here runs per request when logs are text: the request context is a context variable
that a front end sets only when JSON logging is on, and the fields are computed when a record
is formatted (rare: requests log nothing unless something goes wrong).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime

TEXT = "text"
JSON = "json"
FORMATS = (TEXT, JSON)
ENV = "MODELPLANE_LOG_FORMAT"
HEADER = "x-request-id"
# A client's id is kept when it is this short and of these characters (no spaces, quotes or
# control characters that could forge a log field or a header); otherwise a new id replaces it.
MAX_ID_LENGTH = 128
_ID = re.compile(rf"[A-Za-z0-9._:/+=-]{{1,{MAX_ID_LENGTH}}}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

Fields = Mapping[str, str | int | None]
# The fields of the request handled in this thread/task (None: not in a request).
REQUEST: ContextVar[Fields | None] = ContextVar("log_request", default=None)


def chosen_format(flag: str = "") -> str:
    """The flag's format, else the environment's, else text; an unknown name raises ValueError."""
    name = (flag or os.environ.get(ENV, "") or TEXT).strip().lower()
    if name not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {name!r}")
    return name


def request_id(sent: str | None) -> str:
    """The client's id when it is well formed, else a new random one."""
    if sent and _ID.fullmatch(sent):
        return sent
    return new_request_id()


def new_request_id() -> str:
    return uuid.uuid4().hex


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed."""
    if traceparent and len(traceparent) == 55 and traceparent[2] == "-":
        candidate = traceparent[3:35]
        if all(c in "0123456789abcdef" for c in candidate) and candidate != "0" * 32:
            return candidate
    return None


class JsonFormatter(logging.Formatter):
    """A record as one JSON line; `context` adds the current request's fields."""

    def __init__(self, context: Callable[[], Fields | None] = REQUEST.get) -> None:
        super().__init__()
        self._context = context

    def fields(self, _record: logging.LogRecord) -> Fields | None:
        """The fields the line adds to the record's own: the current request's."""
        return self._context()

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, object] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        try:
            fields = self.fields(record)
        except Exception:  # a log line must never fail for its context
            fields = None
        if fields:
            line.update((key, value) for key, value in fields.items() if value is not None)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(log_format: str, context: Callable[[], Fields | None] = REQUEST.get) -> None:
    """The root logger at INFO on stderr, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == JSON:
        handler.setFormatter(JsonFormatter(context))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # a warning is a record too, not lines of its own
