"""server.py's flag parsing that needs no running server: --grpc_channel_arguments."""

from __future__ import annotations

import pytest

from dataplane.errors import Code
from dataplane.server import StartupError, channel_arguments


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
