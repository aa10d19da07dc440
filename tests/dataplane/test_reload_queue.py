"""ReloadQueue: one reload at a time, a bounded number waiting, cancelled ones never started."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError

import pytest

from dataplane.errors import Code, ServingError
from dataplane.reload_queue import ReloadQueue

TIMEOUT_S = 10


class Work:
    """Reloads that record that they ran; `held` ones wait until released."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def held(self, name: str) -> Callable[[], str]:
        def run() -> str:
            self.ran.append(name)
            self.started.set()
            assert self.release.wait(TIMEOUT_S)
            return name

        return run

    def quick(self, name: str) -> Callable[[], str]:
        def run() -> str:
            self.ran.append(name)
            return name

        return run


@pytest.fixture
def work() -> Iterator[Work]:
    work = Work()
    yield work
    work.release.set()


@pytest.fixture
def make_queue(work: Work) -> Iterator[Callable[[int], ReloadQueue[str]]]:
    """Queues closed at teardown, after `work` releases what it holds, even when a test fails."""
    queues: list[ReloadQueue[str]] = []

    def make(max_waiting: int) -> ReloadQueue[str]:
        queues.append(ReloadQueue(max_waiting))
        return queues[-1]

    yield make
    work.release.set()
    for queue in queues:
        queue.close()


def refused(queue: ReloadQueue[str], run: Callable[[], str]) -> ServingError:
    with pytest.raises(ServingError) as raised:
        queue.submit(run)
    return raised.value


def test_reloads_run_one_at_a_time_in_order(work: Work, make_queue) -> None:
    queue = make_queue(2)
    first = queue.submit(work.held("first"))
    assert work.started.wait(TIMEOUT_S)
    second, third = queue.submit(work.quick("second")), queue.submit(work.quick("third"))
    assert work.ran == ["first"] and not second.done()
    work.release.set()
    assert [f.result(TIMEOUT_S) for f in (first, second, third)] == ["first", "second", "third"]
    assert work.ran == ["first", "second", "third"]


@pytest.mark.parametrize("max_waiting", [0, 1, 3])
def test_past_the_bound_a_reload_is_refused_at_once(
    work: Work, make_queue, max_waiting: int
) -> None:
    queue = make_queue(max_waiting)
    running = queue.submit(work.held("running"))
    assert work.started.wait(TIMEOUT_S)
    waiting = [queue.submit(work.quick(f"w{i}")) for i in range(max_waiting)]
    error = refused(queue, work.quick("one too many"))
    assert error.code is Code.UNAVAILABLE
    assert error.message == (
        f"a config reload is being applied and {max_waiting} more are waiting "
        "(--max_queued_reloads); try again later"
    )
    work.release.set()
    assert running.result(TIMEOUT_S) == "running"
    assert [f.result(TIMEOUT_S) for f in waiting] == [f"w{i}" for i in range(max_waiting)]
    assert "one too many" not in work.ran
    assert queue.submit(work.quick("later")).result(TIMEOUT_S) == "later"  # room again


def test_a_cancelled_reload_is_never_started_and_frees_its_place(work: Work, make_queue) -> None:
    queue = make_queue(1)
    running = queue.submit(work.held("running"))
    assert work.started.wait(TIMEOUT_S)
    gone = queue.submit(work.quick("gone"))
    assert gone.cancel()  # what the dispatcher does when its caller leaves
    after = queue.submit(work.quick("after"))  # the cancelled one holds no place
    work.release.set()
    assert running.result(TIMEOUT_S) == "running" and after.result(TIMEOUT_S) == "after"
    assert work.ran == ["running", "after"]


def test_a_failing_reload_reports_its_error_and_the_queue_goes_on(work: Work, make_queue) -> None:
    queue = make_queue(1)

    def broken() -> str:
        raise ServingError(Code.INTERNAL, "broken")

    with pytest.raises(ServingError, match="broken"):
        queue.submit(broken).result(TIMEOUT_S)
    assert queue.submit(work.quick("next")).result(TIMEOUT_S) == "next"


def test_close_cancels_what_waits_and_lets_the_running_one_finish(work: Work, make_queue) -> None:
    queue = make_queue(1)
    running = queue.submit(work.held("running"))
    assert work.started.wait(TIMEOUT_S)
    waiting = queue.submit(work.quick("waiting"))
    closer = threading.Thread(target=queue.close)
    closer.start()
    with pytest.raises(CancelledError):
        waiting.result(TIMEOUT_S)
    work.release.set()
    closer.join(TIMEOUT_S)
    assert not closer.is_alive() and running.result() == "running"
    assert work.ran == ["running"]
    error = refused(queue, work.quick("too late"))
    assert (error.code, error.message) == (Code.UNAVAILABLE, "the server is shutting down")


def test_a_queue_never_used_closes_without_a_thread(make_queue) -> None:
    queue = make_queue(1)
    queue.close()
    assert not any(t.name == "reload" for t in threading.enumerate())
