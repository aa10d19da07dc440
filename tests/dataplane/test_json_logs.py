"""The JSON line format and the request-id rules shared by both planes."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from dataplane import json_logs


def record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("some.logger", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_record_is_one_json_line_with_the_requests_fields() -> None:
    formatter = json_logs.JsonFormatter(lambda: {"request_id": "r1", "model": None})
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        line = formatter.format(record("it failed: %s", "twice", exc_info=sys.exc_info()))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed.pop("time").endswith("Z")
    exception = parsed.pop("exception")
    assert exception.startswith("Traceback") and "ValueError: bad\nvalue" in exception
    assert parsed == {
        "level": "WARNING",
        "logger": "some.logger",
        "message": "it failed: twice",
        "request_id": "r1",
    }


def test_a_failing_context_does_not_lose_the_line() -> None:
    formatter = json_logs.JsonFormatter(lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    assert json.loads(formatter.format(record("kept")))["message"] == "kept"


@pytest.mark.parametrize("sent", ["abc-1", "a" * 128, "trace:1/2+3=4.5_6"])
def test_well_formed_ids_are_kept(sent: str) -> None:
    assert json_logs.request_id(sent) == sent


@pytest.mark.parametrize("sent", [None, "", "a" * 129, "two words", 'q"uote', "new\nline", "é"])
def test_other_ids_are_replaced(sent: str | None) -> None:
    made = json_logs.request_id(sent)
    assert len(made) == 32 and int(made, 16) >= 0


def test_trace_id_of_a_traceparent() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert json_logs.trace_id(good) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert json_logs.trace_id(good.upper()) is None
    assert json_logs.trace_id("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert json_logs.trace_id(None) is None


def test_the_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(json_logs.ENV, "json")
    assert json_logs.chosen_format() == "json"
    assert json_logs.chosen_format("text") == "text"
    monkeypatch.delenv(json_logs.ENV)
    assert json_logs.chosen_format() == "text"
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        json_logs.chosen_format("xml")
