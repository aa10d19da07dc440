"""`python -m tests.dataplane.faulty_dataplane FAULT FLAGS...`: the real data plane (its own
`main`) with one fault injected, for test_supervision's process-level tests.

Faults fire on a trigger sent by the test, a health Check of service `TRIGGER`, so the
server is up and serving first:
- `dispatcher`: the gRPC transport's `next_calls` raises (the dispatcher cannot go on);
- `batch_thread`: a batch thread fails outside any batch (next Predict with batching on).
"""

from __future__ import annotations

import sys

from grpc_health.v1 import health_pb2

from dataplane import __main__ as entry
from dataplane import batching, grpc_server

TRIGGER = "inject-fault"
_TRIGGER_BYTES = health_pb2.HealthCheckRequest(service=TRIGGER).SerializeToString()


class _FailingFrontend(grpc_server._grpc_frontend.Frontend):
    def next_calls(self) -> list:
        calls = super().next_calls()
        if any(call.request == _TRIGGER_BYTES for call in calls):
            raise RuntimeError("injected: the transport failed")
        return calls


class _ArmingFrontend(grpc_server._grpc_frontend.Frontend):
    """Arms the batch-thread fault when the trigger arrives (and answers it normally)."""

    def next_calls(self) -> list:
        calls = super().next_calls()
        if any(call.request == _TRIGGER_BYTES for call in calls):
            batching.BatchScheduler._take_ready = _failing_take_ready  # type: ignore[method-assign]
        return calls


def _failing_take_ready(self: batching.BatchScheduler) -> None:
    raise RuntimeError("injected: a batch thread failed")


FAULTS = {"dispatcher": _FailingFrontend, "batch_thread": _ArmingFrontend}


def main(argv: list[str]) -> int:
    grpc_server._grpc_frontend.Frontend = FAULTS[argv[0]]  # type: ignore[misc]
    return entry.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
