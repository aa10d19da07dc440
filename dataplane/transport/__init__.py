"""The gRPC transports, the contract they share, and the choice between them.

A transport is a module with a `Frontend` that owns the listening sockets, HTTP/2, TLS, deadlines
and cancellation, and hands calls in batches to ONE Python dispatcher (`grpc_server.py`), which
answers each with bytes and a status. `--grpc_transport=native` is the extension built from
`native/`; where it is not built the server still runs, on grpcio, and says so once.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

log = logging.getLogger(__name__)

TRANSPORTS = ("native", "grpcio")
ChannelArgs = Sequence[tuple[str, int | str]]
# What a Frontend takes for TLS (transport/tls.py reads it from --ssl_config_file):
# (server_key_pem, server_cert_pem, custom_ca_pem or b"", client_verify).
TlsTuple = tuple[bytes, bytes, bytes, bool]

_NATIVE = "dataplane.transport._native"  # the Rust extension built from native/
_GRPCIO = "dataplane.transport.grpcio_frontend"


class Call(Protocol):
    """One call whose request has arrived (and, again, its cancellation, if Python holds it)."""

    @property
    def id(self) -> int: ...  # unique per call
    @property
    def method(self) -> str: ...  # "/package.Service/Method"
    @property
    def request(self) -> bytes: ...
    @property
    def cancelled(self) -> bool: ...  # client cancelled, deadline passed, or transport ended it
    @property
    def metadata(self) -> list[tuple[str, str]]: ...  # ASCII, keys lower-case, no "-bin" keys
    @property
    def client_verified(self) -> bool: ...  # TLS verified a client certificate (custom_ca)
    @property
    def expired(self) -> bool: ...  # the client's deadline has passed

    def finish(self, response: bytes) -> bool: ...
    def abort(self, code: int, message: str) -> bool: ...
    def write(self, message: bytes) -> bool: ...
    def close_stream(self) -> bool: ...


class Frontend(Protocol):
    def start(self) -> list[int]: ...
    def shutdown(self, grace_seconds: float) -> None: ...
    def next_calls(self) -> Sequence[Call]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Transport:
    """A transport module and what every Frontend it opens is given besides its addresses."""

    module: ModuleType
    tls: TlsTuple | None = None
    max_pending_calls: int = 0

    @property
    def name(self) -> str:
        return self.module.__name__

    def frontend(
        self, addresses: Sequence[str], channel_args: ChannelArgs, spin_microseconds: int
    ) -> Frontend:
        extra: dict[str, object] = {}
        if self.tls is not None:
            extra["tls"] = self.tls
        if self.max_pending_calls:
            extra["max_pending_calls"] = self.max_pending_calls
        return self.module.Frontend(list(addresses), list(channel_args), spin_microseconds, **extra)


def select_transport(
    name: str = "native", tls: TlsTuple | None = None, max_pending_calls: int = 0
) -> Transport:
    """The transport `--grpc_transport` names; `native` falls back to grpcio, with one
    warning, where the extension is not built."""
    if name not in TRANSPORTS:
        raise ValueError(f"unknown gRPC transport {name!r}; expected one of {TRANSPORTS}")
    module = _native_module() if name == "native" else None
    if module is None:
        module = importlib.import_module(_GRPCIO)
    return Transport(module, tls, max_pending_calls)


def _native_module() -> ModuleType | None:
    try:
        return importlib.import_module(_NATIVE)
    except ImportError:
        log.warning("the native gRPC transport is not built; serving gRPC with grpcio")
        return None
