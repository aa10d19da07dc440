"""Where a front end's model call runs: inline on its one dispatcher thread, or on a thread.

TensorFlow releases the GIL while a model runs, so calls on other threads use other cores while
the dispatcher decodes and answers the next requests. A hand-off costs a thread wake-up and
two GIL transfers (tens of microseconds), so the rule (docs/performance.md, "Where model calls
run") is:

- a call typically shorter than `inline_seconds` runs inline: the hop would cost more than it
  saves;
- a call of `SLOW_CALL_SECONDS` or more always goes to a thread: inline it would stall every
  other request behind it;
- a call in between goes to a thread while fewer calls than there are cores run on threads
  (a core is idle), and inline otherwise: with every core busy a hop only adds its cost, and
  running the call on the dispatcher holds new work back until a core frees up.

`inline_seconds` = `SLOW_CALL_SECONDS` (--inline_model_call_micros=2000) is the single-thread
design, where every call under 2 ms ran inline.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

# A call this slow or slower never runs on a dispatcher thread.
SLOW_CALL_SECONDS = 0.002
# Calls faster than this run inline by default: a hand-off measured 20-40 us of latency and
# about as much CPU on this machine, so below ~100 us of model time it cannot pay for itself.
DEFAULT_INLINE_SECONDS = 0.0001


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, which containers narrow)."""
    return len(os.sched_getaffinity(0)) or 1


class Offload:
    """Threads for model calls, and a count of the calls on them, shared by the front ends."""

    def __init__(
        self,
        executor: Executor,
        cores: int | None = None,
        inline_seconds: float = DEFAULT_INLINE_SECONDS,
    ) -> None:
        self._executor = executor
        self.cores = cores or usable_cores()
        self.inline_seconds = inline_seconds
        self._lock = threading.Lock()
        self._busy = 0  # calls submitted and not yet finished

    @property
    def busy(self) -> int:
        return self._busy

    def place(
        self, typical_seconds: float, fn: Callable[..., Any], *args: Any
    ) -> Future[Any] | None:
        """Run `fn(*args)` on a thread and return its future, or None: run it inline."""
        if typical_seconds < self.inline_seconds:
            return None
        with self._lock:
            if typical_seconds < SLOW_CALL_SECONDS and self._busy >= self.cores:
                return None
            self._busy += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: Future[Any] | None) -> None:
        with self._lock:
            self._busy -= 1
