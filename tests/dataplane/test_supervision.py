"""No silent deaths: faults injected into live servers and core threads.

A fault that belongs to one call fails that call with INTERNAL and a fixed message (never the
exception's text) and the server goes on; a core thread that cannot go on is fatal: hooks
(NOT_SERVING) first, then exit code 70. In-process tests swap the process-wide supervisor for
one that records the exit; the last tests run the real process and watch it die.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from dataplane import batching, supervision
from dataplane.errors import INTERNAL_MESSAGE, Code, ServingError
from dataplane.grpc_server import GrpcServer, Route, service_routes
from dataplane.health import HealthService
from dataplane.manager import ModelManager
from dataplane.options import ServerOptions
from dataplane.signatures import TensorSpec
from dataplane.sources import Poller
from dataplane.supervision import FATAL_EXIT_CODE, Supervisor, guarded, guarded_thread
from tests.dataplane.fakes import config_list, make_versions, model_entry, wait_until
from tests.dataplane.faulty_dataplane import TRIGGER
from tests.support.processes import DataPlaneProcess

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
Request = health_pb2.HealthCheckRequest
Response = health_pb2.HealthCheckResponse
SECRET = "/secret/path/in/an/exception"


@dataclass
class Recorded:
    """A supervisor that records instead of exiting, and what it saw."""

    supervisor: Supervisor
    exits: list[int] = field(default_factory=list)
    hook_ran_before_exit: list[bool] = field(default_factory=list)

    def wait_for_exit(self, timeout: float = 5.0) -> int:
        wait_until(lambda: bool(self.exits), timeout)
        return self.exits[0]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    exits: list[int] = []
    record = Recorded(Supervisor(exit=exits.append, linger_seconds=0.05), exits)
    record.supervisor.on_fatal(lambda: record.hook_ran_before_exit.append(not exits))
    monkeypatch.setattr(supervision, "SUPERVISOR", record.supervisor)
    return record


# ------------------------------------------------------------------ the supervisor itself


def test_an_exception_escaping_a_guarded_thread_runs_the_hooks_then_exits_70(recorded) -> None:
    def body() -> None:
        raise RuntimeError("boom")

    guarded_thread("worker", body).start()
    assert recorded.wait_for_exit() == FATAL_EXIT_CODE == 70
    assert recorded.hook_ran_before_exit == [True]


def test_a_loop_that_returns_while_it_should_run_is_fatal_but_not_after_a_stop(recorded) -> None:
    stopped = False
    guarded("loop", lambda: None, should_run=lambda: not stopped)()
    assert recorded.wait_for_exit() == FATAL_EXIT_CODE
    recorded.exits.clear()
    stopped = True
    guarded("loop", lambda: None, should_run=lambda: not stopped)()
    time.sleep(0.2)
    assert recorded.exits == []


def test_fatal_takes_the_process_down_once(recorded) -> None:
    recorded.supervisor.fatal("first")
    recorded.supervisor.fatal("second")
    recorded.wait_for_exit()
    time.sleep(0.2)
    assert (recorded.exits, recorded.hook_ran_before_exit) == ([FATAL_EXIT_CODE], [True])


# ------------------------------------------------------------------ gRPC dispatcher


class FaultyHandlers:
    """Check faults by the service it names; anything else is answered SERVING."""

    def check(self, request: Request) -> Response | Future[Response]:
        match request.service:
            case "raises":
                raise RuntimeError(f"cannot open {SECRET}")
            case "not-a-message":
                return "a handler bug"  # type: ignore[return-value]
            case "later-not-a-message":  # the bad answer arrives through a future's callback
                later: Future = Future()
                threading.Timer(0.05, later.set_result, ["not a message"]).start()
                return later
        return Response(status=Response.SERVING)

    def watch(self, request: Request, stream: object) -> None:
        raise RuntimeError(f"stream handler bug at {SECRET}")


class BrokenRequestType:
    """A request type whose decoding fails with something other than DecodeError."""

    DESCRIPTOR = Request.DESCRIPTOR

    @staticmethod
    def FromString(data: bytes) -> Request:
        raise MemoryError(f"decoding {SECRET}")


@pytest.fixture
def grpc_server() -> Iterator[tuple[GrpcServer, grpc.Channel]]:
    handlers = FaultyHandlers()
    routes = service_routes(HEALTH, {"Check": handlers.check, "Watch": handlers.watch})
    routes["/grpc.health.v1.Health/Broken"] = Route(
        BrokenRequestType,  # type: ignore[arg-type]
        handlers.check,
        routes["/grpc.health.v1.Health/Check"].kind,
    )
    server = GrpcServer(routes, [])
    port = server.start(["127.0.0.1:0"])
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield server, channel
    channel.close()
    server.stop(0)


def check(channel: grpc.Channel, service: str, method: str = "Check") -> Response:
    call = channel.unary_unary(
        f"/grpc.health.v1.Health/{method}",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    return call(Request(service=service), timeout=5)


@pytest.mark.parametrize(
    ("service", "method"),
    [
        ("raises", "Check"),
        ("not-a-message", "Check"),
        ("later-not-a-message", "Check"),
        ("any", "Broken"),
    ],
)
def test_a_failing_call_is_internal_without_its_text_and_the_server_goes_on(
    recorded, grpc_server, service: str, method: str
) -> None:
    _, channel = grpc_server
    with pytest.raises(grpc.RpcError) as caught:
        check(channel, service, method)
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.INTERNAL,
        INTERNAL_MESSAGE,
    )
    assert SECRET not in caught.value.details()
    assert check(channel, "fine").status == Response.SERVING
    assert recorded.exits == []


def test_a_failing_stream_handler_is_internal(recorded, grpc_server) -> None:
    _, channel = grpc_server
    watch = health_pb2_grpc.HealthStub(channel).Watch(Request(service="x"), timeout=5)
    with pytest.raises(grpc.RpcError) as caught:
        next(watch)
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.INTERNAL,
        INTERNAL_MESSAGE,
    )
    assert check(channel, "fine").status == Response.SERVING


class FailingFrontend:
    """The transport's frontend whose next batch of calls cannot be taken."""

    def __init__(self, real: object) -> None:
        self._real = real

    def next_calls(self) -> list:
        raise RuntimeError("the transport failed")

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def test_a_dispatcher_that_cannot_take_calls_is_fatal(recorded, grpc_server) -> None:
    server, channel = grpc_server
    server._frontend = FailingFrontend(server._frontend)  # type: ignore[assignment]
    check(channel, "fine")  # the round after this one fails
    assert recorded.wait_for_exit() == FATAL_EXIT_CODE
    assert recorded.hook_ran_before_exit == [True]


