"""The reload queue on a live data plane: one reload applies, --max_queued_reloads wait, the
next is told UNAVAILABLE at once, and a waiting reload whose caller left never runs.

A reload is held for as long as the test wants by a version whose saved_model.pb is a FIFO:
loading it blocks on opening the file until the test opens the other end.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from tests.e2e.test_admin_auth import AVAILABLE, status_of
from tests.support.processes import DataPlaneProcess

LOADING = 20


def reload_request(entries: dict[str, Path | str]) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    text = " ".join(f'config {{ name: "{n}" base_path: "{p}" }}' for n, p in entries.items())
    text_format.Parse(f"model_config_list {{ {text} }}", request.config)
    return request


def held_model(root: Path) -> Path:
    """A base path whose version 1 blocks its loader until `release_held` opens the FIFO."""
    base = root / "held"
    (base / "1").mkdir(parents=True)
    os.mkfifo(base / "1" / "saved_model.pb")
    return base


def release_held(base: Path) -> bool:
    """Open and close the writing end (non-blocking; the loader may open the file more than
    once); False while no loader has it open."""
    try:
        fd = os.open(base / "1" / "saved_model.pb", os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        assert exc.errno == errno.ENXIO
        return False
    os.close(fd)
    return True


def admitted(reload: grpc.UnaryUnaryMultiCallable, request, timeout: float = 120) -> grpc.Future:
    """A reload call the server queued (it is still waiting after a moment). Until the server
    has heard that an earlier waiter left, its place is taken and the call is refused at
    once: try again then."""
    deadline = time.monotonic() + 30
    while True:
        call = reload.future(request, timeout=timeout)
        try:
            error = call.exception(timeout=0.5)
        except grpc.FutureTimeoutError:
            return call
        assert isinstance(error, grpc.RpcError) and error.code() is grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() < deadline, "no place in the reload queue came free"
        time.sleep(0.2)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_reloads_queue_within_the_bound_and_a_departed_caller_is_never_served(
    start_dataplane: Callable[..., DataPlaneProcess], saved_models: object, tmp_path: Path
) -> None:
    hp2 = saved_models.half_plus_two  # type: ignore[attr-defined]
    plane = start_dataplane(
        f"--model_base_path={hp2}", "--model_name=hp2", "--max_queued_reloads=1"
    )
    held = held_model(tmp_path)
    with grpc.insecure_channel(plane.grpc_target) as channel:
        reload = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest
        applying = reload.future(reload_request({"hp2": hp2, "held": held}), timeout=120)
        wait_for(lambda: status_of(channel, "held") == {1: LOADING}, "the held load")

        # The one place in the queue: a caller whose deadline passes, then one who cancels.
        expired = admitted(reload, reload_request({"hp2": hp2, "expired": hp2}), timeout=2)
        with pytest.raises(grpc.RpcError) as raised:
            expired.result()
        assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        cancelled = admitted(reload, reload_request({"hp2": hp2, "cancelled": hp2}))
        assert cancelled.cancel()

        # Both have left, so their place is free again; the next one fills it...
        waiting = admitted(reload, reload_request({"hp2": hp2, "waiting": hp2}))
        # ...and one more is refused at once.
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            reload(reload_request({"hp2": hp2, "refused": hp2}), timeout=60)
        assert time.monotonic() - started < 5
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        assert raised.value.details() == (
            "a config reload is being applied and 1 more are waiting "
            "(--max_queued_reloads); try again later"
        )
        assert status_of(channel, "hp2") == {123: AVAILABLE}  # served all along

        wait_for(lambda: [release_held(held), applying.done()][1], "the held reload's answer")
        with pytest.raises(grpc.RpcError) as failed:  # an empty saved_model.pb does not load
            applying.result()
        assert failed.value.code() is grpc.StatusCode.UNKNOWN
        assert "{name: held version: 1} due to error" in failed.value.details()
        assert waiting.result(timeout=60).status.error_code == 0
        assert status_of(channel, "waiting") == {123: AVAILABLE}
        for never_ran in ("expired", "cancelled", "refused"):
            assert status_of(channel, never_ran) == {}, never_ran
    log = plane.log_path.read_text()
    assert "expired" not in log and "cancelled" not in log
    shutil.rmtree(held)
