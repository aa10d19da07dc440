"""The gRPC front end itself: dispatcher, routes, futures, errors, drain, and the transport
contract: every test that serves runs on each transport (native and grpcio)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2

from dataplane import errors
from dataplane.admin_auth import DENIED, AdminAuth
from dataplane.grpc_server import (
    MAX_STATUS_DETAILS_BYTES,
    GrpcServer,
    Joint,
    Kind,
    ResponseStream,
    service_routes,
)
from dataplane.options import ServerOptions
from dataplane.transport import TRANSPORTS, Transport, select_transport

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
Request = health_pb2.HealthCheckRequest
Response = health_pb2.HealthCheckResponse


class Handlers:
    """Check answers by the requested service name; Watch streams three answers."""

    def __init__(self) -> None:
        self.held: list[Future] = []
        self.threads: list[str] = []

    def check(self, request: Request) -> Response | Future[Response]:
        self.threads.append(threading.current_thread().name)
        match request.service:
            case "ok":
                return Response(status=Response.SERVING)
            case "missing":
                raise errors.not_found("no such thing: missing")
            case "bug":
                raise KeyError("boom")
            case "held":  # answered later, from another thread
                held: Future[Response] = Future()
                self.held.append(held)
                return held
            case "big":
                return Response(status=Response.SERVING)
        raise errors.invalid_argument(f"unexpected {request.service}")

    def watch(self, request: Request, stream: ResponseStream) -> None:
        def send_all() -> None:
            for status in (Response.NOT_SERVING, Response.SERVING, Response.NOT_SERVING):
                stream.send(Response(status=status))
            stream.close()

        threading.Thread(target=send_all).start()


@pytest.fixture(scope="module", params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> Transport:
    """Each transport by name; `native` must really be native here (no silent fallback)."""
    chosen = select_transport(request.param)
    assert chosen.name.endswith("grpcio_frontend") == (request.param == "grpcio")
    return chosen


def start_server(
    routes, transport, channel_args=(), address="127.0.0.1:0", spin_microseconds=0
) -> tuple[GrpcServer, int]:
    server = GrpcServer(routes, list(channel_args), spin_microseconds, transport)
    return server, server.start([address])


@pytest.fixture(scope="module")
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture(scope="module")
def channel(handlers: Handlers, transport: Transport) -> Iterator[grpc.Channel]:
    """The module's shared server polls for calls as `python -m dataplane` does by default."""
    routes = service_routes(HEALTH, {"Check": handlers.check, "Watch": handlers.watch})
    spin = ServerOptions().grpc_dispatcher_spin_micros
    server, port = start_server(routes, transport, spin_microseconds=spin)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    server.stop(0)


def unary(channel: grpc.Channel, method: str = CHECK) -> Callable:
    return channel.unary_unary(
        method,
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )


def code_and_details(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_routes_take_request_types_and_kinds_from_the_descriptor(handlers) -> None:
    routes = service_routes(HEALTH, {"Check": handlers.check, "Watch": handlers.watch})
    assert routes[CHECK].request_type is Request and routes[CHECK].kind is Kind.UNARY
    assert routes[WATCH].kind is Kind.STREAM
    with pytest.raises(ValueError, match=r"grpc\.health\.v1\.Health has no method Chek"):
        service_routes(HEALTH, {"Chek": handlers.check})


def test_an_answer_is_the_handlers_message(channel) -> None:
    assert unary(channel)(Request(service="ok"), timeout=5).status == Response.SERVING


def test_serving_errors_keep_their_code_and_message(channel) -> None:
    code, details = code_and_details(lambda: unary(channel)(Request(service="missing"), timeout=5))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "no such thing: missing")


def test_status_details_that_echo_a_long_input_are_cut_below_what_clients_accept(channel) -> None:
    name = "é" * 20_000  # 40,000 bytes of UTF-8 echoed in the error
    code, details = code_and_details(lambda: unary(channel)(Request(service=name), timeout=5))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("unexpected éé") and details.endswith("...")
    wire = len("unexpected ...") + 3 * len(details[len("unexpected ") : -3].encode())
    assert MAX_STATUS_DETAILS_BYTES - 6 <= wire <= MAX_STATUS_DETAILS_BYTES


