"""tensorflow_model_server's flag syntax maps onto one typed ServerOptions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dataplane.options import ServerOptions, parse_options
from tests.support.processes import REPO_ROOT


def test_defaults_match_tensorflow_model_server():
    options = parse_options([])
    assert options == ServerOptions()
    assert (options.port, options.rest_api_port, options.model_name) == (8500, 0, "default")
    assert options.file_system_poll_wait_seconds == 1
    assert options.enable_model_warmup is True
    assert options.tags == ("serve",)


def test_flag_forms_and_types():
    options = parse_options(
        [
            "--port=9000",
            "--rest_api_port",
            "9001",
            "--enable_batching",
            "--enable_model_warmup=false",
            "--per_process_gpu_memory_fraction=0.25",
            "--saved_model_tags=serve,gpu",
        ]
    )
    assert (options.port, options.rest_api_port) == (9000, 9001)
    assert options.enable_batching is True
    assert options.enable_model_warmup is False
    assert options.per_process_gpu_memory_fraction == 0.25
    assert options.tags == ("serve", "gpu")


@pytest.mark.parametrize(
    "argv",
    [
        ["--no_such_flag=1"],
        ["--port=abc"],
        ["--enable_batching=maybe"],
        ["--grpc_dispatcher_spin_micros=-1"],
        ["--grpc_transport=cxx"],
        ["--grpc_max_pending_calls=-5"],
    ],
)
def test_bad_flags_exit_with_a_clear_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_options(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert argv[0].split("=")[0] in err


def test_transport_flags_default_to_native_with_a_pending_bound():
    defaults = parse_options([])
    assert (defaults.grpc_transport, defaults.grpc_max_pending_calls) == ("native", 4096)
    assert defaults.ssl_config_file == ""
    chosen = parse_options(["--grpc_transport=grpcio", "--ssl_config_file=/etc/ssl.conf"])
    assert (chosen.grpc_transport, chosen.ssl_config_file) == ("grpcio", "/etc/ssl.conf")


def test_offload_pool_takes_the_larger_thread_flag():
    assert parse_options(["--grpc_max_threads=3", "--rest_api_num_threads=5"]).offload_threads == 5
    assert parse_options(["--grpc_max_threads=6", "--rest_api_num_threads=2"]).offload_threads == 6


def test_cli_rejects_unknown_flag_without_starting():
    result = subprocess.run(
        [sys.executable, "-m", "dataplane", "--bogus_flag=1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown command line flag(s): --bogus_flag=1" in result.stderr


def test_the_old_body_limit_name_is_an_alias():
    assert parse_options(["--rest_api_max_request_bytes=1000"]).rest_api_max_body_bytes == 1000
    assert parse_options(["--rest_api_max_body_bytes=2000"]).rest_api_max_body_bytes == 2000


@pytest.mark.parametrize(
    "flag",
    [
        "max_request_elements",
        "rest_api_max_body_bytes",
        "rest_api_max_pending_requests",
        "inline_model_call_micros",
    ],
)
def test_negative_bounds_are_refused(flag: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        parse_options([f"--{flag}=-1"])
    assert info.value.code == 2
    assert f"--{flag} must be >= 0" in capsys.readouterr().err
