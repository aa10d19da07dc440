"""`python -m dataplane` fails fast: one line on stderr, a non-zero exit within seconds.

Each case starts a real process. What it must not do is what it used to do with its REST
port taken: print a traceback and hang with the gRPC port open.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT, free_port, port_open

# Importing TensorFlow alone takes several seconds on a loaded 2-core machine; the bound is
# for "exits on its own", not for speed.
EXIT_WITHIN_S = 90.0


def run_dataplane(*flags: str) -> tuple[int, list[str], float]:
    """Exit code, stderr lines and seconds taken of `python -m dataplane FLAGS`."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "dataplane", *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=EXIT_WITHIN_S,
    )
    return result.returncode, result.stderr.splitlines(), time.monotonic() - started


FAILED = "Failed to start server. Error: "  # tensorflow_model_server's words, exit status 255


def the_error_line(lines: list[str]) -> str:
    """The one line that says why the start failed; no traceback anywhere."""
    errors = [line for line in lines if line.startswith(FAILED)]
    assert len(errors) == 1, lines
    assert not any(line.startswith("Traceback") for line in lines), lines
    return errors[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    ("flag", "line"),
    [
        ("--bogus_flag=1", "error: unknown command line flag(s): --bogus_flag=1 (see --help)"),
        ("--port=abc", "error: argument --port: invalid int value: 'abc' (see --help)"),
        (
            "--enable_batching=maybe",
            "error: argument --enable_batching: expected true or false, got 'maybe' (see --help)",
        ),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_code_2(flag: str, line: str) -> None:
    code, lines, seconds = run_dataplane(flag)
    assert (code, lines) == (2, [line])
    assert seconds < EXIT_WITHIN_S


@pytest.mark.slow
def test_a_rest_port_in_use_exits_255_and_closes_the_grpc_port(taken_port: int) -> None:
    grpc_port = free_port()
    code, lines, seconds = run_dataplane(f"--port={grpc_port}", f"--rest_api_port={taken_port}")
    assert code == 255
    assert the_error_line(lines) == (
        f"{FAILED}UNAVAILABLE: cannot listen on REST port {taken_port}: Address already in use"
    )
    assert seconds < EXIT_WITHIN_S
    assert not port_open(grpc_port)  # the process is gone, and nothing it started is left


@pytest.mark.slow
def test_a_grpc_port_in_use_exits_255(taken_port: int) -> None:
    code, lines, _ = run_dataplane(f"--port={taken_port}", "--rest_api_port=0")
    assert code == 255
    assert the_error_line(lines).startswith(
        f"{FAILED}UNAVAILABLE: cannot listen on gRPC port {taken_port}: "
    )


def write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flag", "content", "expected"),
    [
        ("--model_config_file", None, "NOT_FOUND: {path}; No such file or directory"),
        (
            "--model_config_file",
            b"model_config_list {\xff}",
            "INVALID_ARGUMENT: Invalid protobuf file: '{path}'",
        ),
        (
            "--model_config_file",
            b"model_config_list { nonsense: 1 }",
            "INVALID_ARGUMENT: Invalid protobuf file: '{path}'",
        ),
        (
            "--model_config_file",
            b'model_config_list { config { name: "m" base_path: "relative" } }',
            "INVALID_ARGUMENT: Expected model m to have an absolute path or URI; "
            "got base_path()=relative",
        ),
        (
            "--monitoring_config_file",
            None,
            "INVALID_ARGUMENT: Invalid monitoring config file {path}: ",
        ),
        (
            "--monitoring_config_file",
            b"prometheus_config {\xfe",
            "INVALID_ARGUMENT: Invalid monitoring config file {path}: ",
        ),
        (
            "--batching_parameters_file",
            b"max_batch_size { value: -1 }",
            "INVALID_ARGUMENT: Invalid batching parameters: max_batch_size must be positive; "
            "was -1 (in {path})",
        ),
        (
            "--batching_parameters_file",
            b"max_batch_size {\xff",
            "INVALID_ARGUMENT: Invalid batching parameters file {path}: ",
        ),
    ],
)
def test_an_unreadable_or_invalid_file_exits_255_with_one_line(
    tmp_path: Path, flag: str, content: bytes | None, expected: str
) -> None:
    path = str(tmp_path / "missing.txt") if content is None else write(tmp_path / "f", content)
    extra = ["--enable_batching"] if flag == "--batching_parameters_file" else []
    code, lines, seconds = run_dataplane(
        f"--port={free_port()}", "--rest_api_port=0", f"{flag}={path}", *extra
    )
    assert code == 255
    line = the_error_line(lines)
    assert line.startswith(FAILED + expected.format(path=path)), line
    assert seconds < EXIT_WITHIN_S
