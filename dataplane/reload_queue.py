"""Reloads one at a time, a bounded number waiting, none started for a caller who left.

A reload holds the manager until every version it adds has loaded (seconds to minutes), and
reloads apply one after another. Without a bound, a client repeating reloads stacks them up
without end and every caller behind waits for all of them. Here one reload runs, at most
`max_waiting` wait behind it, and the next caller is told UNAVAILABLE at once. A waiting
reload is a Future: the front end cancels it when its caller goes away or its deadline
passes, and a cancelled one is never started.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from dataplane.errors import Code, ServingError

T = TypeVar("T")


Item = tuple[Future[T], Callable[[], T]]


class ReloadQueue(Generic[T]):
    """Runs submitted work on one thread, in order, with at most `max_waiting` queued.

    The thread starts with the first submission, so a server that fails to start has none
    to stop."""

    def __init__(self, max_waiting: int) -> None:
        self._max_waiting = max_waiting
        self._waiting: deque[Item[T]] = deque()
        self._busy = False  # a reload is being applied
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run_forever, name="reload")

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Queue `work`; UNAVAILABLE (at once) when `max_waiting` are already waiting.

        `work` runs in the caller's context (the call it answers), so that the reload's log
        lines carry the caller's request id (request_ids.py)."""
        future: Future[T] = Future()
        work = functools.partial(contextvars.copy_context().run, work)
        with self._ready:
            if self._closed:
                raise ServingError(Code.UNAVAILABLE, "the server is shutting down")
            # callers who left make room at once
            self._waiting = deque(item for item in self._waiting if not item[0].cancelled())
            if self._busy and len(self._waiting) >= self._max_waiting:
                raise ServingError(
                    Code.UNAVAILABLE,
                    f"a config reload is being applied and {len(self._waiting)} more are waiting "
                    "(--max_queued_reloads); try again later",
                )
            self._waiting.append((future, work))
            self._ready.notify()
            if self._thread.ident is None:
                self._thread.start()
        return future

    def close(self) -> None:
        """Cancel what waits, let the reload in progress finish, stop the thread."""
        with self._ready:
            self._closed = True
            for future, _ in self._waiting:
                future.cancel()
            self._waiting.clear()
            self._ready.notify()
        if self._thread.ident is not None:
            self._thread.join()

    def _run_forever(self) -> None:
        while (item := self._next()) is not None:
            future, work = item
            try:
                result, error = work(), None
            except BaseException as exc:  # the caller gets it; this thread goes on
                result, error = None, exc
            with self._ready:
                self._busy = False  # before the caller hears: its next reload finds room
            if error is None:
                future.set_result(result)  # type: ignore[arg-type]
            else:
                future.set_exception(error)

    def _next(self) -> Item[T] | None:
        """The next reload whose caller still waits, marked running; None once closed."""
        with self._ready:
            while True:
                self._ready.wait_for(lambda: self._waiting or self._closed)
                if not self._waiting:
                    return None
                future, work = self._waiting.popleft()
                if future.set_running_or_notify_cancel():  # False: its caller left
                    self._busy = True
                    return future, work