def test_a_bug_is_internal_and_the_server_keeps_serving(channel) -> None:
    code, details = code_and_details(lambda: unary(channel)(Request(service="bug"), timeout=5))
    assert (code, details) == (grpc.StatusCode.INTERNAL, errors.INTERNAL_MESSAGE)
    assert "boom" not in details
    assert unary(channel)(Request(service="ok"), timeout=5).status == Response.SERVING


def test_unknown_methods_are_unimplemented(channel) -> None:
    code, details = code_and_details(
        lambda: unary(channel, "/grpc.health.v1.Health/Nope")(Request(), timeout=5)
    )
    assert code is grpc.StatusCode.UNIMPLEMENTED
    assert details == "Method not found: /grpc.health.v1.Health/Nope"


def test_a_request_that_does_not_parse_is_invalid(channel) -> None:
    raw = channel.unary_unary(CHECK)
    code, details = code_and_details(lambda: raw(b"\xff\xff\xff", timeout=5))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details == "cannot parse the request as grpc.health.v1.HealthCheckRequest"


def test_a_future_is_answered_from_the_thread_that_completes_it(channel, handlers) -> None:
    handlers.held.clear()
    answer = unary(channel).future(Request(service="held"), timeout=5)
    deadline = time.monotonic() + 5
    while not handlers.held and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not answer.done()
    threading.Thread(
        target=handlers.held[0].set_result, args=(Response(status=Response.NOT_SERVING),)
    ).start()
    assert answer.result(timeout=5).status == Response.NOT_SERVING


def test_a_failed_future_reports_its_error(channel, handlers) -> None:
    handlers.held.clear()
    answer = unary(channel).future(Request(service="held"), timeout=5)
    while not handlers.held:
        time.sleep(0.005)
    handlers.held[0].set_exception(errors.failed_precondition("not now"))
    with pytest.raises(grpc.RpcError) as caught:
        answer.result(timeout=5)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "not now"


@pytest.mark.parametrize("how", ["client cancels", "deadline passes"])
def test_a_call_that_ends_early_cancels_the_future_it_waits_on(channel, handlers, how) -> None:
    handlers.held.clear()
    answer = unary(channel).future(
        Request(service="held"), timeout=0.3 if how == "deadline passes" else 5
    )
    while not handlers.held:
        time.sleep(0.005)
    if how == "client cancels":
        answer.cancel()
    deadline = time.monotonic() + 5
    while not handlers.held[0].cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handlers.held[0].cancelled()
    assert unary(channel)(Request(service="ok"), timeout=5).status == Response.SERVING


