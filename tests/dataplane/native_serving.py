"""A native Frontend driven by a minimal dispatcher thread, for the transport's own tests:
what the transport does is seen without grpc_server.py's routing in the way."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dataplane.transport import _native

Handler = Callable[[_native.Call], None]


def echo(call: _native.Call) -> None:
    call.finish(b"echo:" + call.request)


@contextmanager
def serving(
    handle: Handler = echo, address: str = "127.0.0.1:0", **frontend: Any
) -> Iterator[tuple[_native.Frontend, int]]:
    """A started Frontend whose calls go to `handle` on one thread; (frontend, port)."""
    channel_args = frontend.pop("channel_args", [])
    server = _native.Frontend([address], channel_args, **frontend)
    (port,) = server.start()

    def dispatch() -> None:
        while calls := server.next_calls():
            for call in calls:
                if not call.cancelled:
                    handle(call)

    thread = threading.Thread(target=dispatch, name="test-dispatch")
    thread.start()
    try:
        yield server, port
    finally:
        server.shutdown(0)
        server.close()
        thread.join(10)
