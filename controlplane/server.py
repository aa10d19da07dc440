"""The processes of one control-plane instance: gunicorn for HTTP, one fleet worker beside it.

`serve` = this process runs the fleet worker (fleet.py) and starts gunicorn (`http`) as its
child; gunicorn's master forks the HTTP workers. Why not the fleet inside a worker or the
master: workers are equals that gunicorn kills and replaces at will (an elected one would
need an election), and the master forks repeatedly, which a process holding gRPC channels
and threads must not do. One supervisor process keeps "one fleet worker per instance" true by
construction, the HTTP workers wake it with SIGUSR1 after a change (fleet.Fleet.notify), and
two instances stay safe through the push leases as before. Figures and operations:
docs/operations.md.

The app is built once in the gunicorn master before it forks the workers (`preload_app`): the
port opens only when the app can answer, and a worker boots in milliseconds instead of importing
TensorFlow's protos for seconds, which on a loaded machine outlasted gunicorn's watchdog and got
booting workers killed. Nothing in the app talks to the database or a data plane before a
request, so nothing is shared across the fork but code (the engine's empty pool is reset in
each worker all the same).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from gunicorn.app.base import BaseApplication

from dataplane import json_logs

from .config import HttpOptions, Settings

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
# What `serve` and `fleet` take in their main thread (see _hold_signals).
HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD}
SUPERVISE_POLL_S = 1.0


class HttpServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with gthread workers, configured from `HttpOptions` instead of its own CLI."""

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        self.settings = replace(settings, run_fleet=False)
        self.options = gunicorn_options(settings.http, host, port, settings.log_format)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Called once in the master (preload_app); workers open their own connections."""
        from .app import create_app  # TensorFlow Serving's protos: only the HTTP side needs them

        return create_app(self.settings)


def gunicorn_options(
    http: HttpOptions, host: str, port: int, log_format: str = json_logs.TEXT
) -> dict[str, Any]:
    """gunicorn settings: bounded threads per worker; SIGTERM drains for graceful_timeout."""
    options: dict[str, Any] = {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "worker_class": "gthread",
        "workers": http.workers,
        "threads": http.threads,
        "timeout": http.timeout_s,
        "graceful_timeout": http.graceful_timeout_s,
        "keepalive": http.keepalive_s,
        "forwarded_allow_ips": http.forwarded_allow_ips,
        "errorlog": "-",
        "preload_app": True,
        "post_fork": _start_worker,
        "control_socket_disable": True,
        "proc_name": "modelplane-controlplane",
    }
    if log_format == json_logs.JSON:
        options["logconfig_dict"] = GUNICORN_JSON_LOGGING
    if http.cert_file or http.key_file:
        options.update(certfile=http.cert_file, keyfile=http.key_file)
    return options


def _json_handler(formatter: str) -> dict[str, str]:
    return {"class": "logging.StreamHandler", "formatter": formatter, "stream": "ext://sys.stderr"}


# gunicorn's logging when logs are JSON: its error log and the app's records as JSON lines on
# stderr (json_logs.py), and one access line per request with its id, status and time.
GUNICORN_JSON_LOGGING: dict[str, Any] = {
    "root": {"level": "INFO", "handlers": ["json"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["json"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
    "handlers": {"json": _json_handler("json"), "access": _json_handler("access")},
    "formatters": {
        "json": {"()": "dataplane.json_logs.JsonFormatter"},
        "access": {"()": "controlplane.request_ids.AccessFormatter"},
    },
}


def _start_worker(_server: Any, worker: Any) -> None:
    """In a new worker: forget any pooled connection inherited from the master (SQLAlchemy's
    advice for forked processes; there should be none, nothing connects before a request),
    and start the traffic scraper whose window this worker's API answers from (threads do not
    survive the fork, so it cannot start in the master)."""
    plane = worker.app.wsgi().extensions["modelplane"]
    plane.db.engine.dispose(close=False)
    plane.traffic.start()


def run_http(settings: Settings, host: str, port: int) -> int:
    """gunicorn in the foreground until SIGTERM (graceful) or SIGINT; its exit code."""
    try:
        HttpServer(settings, host, port).run()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


def run_serve(settings: Settings, http_argv: Sequence[str]) -> int:
    """Start `http_argv` (the gunicorn child), then run the fleet worker here until either
    ends: SIGTERM/SIGINT drain the HTTP workers and stop the fleet; if gunicorn dies (a port
    in use...), the fleet stops too and the exit code is gunicorn's, so that a supervisor sees
    the failure instead of a half-alive instance."""
    env = {
        **os.environ,
        "MODELPLANE_FLEET_PID": str(os.getpid()),
        "MODELPLANE_SECRET_KEY": settings.secret_key,  # dev mode's generated key, shared
    }
    _hold_signals()
    http = subprocess.Popen(list(http_argv), env=env, preexec_fn=_prepare_child)
    fleet, db = _start_fleet(settings)
    try:
        stopping = _supervise(fleet, http)
    finally:
        fleet.stop()
        db.dispose()
    code = http.wait()
    if not stopping:
        log.error("the HTTP server exited with %s; stopping", code)
        return code or 1
    return code


def run_fleet(settings: Settings) -> int:
    """Only the fleet worker (for an instance whose HTTP side runs elsewhere)."""
    _hold_signals()
    fleet, db = _start_fleet(settings)
    try:
        _supervise(fleet, None)
    finally:
        fleet.stop()
        db.dispose()
    return 0


def _hold_signals() -> None:
    """Block the handled signals in the main thread before any other thread exists.

    Threads inherit the mask, so the kernel keeps these signals pending for `_supervise`
    instead of handing one to whichever thread is free (a gRPC or fleet thread: it does so
    whenever the main thread has a signal pending already). Python would only flag such a
    signal for the main thread, which sleeps in a blocking call and would never see it: the
    wake-up waited for the periodic pass and SIGTERM for nothing. A signal that comes before
    the fleet runs is kept too, and SIGUSR1 never gets its default action (terminate).
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)


def _supervise(fleet: Any, http: subprocess.Popen[bytes] | None) -> bool:
    """Take the signals in the main thread until a stop, or until `http` exits: SIGUSR1 wakes
    the fleet, SIGTERM/SIGINT drain gunicorn (then wait for it) or end a lone fleet.

    True when a signal asked to stop. SIGCHLD ends the wait when gunicorn exits; the poll every
    SUPERVISE_POLL_S is only a floor under that.
    """
    stopping = False
    while http is None or http.poll() is None:
        info = signal.sigtimedwait(HANDLED, SUPERVISE_POLL_S)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_signo == signal.SIGUSR1:
            fleet.notify()
            continue
        stopping = True
        if http is None:
            break
        if http.poll() is None:
            http.send_signal(signal.SIGTERM)
    return stopping


def _start_fleet(settings: Settings) -> tuple[Any, Any]:
    from .db import Database
    from .fleet import Fleet  # TensorFlow Serving's protos: after gunicorn is forked off

    db = Database(settings.database_url, settings.pool)
    fleet = Fleet(db, settings)
    fleet.start()
    log.info("fleet worker running in pid %d", os.getpid())
    return fleet, db


def _prepare_child() -> None:
    """In the child before exec: gunicorn handles its own signals, so they are unblocked."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
    _die_with_parent()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when `serve` dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
