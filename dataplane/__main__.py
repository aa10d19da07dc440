"""`python -m dataplane`: tensorflow_model_server's command line.

Startup fails fast: a bad flag, an unreadable or invalid file or a port in use prints one
line on stderr and exits non-zero, after stopping whatever had started (docs/operations.md).
"""

from __future__ import annotations

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dataplane import __version__
from dataplane.options import parse_options


def main(argv: list[str]) -> int:
    options = parse_options(argv)
    if options.version:
        print(f"modelplane dataplane {__version__} (tensorflow_model_server compatible)")
        return 0
    from dataplane import json_logs, supervision
    from dataplane.request_ids import log_context

    json_logs.configure(options.logs_format, log_context, capture_native=True)
    from dataplane.server import DataPlane, StartupError

    try:
        plane = DataPlane(options)
    except StartupError as exc:
        return _failed_to_start(exc)
    try:
        plane.start()
    except StartupError as exc:
        plane.stop(0)  # whatever started (pollers, the gRPC port) must not outlive us
        return _failed_to_start(exc)
    # The drain runs off the signal handler; main waits for all of it (not just for gRPC to
    # stop), since unloading needs worker pools that interpreter shutdown would refuse.
    drain = supervision.guarded_thread("drain", lambda: plane.stop(options.grace_period_seconds))

    def on_signal(signum: int, _frame: object) -> None:
        if drain.ident is None:  # a second signal changes nothing
            drain.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    plane.wait()
    if drain.ident is not None:
        drain.join()
    if supervision.SUPERVISOR.failed.is_set():  # its exit thread ends the process
        return supervision.FATAL_EXIT_CODE
    return 0


def _failed_to_start(error: Exception) -> int:
    """tensorflow_model_server's last words and exit status -1 (255), as one line on stderr
    (TF Serving writes it to stdout; stderr is where supervisors look for why a start failed)."""
    print(f"Failed to start server. Error: {error}", file=sys.stderr, flush=True)
    return 255


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
