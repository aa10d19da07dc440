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

import atexit
import json
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

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


def configure(
    log_format: str,
    context: Callable[[], Fields | None] = REQUEST.get,
    capture_native: bool = False,
) -> None:
    """The root logger at INFO on stderr, as text or JSON lines; `capture_native` (JSON only):
    what is written to file descriptor 2 outside of logging becomes records too."""
    stream = sys.stderr
    if log_format == JSON and capture_native:
        stream = _capture_fd2()
    handler = logging.StreamHandler(stream)
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


# An absl/glog line ("I0000 00:00:...", "E1208 ...") starts with its severity's letter; any
# other line (a print, a last-resort traceback) is logged at WARNING.
_GLOG = re.compile(r"[IWEF]\d{4} ")
_NATIVE_LEVELS = {
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
}
_NATIVE = logging.getLogger("native")


def _capture_fd2() -> TextIO:
    """Route file descriptor 2 through a pipe whose lines a thread logs as records of
    `native` (TensorFlow's and gRPC's C++ write there directly, and so do `print`s and
    Python's last-resort tracebacks); return a stream on the real stderr for the handler.

    At exit, fd 2 is given back and the thread drains the pipe, so that last words (a failed
    start) are written; a process killed by a signal may lose lines still in the pipe."""
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, real), name="stderr-pump", daemon=True)
    pump.start()

    def give_back() -> None:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer is gone: the thread reads to its end
        pump.join(timeout=2.0)

    atexit.register(give_back)
    return open(real, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)


def _pump(read_end: int, real: int) -> None:
    """Each line read as a `native` record, except a JSON line (a child process's, or a
    handler that writes to sys.stderr, such as gunicorn's), which is passed on as it is."""
    with open(read_end, "rb") as pipe:
        for raw in pipe:
            line = raw.decode("utf-8", "replace").rstrip()
            if _is_json_line(line):
                os.write(real, raw if raw.endswith(b"\n") else raw + b"\n")
            elif line:
                level = _NATIVE_LEVELS[line[0]] if _GLOG.match(line) else logging.WARNING
                _NATIVE.log(level, "%s", line)


def _is_json_line(line: str) -> bool:
    if not line.startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
