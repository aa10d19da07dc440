"""Every control-plane request has an id: the client's when well formed, else a new one; it is
the response's `x-request-id` and the `request_id` of the request's log lines."""

from __future__ import annotations

import logging
import re

import pytest
from flask import Flask

from controlplane import request_ids
from dataplane.json_logs import REQUEST

GENERATED = re.compile(r"[0-9a-f]{32}")


def test_the_clients_id_is_answered_and_logged(app: Flask, api) -> None:
    seen: list[object] = []

    @app.get("/seen-id")
    def seen_id() -> str:
        seen.append(REQUEST.get())
        logging.getLogger("controlplane.test").info("inside")
        return request_ids.current()

    client = app.test_client()
    kept = client.get("/seen-id", headers={"x-request-id": "ui-9"})
    assert (kept.text, kept.headers["x-request-id"]) == ("ui-9", "ui-9")
    assert seen == [{"request_id": "ui-9", "method": "GET /seen-id"}]
    replaced = client.get("/seen-id", headers={"x-request-id": "no spaces please"})
    assert GENERATED.fullmatch(replaced.headers["x-request-id"])
    assert replaced.text == replaced.headers["x-request-id"]
    assert REQUEST.get() is None  # nothing left behind once the request ended
    listed = api("get", "/models")
    assert listed.status_code == 200 and GENERATED.fullmatch(listed.headers["x-request-id"])


def test_a_new_request_block_has_its_own_id() -> None:
    with request_ids.new_request(plane="p:1") as rid:
        assert REQUEST.get() == {"request_id": rid, "plane": "p:1"}
        assert request_ids.current() == rid
    assert REQUEST.get() is None
    assert GENERATED.fullmatch(request_ids.current())  # outside any request: a fresh id


@pytest.mark.parametrize(
    ("atoms", "fields"),
    [
        (
            {"{x-request-id}o": "ui-9", "m": "POST", "U": "/api/v1/models", "s": "201", "M": 12},
            {
                "request_id": "ui-9",
                "method": "POST /api/v1/models",
                "status": "201",
                "duration_ms": "12",
            },
        ),
        (
            {"{x-request-id}o": "-", "m": "GET", "U": "/healthz", "s": "200", "M": 0},
            {"request_id": None, "method": "GET /healthz", "status": "200", "duration_ms": "0"},
        ),
    ],
)
def test_gunicorn_access_lines_take_the_id_from_the_response(atoms, fields) -> None:
    line = logging.LogRecord("gunicorn.access", logging.INFO, "", 0, "%(m)s", (atoms,), None)
    assert request_ids.AccessFormatter().fields(line) == fields