def test_server_streaming_writes_every_message_in_order(channel) -> None:
    watch = channel.unary_stream(
        WATCH,
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    statuses = [r.status for r in watch(Request(), timeout=5)]
    assert statuses == [Response.NOT_SERVING, Response.SERVING, Response.NOT_SERVING]


@pytest.mark.parametrize("spin", [0, 1, 300, 5000])
def test_calls_in_a_row_and_a_stop_work_with_any_spin(transport, spin: int) -> None:
    """Sequential calls are the light load the dispatcher polls for; stopping must not wait on
    the poll, even one longer than the grace period."""
    handlers = Handlers()
    routes = service_routes(HEALTH, {"Check": handlers.check})
    server, port = start_server(routes, transport, spin_microseconds=spin)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = unary(channel)
        statuses = [check(Request(service="ok"), timeout=5).status for _ in range(20)]
    started = time.monotonic()
    server.stop(0)
    assert statuses == [Response.SERVING] * 20
    assert time.monotonic() - started < 2.0


class Coalescing:
    """Check with a coalescer. "block" holds the dispatcher until released, so the calls sent
    meanwhile are taken in one step. Jointly, "co-*" calls are SERVING; the "fail-*" joint
    fails, so each is served alone by the handler (SERVICE_UNKNOWN); the rest are served
    alone (NOT_SERVING)."""

    def __init__(self) -> None:
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.joints: list[list[str]] = []

    def check(self, request: Request) -> Response:
        if request.service == "block":
            self.blocked.set()
            self.release.wait(10)
            return Response(status=Response.SERVING)
        if request.service.startswith("fail"):
            return Response(status=Response.SERVICE_UNKNOWN)
        return Response(status=Response.NOT_SERVING)

    def coalesce(self, requests: list[Request]) -> list[Joint]:
        joints = []
        for prefix in ("co", "fail"):
            members = [i for i, r in enumerate(requests) if r.service.startswith(prefix)]
            if len(members) < 2:
                continue
            self.joints.append(sorted(requests[i].service for i in members))
            answers: Future = Future()
            if prefix == "co":
                serving = Response(status=Response.SERVING).SerializeToString()
                answers.set_result([serving] * len(members))
            else:
                answers.set_exception(errors.not_found("the joint failed"))
            joints.append(Joint(members, answers))
        return joints


def taken_together(
    transport: Transport, coalescing: Coalescing, coalesce, names: list[str]
) -> dict[str, int]:
    """Send `names` while "block" holds the dispatcher, so one wake-up takes them all."""
    routes = service_routes(HEALTH, {"Check": coalescing.check}, coalescers={"Check": coalesce})
    server, port = start_server(routes, transport)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = unary(channel)
            blocker = check.future(Request(service="block"), timeout=10)
            assert coalescing.blocked.wait(5)
            sent = {name: check.future(Request(service=name), timeout=10) for name in names}
            time.sleep(0.5)  # all queued behind the blocked dispatcher
            coalescing.release.set()
            statuses = {name: future.result().status for name, future in sent.items()}
            assert blocker.result().status == Response.SERVING
    finally:
        server.stop(0)
    return statuses


def test_calls_taken_together_are_offered_to_the_coalescer(transport) -> None:
    coalescing = Coalescing()
    names = ["co-1", "fail-1", "co-2", "alone", "co-3", "fail-2"]
    statuses = taken_together(transport, coalescing, coalescing.coalesce, names)
    assert sorted(coalescing.joints) == [["co-1", "co-2", "co-3"], ["fail-1", "fail-2"]]
    assert statuses == {
        "co-1": Response.SERVING,
        "co-2": Response.SERVING,
        "co-3": Response.SERVING,
        "fail-1": Response.SERVICE_UNKNOWN,  # served again, alone
        "fail-2": Response.SERVICE_UNKNOWN,
        "alone": Response.NOT_SERVING,
    }


def test_a_coalescer_that_raises_leaves_every_call_to_be_served_alone(transport) -> None:
    def broken(requests: list[Request]) -> list[Joint]:
        raise RuntimeError("a bug in the coalescer")

    statuses = taken_together(transport, Coalescing(), broken, ["co-1", "co-2", "co-3"])
    assert statuses == dict.fromkeys(["co-1", "co-2", "co-3"], Response.NOT_SERVING)


def test_only_unary_routes_coalesce(handlers) -> None:
    with pytest.raises(ValueError, match=r"Health\.Watch is not unary; it cannot coalesce"):
        service_routes(HEALTH, {"Watch": handlers.watch}, coalescers={"Watch": lambda rs: []})


def test_channel_arguments_apply(handlers, transport) -> None:
    """A receive limit set as a channel argument is enforced by the transport."""
    routes = service_routes(HEALTH, {"Check": handlers.check})
    payload = Request(service="big").SerializeToString()
    too_big = payload + b"\x1a\x80\x01" + b"y" * 128  # plus an unknown 128-byte field
    server, port = start_server(routes, transport, [("grpc.max_receive_message_length", 64)])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            raw = channel.unary_unary(CHECK, response_deserializer=Response.FromString)
            assert raw(payload, timeout=5).status == Response.SERVING
            code, _ = code_and_details(lambda: raw(too_big, timeout=5))
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop(0)


def test_unix_socket_addresses_serve(tmp_path, handlers, transport) -> None:
    path = tmp_path / "grpc.sock"
    routes = service_routes(HEALTH, {"Check": handlers.check})
    server, _ = start_server(routes, transport, address=f"unix:{path}")
    try:
        with grpc.insecure_channel(f"unix:{path}") as channel:
            assert unary(channel)(Request(service="ok"), timeout=5).status == Response.SERVING
    finally:
        server.stop(0)


def test_a_port_in_use_is_a_clear_error(transport) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = GrpcServer({}, [("grpc.so_reuseport", 0)], transport=transport)
        with pytest.raises(RuntimeError, match=f"cannot listen on 127\\.0\\.0\\.1:{port}"):
            server.start([f"127.0.0.1:{port}"])


@contextmanager
def one_call_held(
    transport: Transport,
) -> Iterator[tuple[GrpcServer, Future[Response], grpc.Future]]:
    """A fresh server holding one Check call: (server, the handler's future, the client's)."""
    handlers = Handlers()
    server, port = start_server(service_routes(HEALTH, {"Check": handlers.check}), transport)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = unary(channel).future(Request(service="held"), timeout=10)
        while not handlers.held:
            time.sleep(0.005)
        yield server, handlers.held[0], answer


def test_stop_lets_an_in_flight_call_finish_within_the_grace_period(transport) -> None:
    with one_call_held(transport) as (server, held, answer):
        stopper = threading.Thread(target=server.stop, args=(5,))
        stopper.start()
        time.sleep(0.2)
        assert stopper.is_alive()  # draining: waits for the held call
        held.set_result(Response(status=Response.SERVING))
        assert answer.result(timeout=5).status == Response.SERVING
        stopper.join(5)
        assert not stopper.is_alive()


def test_more_calls_at_once_than_the_transport_asks_for_ahead_are_all_served(transport) -> None:
    """The transport asks gRPC for 32 calls ahead and one more as each arrives; 100 held at
    once must all reach the handler and all be answered."""
    handlers = Handlers()
    server, port = start_server(service_routes(HEALTH, {"Check": handlers.check}), transport)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answers = [unary(channel).future(Request(service="held"), timeout=10) for _ in range(100)]
        deadline = time.monotonic() + 5
        while len(handlers.held) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(handlers.held) == 100
        for status, held in enumerate(handlers.held):
            held.set_result(Response(status=status % 3))
        statuses = sorted(a.result(timeout=5).status for a in answers)  # arrival order varies
        assert statuses == sorted(i % 3 for i in range(100))
    server.stop(0)


def test_a_call_held_past_the_grace_period_is_cancelled_and_its_future_too(transport) -> None:
    with one_call_held(transport) as (server, held, answer):
        started = time.monotonic()
        server.stop(0.2)
        assert time.monotonic() - started < 3
        with pytest.raises(grpc.RpcError) as caught:
            answer.result(timeout=5)
        assert caught.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        assert held.cancelled()  # the transport told the dispatcher it ended


def test_a_call_without_a_request_message_is_internal(channel) -> None:
    no_message = channel.stream_unary(
        CHECK,
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    code, details = code_and_details(lambda: no_message(iter(()), timeout=5))
    assert (code, details) == (grpc.StatusCode.INTERNAL, "the call carried no request message")
    assert unary(channel)(Request(service="ok"), timeout=5).status == Response.SERVING


def wait_until_done(calls: list[grpc.Future], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not all(call.done() for call in calls) and time.monotonic() < deadline:
        time.sleep(0.01)


ENDED_EARLY = {
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAVAILABLE,
}


def test_cancels_deadlines_streams_and_late_answers_around_a_stop_all_end_cleanly(
    transport,
) -> None:
    """The native call's lifetime is shared by gRPC's events and Python's answers; a mix of
    everything that ends a call, then a stop mid-flight, must leave every client answered and
    the process standing (answers after the stop are dropped)."""
    handlers = Handlers()
    routes = service_routes(HEALTH, {"Check": handlers.check, "Watch": handlers.watch})
    server, port = start_server(routes, transport, spin_microseconds=300)
    plan = [("ok", 5), ("held", 5), ("held", 0.02), ("missing", 5)]  # (service, timeout)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        calls = []
        for i in range(120):
            service, timeout = plan[i % 4]
            call = unary(channel).future(Request(service=service), timeout=timeout)
            if i % 5 == 0:
                call.cancel()
            calls.append(call)
        watch = channel.unary_stream(
            WATCH,
            request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString,
        )
        streams = [watch(Request(), timeout=5) for _ in range(5)]
        answered_at_once = [c for i, c in enumerate(calls) if i % 4 in (0, 3)]
        wait_until_done(answered_at_once)  # the stop is for the held ones
        for held in handlers.held[::2]:
            if not held.done():
                held.set_result(Response(status=Response.SERVING))
        server.stop(0.05)
        for held in handlers.held:  # too late: the calls are over
            if not held.done():
                held.set_result(Response(status=Response.SERVING))
        wait_until_done(calls)
        assert all(call.done() for call in calls)
        for i, call in enumerate(calls):
            if call.cancelled():
                continue
            if i % 4 == 0:
                assert call.result().status == Response.SERVING
            elif i % 4 == 3:
                assert call.exception().code() is grpc.StatusCode.NOT_FOUND
            elif call.exception() is not None:
                assert call.exception().code() in ENDED_EARLY
        for stream in streams:
            stream.cancel()


# ------------------------------------------------------------------------ admin calls, deadlines


def test_admin_routes_need_the_token_and_the_others_stay_open(transport) -> None:
    handlers = Handlers()
    routes = service_routes(
        HEALTH, {"Check": handlers.check, "Watch": handlers.watch}, admin={"Check"}
    )
    assert routes[CHECK].admin and not routes[WATCH].admin
    server = GrpcServer(routes, [], transport=transport, admin_auth=AdminAuth(b"tok"))
    port = server.start(["127.0.0.1:0"])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = unary(channel)
            for metadata in [(), (("authorization", "Bearer nope"),)]:
                code, details = code_and_details(
                    lambda m=metadata: check(Request(service="ok"), metadata=m, timeout=5)
                )
                assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, DENIED)
            assert handlers.threads == []  # refused before the handler ran
            right = (("authorization", "Bearer tok"),)
            assert check(Request(service="ok"), metadata=right, timeout=5).status == 1
            watch = channel.unary_stream(WATCH, Request.SerializeToString, Response.FromString)
            assert len(list(watch(Request(), timeout=5))) == 3  # no token needed
    finally:
        server.stop(0)
    assert len(handlers.threads) == 1


def test_metadata_reaches_the_dispatcher_without_binary_entries(transport) -> None:
    seen: list[list[tuple[str, str]]] = []
    server, port = start_server(service_routes(HEALTH, {"Check": lambda r: Response()}), transport)
    original = server._decode  # observe the transport's Call as the dispatcher gets it

    def decode(call):  # type: ignore[no-untyped-def]
        seen.append(call.metadata)
        assert call.client_verified is False and call.expired is False
        return original(call)

    server._decode = decode  # type: ignore[method-assign]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            metadata = (("x-plain", "Value 1"), ("x-data-bin", b"\x00\xff"))
            unary(channel)(Request(), metadata=metadata, timeout=5)
    finally:
        server.stop(0)
    assert ("x-plain", "Value 1") in seen[0]
    assert not any(key.endswith("-bin") for key, _ in seen[0])


def test_a_call_whose_deadline_passed_while_queued_is_dropped_before_it_runs(transport) -> None:
    blocker = Coalescing()
    ran: list[str] = []

    def check(request: Request) -> Response:
        ran.append(request.service)
        return blocker.check(request)

    server, port = start_server(service_routes(HEALTH, {"Check": check}), transport)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = unary(channel)
            held = call.future(Request(service="block"), timeout=10)
            assert blocker.blocked.wait(5)
            code, _ = code_and_details(lambda: call(Request(service="late"), timeout=0.3))
            assert code is grpc.StatusCode.DEADLINE_EXCEEDED
            blocker.release.set()
            assert held.result(5).status == Response.SERVING
            assert call(Request(service="after"), timeout=5).status == Response.NOT_SERVING
    finally:
        server.stop(0)
    assert ran == ["block", "after"]