# ------------------------------------------------------------------ batch threads


class Servable:
    name = "m"
    version = 1


class FailingSignature:
    """A model whose kernel fails with an exception that is not a ServingError."""

    key = "serving_default"

    def __init__(self) -> None:
        spec = TensorSpec("x", "x:0", types_pb2.DT_FLOAT, (None, 2))
        self.inputs = {"x": spec}
        self.outputs = {"y": spec}
        self.fail = True

    def run(self, feeds, output_keys=()) -> dict:
        if self.fail:
            raise RuntimeError(f"kernel crashed reading {SECRET}")
        return {"y": feeds["x"] * 2}


@pytest.fixture
def runner() -> Iterator[batching.BatchingRunner]:
    runner = batching.BatchingRunner(
        batching.BatchingConfig(max_batch_size=8, batch_timeout_micros=1000, num_batch_threads=1)
    )
    yield runner
    runner.close()


def test_a_batch_that_raises_fails_its_callers_with_internal_and_batching_goes_on(
    recorded, runner
) -> None:
    signature = FailingSignature()
    x = {"x": np.ones((1, 2), np.float32)}
    with pytest.raises(ServingError) as caught:
        runner(Servable(), signature, x, ())
    assert (caught.value.code, caught.value.message) == (Code.INTERNAL, INTERNAL_MESSAGE)
    signature.fail = False
    assert runner(Servable(), signature, x, ())["y"].tolist() == [[2.0, 2.0]]
    assert recorded.exits == []


def test_a_batch_thread_that_fails_outside_a_batch_is_fatal(recorded, runner, monkeypatch) -> None:
    signature = FailingSignature()
    signature.fail = False
    runner(Servable(), signature, {"x": np.ones((1, 2), np.float32)}, ())  # threads are up

    def broken(self) -> None:
        raise RuntimeError("scheduler bug")

    monkeypatch.setattr(batching.BatchScheduler, "_take_ready", broken)
    answer = runner.submit(Servable(), signature, {"x": np.ones((1, 2), np.float32)}, ())
    assert recorded.wait_for_exit() == FATAL_EXIT_CODE
    assert not answer.done()  # its caller is answered by the process exit (UNAVAILABLE)
    monkeypatch.undo()  # let the fixture close the runner


# ------------------------------------------------------------------ pollers, manager, health


def test_a_poller_whose_source_raises_keeps_polling_and_a_dead_one_is_fatal(recorded) -> None:
    rounds: list[int] = []

    def poll() -> None:
        rounds.append(1)
        if len(rounds) < 3:
            raise OSError(f"cannot list {SECRET}")
        raise KeyboardInterrupt  # escapes `except Exception`: the thread cannot go on

    poller = Poller("test-poll", 0.001, poll)
    poller.start()
    assert recorded.wait_for_exit() == FATAL_EXIT_CODE
    assert len(rounds) == 3
    poller.stop()


