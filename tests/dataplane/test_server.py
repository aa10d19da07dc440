"""server.py's flag handling that needs no running server: --grpc_channel_arguments and
the intra-op threads a long model may get."""

from __future__ import annotations

import pytest

from dataplane.errors import Code
from dataplane.offload import usable_cores
from dataplane.options import ServerOptions
from dataplane.servable import SessionOptions
from dataplane.server import StartupError, channel_arguments, wide_loader


def test_channel_arguments_merge_over_the_unlimited_defaults() -> None:
    assert channel_arguments("grpc.max_receive_message_length=64, grpc.lb_policy_name=x") == [
        ("grpc.max_receive_message_length", 64),
        ("grpc.max_send_message_length", -1),
        ("grpc.lb_policy_name", "x"),
    ]


@pytest.mark.parametrize("pair", ["grpc.keepalive_time_ms", "=5"])
def test_a_channel_argument_without_key_and_value_is_refused(pair: str) -> None:
    with pytest.raises(StartupError) as raised:
        channel_arguments(f"grpc.max_send_message_length=1,{pair}")
    assert raised.value.code is Code.INVALID_ARGUMENT
    assert raised.value.message == f"--grpc_channel_arguments: expected key=value, got {pair!r}"


def test_only_unset_intra_op_flags_let_long_models_load_wide(saved_models) -> None:
    flagged = SessionOptions.from_server_options(ServerOptions(tensorflow_intra_op_parallelism=1))
    assert wide_loader(flagged) is None
    fitted = SessionOptions.from_server_options(ServerOptions())
    assert fitted.intra_op_parallelism == 1
    wide = wide_loader(fitted)
    assert wide is not None
    servable = wide("h", 123, f"{saved_models.half_plus_two}/123")
    assert servable.intra_op_threads == usable_cores() >= 2
    servable.close()
