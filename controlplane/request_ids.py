"""Request ids on the control plane: every Flask request and every fleet call to a data plane
has one, in its log lines (dataplane/json_logs.py) and on what it sends.

A Flask request keeps the client's `x-request-id` if well formed (else gets a new one) and
answers with it in the `x-request-id` header. The fleet worker gives each plane's share of a
cycle its own id. `PlaneClient` sends the current id as `x-request-id` metadata, so the data
plane's log lines about a push carry the id of the control plane's lines that made it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from flask import Flask, Response, g, request

from dataplane.json_logs import HEADER, REQUEST, Fields, JsonFormatter, new_request_id, request_id


def current() -> str:
    """The id of the request being handled here, or a new one (a call made outside any)."""
    fields = REQUEST.get()
    found = fields.get("request_id") if fields else None
    return str(found) if found else new_request_id()


@contextmanager
def new_request(**fields: str) -> Iterator[str]:
    """A new id (with `fields`) as the logging context of the block."""
    rid = new_request_id()
    token = REQUEST.set({"request_id": rid, **fields})
    try:
        yield rid
    finally:
        REQUEST.reset(token)


def install(app: Flask) -> None:
    """Give each of `app`'s requests an id, in its log lines and its response."""
    app.before_request(_begin)
    app.after_request(_answer)
    app.teardown_request(_end)


def _begin() -> None:
    rid = request_id(request.headers.get(HEADER))
    g.request_id = rid
    g.log_token = REQUEST.set({"request_id": rid, "method": f"{request.method} {request.path}"})


def _answer(response: Response) -> Response:
    rid = g.get("request_id")
    if rid:
        response.headers[HEADER] = rid
    return response


def _end(_error: BaseException | None) -> None:
    token = g.pop("log_token", None)
    if token is not None:
        REQUEST.reset(token)


class AccessFormatter(JsonFormatter):
    """gunicorn's access line: its message (access_log_format) and, from its atoms, the
    request's id (the response header, as the request's context is gone by then), status
    and duration."""

    def fields(self, record: logging.LogRecord) -> Fields | None:
        atoms = record.args
        if not isinstance(atoms, Mapping):
            return None
        return {
            "request_id": _atom(atoms, "{x-request-id}o"),
            "method": f"{_atom(atoms, 'm')} {_atom(atoms, 'U')}",
            "status": _atom(atoms, "s"),
            "duration_ms": _atom(atoms, "M"),
        }


def _atom(atoms: Mapping[str, object], name: str) -> str | None:
    value = atoms[name]
    return None if value in (None, "-") else str(value)
