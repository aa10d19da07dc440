"""`python -m tests.dataplane.faulty_dataplane FAULT FLAGS...`: the real data plane (its own
`main`) with one fault injected, for test_supervision's process-level tests.

Faults fire on a trigger sent by the test, a health Check of service `TRIGGER`, so the
server is up and serving first:
- `dispatcher`: the gRPC transport's `next_calls` raises (the dispatcher cannot go on);
- `batch_thread`: a batch thread fails outside any batch (next Predict with batching on).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from grpc_health.v1 import health_pb2

from dataplane import __main__ as entry
from dataplane import batching
from dataplane.transport import Frontend, Transport

TRIGGER = "inject-fault"
_TRIGGER_BYTES = health_pb2.HealthCheckRequest(service=TRIGGER).SerializeToString()


class _Faulty:
    """The real Frontend, its `next_calls` watching for the trigger."""

    def __init__(self, inner: Frontend, on_trigger: Callable[[], None]) -> None:
        self._inner = inner
        self._on_trigger = on_trigger

    def next_calls(self) -> list:
        calls = self._inner.next_calls()
        if any(call.request == _TRIGGER_BYTES for call in calls):
            self._on_trigger()
        return calls

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def _fail_the_transport() -> None:
    raise RuntimeError("injected: the transport failed")


def _arm_the_batch_fault() -> None:
    """The trigger itself is answered normally; the next batch thread's turn fails."""
    batching.BatchScheduler._take_ready = _failing_take_ready  # type: ignore[method-assign]


def _failing_take_ready(self: batching.BatchScheduler) -> None:
    raise RuntimeError("injected: a batch thread failed")


FAULTS = {"dispatcher": _fail_the_transport, "batch_thread": _arm_the_batch_fault}


def main(argv: list[str]) -> int:
    on_trigger = FAULTS[argv[0]]
    opened = Transport.frontend

    def frontend(self: Transport, *args: object) -> _Faulty:
        return _Faulty(opened(self, *args), on_trigger)  # type: ignore[arg-type]

    Transport.frontend = frontend  # type: ignore[method-assign]
    return entry.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
