"""No silent deaths: a core thread that cannot go on takes the process down, loudly.

An orchestrator restarts a process that exits; it cannot see a thread that ended. A data
plane whose dispatcher, REST loop, batch threads or pollers died would keep its ports open
and could still look alive, serving nothing. So every core thread body runs `guarded`: an
exception that escapes it (or a body that returns while it should still be running) is
fatal. Fatal means: the traceback goes to the log, the registered hooks run (the server then
reports NOT_SERVING, so balancers stop routing here and Watch streams see it), and after a
short linger the process exits with `FATAL_EXIT_CODE`, whichever thread noticed.

Errors that belong to one call never come here: the front ends fail that call with INTERNAL
(`errors.INTERNAL_MESSAGE`, never the exception's text) and go on serving.

The supervisor is process-wide on purpose: the process is what exits. Tests that run
servers in-process swap `SUPERVISOR` for one whose `exit` records the code instead.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

FATAL_EXIT_CODE = 70  # sysexits.h EX_SOFTWARE: an internal software error
LINGER_SECONDS = 1.0  # NOT_SERVING is visible this long before the process exits


def exit_process(code: int) -> None:
    """End the process from any thread, now: flush the logs first (os._exit skips that)."""
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


class Supervisor:
    """Runs the fatal path once: log, hooks (NOT_SERVING), linger, exit."""

    def __init__(
        self,
        exit: Callable[[int], Any] = exit_process,
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        self.exit = exit
        self.linger_seconds = linger_seconds
        self.failed = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_fatal(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run `hook` first when something is fatal; returns the function that removes it."""
        with self._lock:
            self._hooks.append(hook)
        return lambda: self._remove(hook)

    def _remove(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)

    def fatal(self, what: str, exc: BaseException | None = None) -> None:
        """Take the process down; returns at once, the exit follows from its own thread.

        The exit runs on a non-daemon thread so it also wins over a main thread that is
        returning 0 meanwhile (interpreter shutdown waits for it)."""
        log.critical(
            "%s; exiting with code %d so that the process is restarted",
            what,
            FATAL_EXIT_CODE,
            exc_info=exc,
        )
        with self._lock:
            if self.failed.is_set():
                return
            self.failed.set()
            hooks = list(self._hooks)
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("a fatal-error hook failed")
        threading.Thread(target=self._exit_after_linger, name="fatal-exit").start()

    def _exit_after_linger(self) -> None:
        time.sleep(self.linger_seconds)
        self.exit(FATAL_EXIT_CODE)


SUPERVISOR = Supervisor()


def guarded(
    name: str, body: Callable[..., Any], should_run: Callable[[], bool] | None = None
) -> Callable[..., None]:
    """`body` as a thread body (or pool task) whose escaping exception is fatal.

    `should_run`: for bodies that loop until stopped; if the body returns while it still
    says True, the thread ended unexpectedly, which is fatal too."""

    def run(*args: Any, **kwargs: Any) -> None:
        try:
            body(*args, **kwargs)
        except BaseException as exc:
            SUPERVISOR.fatal(f"{name} failed", exc)
            return
        if should_run is not None and should_run():
            SUPERVISOR.fatal(f"{name} ended while the server was running")

    return run


def guarded_thread(
    name: str,
    body: Callable[[], Any],
    should_run: Callable[[], bool] | None = None,
    daemon: bool = False,
) -> threading.Thread:
    """A thread (not started) running `guarded(name, body, should_run)`."""
    return threading.Thread(target=guarded(name, body, should_run), name=name, daemon=daemon)
