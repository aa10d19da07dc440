"""A gRPC server that answers every call with one canned message and does nothing else.

It runs the data plane's own native transport and dispatcher loop, so h2load against it
measures what the transport and the load generator alone cost on this machine: the most any
server behind that transport could reach here (bench_batching.py prints it as the ceiling).

    python bench/canned_server.py PORT RESPONSE_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataplane.transport import _native as _grpc_frontend


def serve(port: int, response: bytes) -> None:
    frontend = _grpc_frontend.Frontend([f"127.0.0.1:{port}"], [], 0)
    frontend.start()
    while calls := frontend.next_calls():
        for call in calls:
            if not call.cancelled:
                call.finish(response)


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]).read_bytes())