def test_an_unload_whose_close_raises_still_ends_the_version(
    recorded, make_manager, loader, tmp_path: Path
) -> None:
    manager = make_manager()
    base = make_versions(tmp_path / "m", 1)
    assert manager.apply_config(config_list(model_entry("m", base))).code is Code.OK

    def close() -> None:
        raise OSError("session already gone")

    loader.loaded[0].close = close
    assert manager.apply_config(config_list()).code is Code.OK
    wait_until(lambda: manager.model_status("m")[0].state.name == "END")
    assert recorded.exits == []


def test_a_load_worker_that_fails_past_its_retries_is_fatal(
    recorded, loader, tmp_path: Path, monkeypatch
) -> None:
    # Not make_manager: the version stays LOADING for good (why this is fatal), so this
    # manager could never shut down; the process it stands for has exited.
    manager = ModelManager(ServerOptions(max_num_load_retries=0), loader)

    def broken(*args: object) -> None:
        raise RuntimeError("manager bug")

    monkeypatch.setattr(manager, "_load_with_retries", broken)
    threading.Thread(
        target=manager.apply_config,
        args=(config_list(model_entry("m", make_versions(tmp_path / "m", 1))),),
        daemon=True,  # the reload waits for a version that will never settle
    ).start()
    assert recorded.wait_for_exit() == FATAL_EXIT_CODE


class FlakyManager:
    """model_status fails once the watcher polls it (a bug in the manager, say)."""

    def __init__(self) -> None:
        self.broken = False

    def model_names(self) -> list[str]:
        return ["m"]

    def model_status(self, name: str, version: int | None = None) -> list:
        if self.broken:
            raise RuntimeError("manager bug")
        return []


class Stream:
    active = True

    def __init__(self) -> None:
        self.sent: list[int] = []

    def send(self, message: Response) -> bool:
        self.sent.append(message.status)
        return True

    def close(self) -> None:
        self.active = False


def test_a_failing_health_watcher_is_fatal(recorded) -> None:
    manager = FlakyManager()
    health = HealthService(manager, watch_interval_seconds=0.01)  # type: ignore[arg-type]
    health.watch(Request(service="m"), Stream())  # type: ignore[arg-type]
    manager.broken = True
    assert recorded.wait_for_exit() == FATAL_EXIT_CODE


# ------------------------------------------------------------------ the real process


def start_faulty(fault: str, saved_models, tmp_path: Path, *flags: str) -> DataPlaneProcess:
    process = DataPlaneProcess(
        [f"--model_base_path={saved_models.mlp}", "--model_name=mlp", *flags],
        tmp_path / f"{fault}.log",
        command=(sys.executable, "-m", "tests.dataplane.faulty_dataplane", fault),
    )
    return process.start()  # type: ignore[return-value]


def watch_until_serving(channel: grpc.Channel) -> Iterator[Response]:
    stream = health_pb2_grpc.HealthStub(channel).Watch(Request(), timeout=60)
    deadline = time.monotonic() + 30
    for answer in stream:
        if answer.status == Response.SERVING:
            return stream
        assert time.monotonic() < deadline
    raise AssertionError("never SERVING")


def statuses_until_the_end(stream: Iterator[Response]) -> list[int]:
    seen = []
    try:
        for answer in stream:
            seen.append(answer.status)
    except grpc.RpcError:
        pass  # the process is gone
    return seen


def float_tensor(rows: list[list[float]]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=len(rows))
    proto.tensor_shape.dim.add(size=len(rows[0]))
    proto.float_val.extend(value for row in rows for value in row)
    return proto


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["dispatcher", "batch_thread"])
def test_a_dead_core_thread_reports_not_serving_then_exits_70(
    saved_models, tmp_path: Path, fault: str
) -> None:
    batching_file = tmp_path / "batching.txt"
    batching_file.write_text(
        "batch_timeout_micros { value: 100000 } num_batch_threads { value: 1 }"
    )
    flags = ["--enable_batching", f"--batching_parameters_file={batching_file}"]
    process = start_faulty(fault, saved_models, tmp_path, *flags)
    try:
        with grpc.insecure_channel(process.grpc_target) as channel:
            watch = watch_until_serving(channel)
            health = health_pb2_grpc.HealthStub(channel)
            if fault == "dispatcher":
                with pytest.raises(grpc.RpcError):
                    health.Check(Request(service=TRIGGER), timeout=5)
            else:
                with pytest.raises(grpc.RpcError) as unknown:
                    health.Check(Request(service=TRIGGER), timeout=5)
                assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "mlp"
                request.inputs["x"].CopyFrom(float_tensor([[0.5] * 8]))
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                with pytest.raises(grpc.RpcError):
                    stub.Predict(request, timeout=30)  # ends with the process
            died = time.monotonic()
            assert process.proc is not None
            assert process.proc.wait(timeout=30) == FATAL_EXIT_CODE
            assert time.monotonic() - died < 30
            assert statuses_until_the_end(watch) == [Response.NOT_SERVING]
    finally:
        process.kill()
    log = process.log_path.read_text()
    assert "exiting with code 70 so that the process is restarted" in log
    assert "injected:" in log  # the traceback is in the log
