"""Hostile inputs against a live data plane: each attack gets its exact answer, and a normal
client (the official gRPC client and REST) is served correctly all along.

One `python -m dataplane` serves half_plus_two for the module with the default request
bounds; only the REST timings and the connection cap are lowered so that the timeouts and the
flood finish in seconds. A background client keeps predicting on both ports for the whole
module; after every test it must have seen no failure, and a fresh call must succeed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.support.processes import DataPlaneProcess, start_dataplane

MAX_CONNECTIONS = 64
IDLE_TIMEOUT_S = 3.0
REST_TIMEOUT_S = 3.0
DEFAULT_BODY_LIMIT = 32 * 1024 * 1024
DEFAULT_ELEMENT_LIMIT = 1 << 24
PREDICT = "/v1/models/half_plus_two:predict"
QUICK_START = {"instances": [1.0, 2.0, 5.0]}
QUICK_ANSWER = {"predictions": [2.5, 3.0, 4.5]}
PROBE_ELEMENTS = 268435456
# Generous: a refusal takes microseconds; the machine may be loaded by other test runs.
ANSWER_AT_ONCE_S = 2.0
RSS_GROWTH_LIMIT_KB = 50 * 1024


@pytest.fixture(scope="module")
def dataplane(saved_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    root = tmp_path_factory.mktemp("hostile")
    process: DataPlaneProcess = start_dataplane(
        "--model_name=half_plus_two",
        f"--model_base_path={saved_models.half_plus_two}",
        f"--rest_api_max_connections={MAX_CONNECTIONS}",
        f"--rest_api_idle_timeout_in_ms={IDLE_TIMEOUT_S * 1000:.0f}",
        f"--rest_api_timeout_in_ms={REST_TIMEOUT_S * 1000:.0f}",
        log_dir=root,
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def stub(
    dataplane: DataPlaneProcess,
) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(dataplane.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def quick_start_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add(size=3)
    tensor.float_val.extend([1.0, 2.0, 5.0])
    return request


class NormalClient:
    """Predicts on both ports in a loop (one gRPC channel, one keep-alive REST session) and
    records every answer that is not the right one."""

    def __init__(self, dataplane: DataPlaneProcess) -> None:
        self._rest = f"{dataplane.rest_url}{PREDICT}"
        self._target = dataplane.grpc_target
        self.served = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="normal-client", daemon=True)

    def __enter__(self) -> NormalClient:
        """Start, and return once both protocols have answered (so every test runs with
        the client under way)."""
        self._thread.start()
        deadline = time.monotonic() + 30
        while self.served < 2 and not self.failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.served >= 2, self.failures
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with grpc.insecure_channel(self._target) as channel, requests.Session() as session:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self._stop.wait(0.05):
                self._check(
                    lambda: list(
                        stub.Predict(quick_start_request(), timeout=10).outputs["y"].float_val
                    ),
                    [2.5, 3.0, 4.5],
                )
                self._check(
                    lambda: session.post(self._rest, json=QUICK_START, timeout=10).json(),
                    QUICK_ANSWER,
                )

    def _check(self, call: Any, expected: object) -> None:
        try:
            got = call()
        except Exception as exc:  # every failure is recorded, none ends the loop
            got = repr(exc)
        if got == expected:
            self.served += 1
        else:
            self.failures.append(str(got)[:300])


@pytest.fixture(scope="module")
def normal_client(dataplane: DataPlaneProcess) -> Iterator[NormalClient]:
    with NormalClient(dataplane) as client:
        yield client


@pytest.fixture(autouse=True)
def still_serving(
    dataplane: DataPlaneProcess, normal_client: NormalClient, stub: Any
) -> Iterator[None]:
    yield
    assert normal_client.failures == []
    assert normal_client.served > 0
    assert list(stub.Predict(quick_start_request(), timeout=10).outputs["y"].float_val) == [
        2.5,
        3.0,
        4.5,
    ]
    response = requests.post(f"{dataplane.rest_url}{PREDICT}", json=QUICK_START, timeout=10)
    assert (response.status_code, response.json()) == (200, QUICK_ANSWER)


def memory_kb(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of a process, in kB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0])
    return fields


def rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value


# ------------------------------------------------------------------- work per request (gRPC)


def broadcast_probe(dtype: int, **values: Any) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    tensor = request.inputs["x"]
    tensor.dtype = dtype
    tensor.tensor_shape.dim.add(size=PROBE_ELEMENTS)
    for field, value in values.items():
        if field == "tensor_content":
            tensor.tensor_content = value
        else:
            getattr(tensor, field).append(value)
    return request


PROBE_REFUSAL = (
    f"Request tensors have {PROBE_ELEMENTS} elements in total, more than the limit of "
    f"{DEFAULT_ELEMENT_LIMIT} (--max_request_elements)"
)


def test_the_42_byte_probe_is_refused_at_once_without_growing_the_server(
    dataplane: DataPlaneProcess, stub: Any, record_property: Any
) -> None:
    probe = broadcast_probe(types_pb2.DT_FLOAT, float_val=1.0)
    assert probe.ByteSize() == 42
    stub.Predict(quick_start_request(), timeout=10)  # the channel is connected: time the call
    before = memory_kb(dataplane.proc.pid)
    started = time.perf_counter()
    error = rpc_error(stub.Predict, probe)
    elapsed = time.perf_counter() - started
    after = memory_kb(dataplane.proc.pid)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, PROBE_REFUSAL)
    hwm_growth = after["VmHWM"] - before["VmHWM"]
    rss_growth = after["VmRSS"] - before["VmRSS"]
    record_property("probe_seconds", round(elapsed, 4))
    record_property("probe_hwm_growth_kb", hwm_growth)
    record_property("probe_rss_growth_kb", rss_growth)
    print(f"probe: {elapsed * 1000:.1f} ms, VmHWM +{hwm_growth} kB, VmRSS +{rss_growth} kB")
    assert elapsed < ANSWER_AT_ONCE_S
    assert hwm_growth < RSS_GROWTH_LIMIT_KB and rss_growth < RSS_GROWTH_LIMIT_KB


@pytest.mark.parametrize(
    "probe",
    [
        broadcast_probe(types_pb2.DT_FLOAT, tensor_content=b"\0\0\0\0"),
        broadcast_probe(types_pb2.DT_STRING, string_val=b"s"),
        broadcast_probe(types_pb2.DT_DOUBLE, double_val=1.0),
    ],
    ids=["tensor_content", "string", "double"],
)
def test_probes_in_other_encodings_get_the_same_refusal(stub: Any, probe: Any) -> None:
    error = rpc_error(stub.Predict, probe)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, PROBE_REFUSAL)


def test_a_context_merged_into_many_empty_examples_is_refused(stub: Any) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    with_context = request.input.example_list_with_context
    with_context.context.features.feature["blob"].bytes_list.value.append(b"\0" * 1_000_000)
    with_context.examples.extend([example_pb2.Example()] * 200)
    merged = with_context.context.ByteSize() * 200
    error = rpc_error(stub.Classify, request)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Request input expands to {merged} bytes, more than the limit of "
        f"{DEFAULT_ELEMENT_LIMIT * 8} (8 per --max_request_elements)",
    )


def test_an_over_long_model_name_is_not_found(stub: Any) -> None:
    # 100,000 characters: the echoed name is cut so the status fits the client's limit on
    # trailers (past 8 KiB grpcio refuses some answers at random; docs/security.md).
    request = quick_start_request()
    request.model_spec.name = "m" * 100_000
    for _ in range(20):  # every answer arrives, none refused by the client
        error = rpc_error(stub.Predict, request)
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert error.details().startswith("Servable not found for request: Latest(mmm")
        assert error.details().endswith("...") and len(error.details()) <= 4096


# ------------------------------------------------------------------------------------- REST


def rest(dataplane: DataPlaneProcess, body: bytes, path: str = PREDICT) -> tuple[int, Any]:
    response = requests.post(f"{dataplane.rest_url}{path}", data=body, timeout=30)
    return response.status_code, response.json()


def test_json_declaring_more_elements_than_the_bound_is_refused(dataplane: Any) -> None:
    # 4000 rows of which the first has 5000 values: 20M declared in a ~30 kB body.
    rows = [[0] * 5000] + [[0]] * 3999
    status, body = rest(dataplane, json.dumps({"inputs": rows}).encode())
    assert (status, body) == (
        400,
        {
            "error": "Request tensors have 20000000 elements in total, more than the limit "
            f"of {DEFAULT_ELEMENT_LIMIT} (--max_request_elements)"
        },
    )


def test_deep_json_is_refused_before_parsing(dataplane: Any) -> None:
    body = b'{"instances": ' + b"[" * 100_000 + b"1" + b"]" * 100_000 + b"}"
    assert rest(dataplane, body) == (
        400,
        {
            "error": "JSON Parse error: The document is nested 100001 levels deep, more than "
            "the limit of 100 (--rest_api_max_json_depth)"
        },
    )


def test_a_lone_surrogate_is_a_parse_error(dataplane: Any) -> None:
    body = b'{"instances": ["\\ud800"]}'
    assert rest(dataplane, body) == (
        400,
        {"error": "JSON Parse error: The surrogate pair in string is invalid. at offset: 16"},
    )


@pytest.mark.parametrize(
    "number", [b"9" * 10_000, b"1" + b"0" * 400 + b".5", b"-1e400"], ids=["int", "decimal", "exp"]
)
def test_numbers_beyond_a_double_are_a_parse_error(dataplane: Any, number: bytes) -> None:
    body = b'{"instances": [' + number + b"]}"
    assert rest(dataplane, body) == (
        400,
        {"error": "JSON Parse error: Number too big to be stored in double."},
    )


def test_an_integer_too_large_for_float_is_refused_by_value(dataplane: Any) -> None:
    digits = "9" * 4000  # converts, but no float32 holds it exactly
    status, body = rest(dataplane, f'{{"instances": [{digits}]}}'.encode())
    assert (status, body) == (
        400,
        {
            "error": "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT:"
            f" Cannot convert JSON value: {digits} to float without loss of precision."
        },
    )


def test_an_over_long_model_name_in_the_path(dataplane: Any) -> None:
    name = "m" * 60_000
    status, body = rest(dataplane, json.dumps(QUICK_START).encode(), f"/v1/models/{name}:predict")
    assert (status, body) == (404, {"error": f"Servable not found for request: Latest({name})"})


def test_a_rest_context_merged_into_many_empty_examples_is_refused(dataplane: Any) -> None:
    context = example_pb2.Example()
    context.features.feature["blob"].bytes_list.value.append(b"a" * 1_000_000)
    document = {
        "signature_name": "classify_x_to_y",
        "context": {"blob": "a" * 1_000_000},
        "examples": [{}] * 200,
    }
    path = "/v1/models/half_plus_two:classify"
    assert rest(dataplane, json.dumps(document).encode(), path) == (
        400,
        {
            "error": f"Request input expands to {context.ByteSize() * 200} bytes, more than "
            f"the limit of {DEFAULT_ELEMENT_LIMIT * 8} (8 per --max_request_elements)"
        },
    )


def raw_exchange(dataplane: DataPlaneProcess, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes: the whole answer."""
    with socket.create_connection(("127.0.0.1", dataplane.rest_port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def answer_of(raw: bytes) -> tuple[int, Any]:
    """(status, error text or parsed body) of one raw answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    document = json.loads(body)
    if isinstance(document, dict) and set(document) == {"error"}:
        document = document["error"]
    return int(head.split(b" ")[1]), document


def test_a_huge_header_block_is_431(dataplane: Any) -> None:
    request = b"GET /v1/models/half_plus_two HTTP/1.1\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n"
    assert answer_of(raw_exchange(dataplane, request)) == (
        431,
        "Request header is larger than 65536 bytes",
    )


def test_a_body_over_the_limit_is_413_before_it_is_sent(dataplane: Any) -> None:
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {DEFAULT_BODY_LIMIT + 1}\r\n\r\n"
    assert answer_of(raw_exchange(dataplane, head.encode())) == (
        413,
        f"Request body is larger than the limit of {DEFAULT_BODY_LIMIT} bytes "
        "(--rest_api_max_body_bytes)",
    )


def test_smuggling_framings_are_refused(dataplane: Any) -> None:
    both = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ).encode()
    bare_lf = f"POST {PREDICT} HTTP/1.1\r\nX-A: 1\nContent-Length: 2\r\n\r\n{{}}".encode()
    assert answer_of(raw_exchange(dataplane, both)) == (
        400,
        "Both Content-Length and Transfer-Encoding were sent",
    )
    assert answer_of(raw_exchange(dataplane, bare_lf)) == (
        400,
        "Bare CR, LF or NUL in the request head",
    )


def test_slowloris_is_cut_after_the_request_timeout(dataplane: Any) -> None:
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\n".encode()
    with socket.create_connection(("127.0.0.1", dataplane.rest_port), timeout=30) as sock:
        started = time.monotonic()
        received = b""
        for byte in head + b"X-Slow: " + b"a" * 1000:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server has answered and closed
                break
            time.sleep(0.1)
            if time.monotonic() - started > REST_TIMEOUT_S + 1:
                break
        while chunk := sock.recv(65536):
            received += chunk
        elapsed = time.monotonic() - started
    assert answer_of(received) == (408, "Timed out reading the request")
    assert REST_TIMEOUT_S - 0.5 < elapsed < REST_TIMEOUT_S + 3


def test_many_idle_connections_meet_the_cap_and_the_idle_timeout(dataplane: Any) -> None:
    flood = [
        socket.create_connection(("127.0.0.1", dataplane.rest_port), timeout=10)
        for _ in range(MAX_CONNECTIONS + 8)
    ]
    try:
        time.sleep(0.5)
        refused, admitted = [], []
        for sock in flood:
            sock.setblocking(False)
            try:
                refused.append(answer_of(sock.recv(65536)))
            except BlockingIOError:
                admitted.append(sock)
        # The normal client's connection (and any a test before left) holds a place too.
        assert len(refused) >= 8
        assert set(refused) == {(503, "Too many open connections")}
        started = time.monotonic()
        for sock in admitted:
            sock.settimeout(IDLE_TIMEOUT_S + 5)
            assert sock.recv(1) == b""  # the server closed the idle connection
        assert time.monotonic() - started < IDLE_TIMEOUT_S + 5
    finally:
        for sock in flood:
            sock.close()
