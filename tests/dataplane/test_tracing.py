"""Traces: spans per stage with the model's attributes, parented by the client's W3C
traceparent over gRPC metadata and HTTP headers, captured with an in-process exporter from a
real data plane serving a real SavedModel."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import requests
import tensorflow as tf
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from dataplane.options import ServerOptions, parse_options
from dataplane.server import DataPlane
from dataplane.tracing import NO_TRACE, Tracing
from tests.support.processes import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def test_tracing_off_passes_everything_through() -> None:
    tracing = Tracing.off()
    assert not tracing.enabled
    traced = tracing.begin("x", [("traceparent", TRACEPARENT)])
    assert traced is NO_TRACE

    def fn(value: int) -> int:
        return value + 1

    assert traced.timed("decode", fn) is fn
    assert traced.answer(fn) is fn


@pytest.fixture(params=[False, True], ids=["direct", "batching"])
def traced_dataplane(
    request: pytest.FixtureRequest, saved_models
) -> Iterator[tuple[DataPlane, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    options = ServerOptions(
        port=free_port(),
        rest_api_port=free_port(),
        model_name="hpt",
        model_base_path=saved_models.half_plus_two,
        grpc_transport="grpcio",  # carries call metadata in every build
        enable_batching=request.param,
    )
    plane = DataPlane(options, tracing=Tracing(SimpleSpanProcessor(exporter)))
    plane.start()
    try:
        yield plane, exporter
    finally:
        plane.stop(1.0)


def spans_of(exporter: InMemorySpanExporter, root_name: str) -> tuple[object, dict[str, object]]:
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == root_name]
    children = {s.name: s for s in spans if s.parent and s.parent.span_id == root.context.span_id}
    return root, children


def check_trace(root, children, stages: set[str]) -> None:
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.attributes["model.name"] == "hpt"
    assert root.attributes["model.version"] == 123
    assert root.attributes["model.signature_name"] == "serving_default"
    assert stages <= set(children)
    for child in children.values():
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time
        assert child.attributes["model.name"] == "hpt"


def grpc_predict(plane: DataPlane, request: predict_pb2.PredictRequest):
    with grpc.insecure_channel(f"127.0.0.1:{plane.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout=30, metadata=[("traceparent", TRACEPARENT)])


def test_grpc_predict_is_traced_under_the_clients_traceparent(traced_dataplane) -> None:
    plane, exporter = traced_dataplane
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hpt"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
    assert list(grpc_predict(plane, request).outputs["y"].float_val) == [2.5, 3.0]
    root, children = spans_of(exporter, "PredictionService/Predict")
    check_trace(root, children, {"decode", "model", "encode"})


def test_a_batched_predict_has_queue_and_batch_spans(saved_models) -> None:
    exporter = InMemorySpanExporter()
    options = ServerOptions(
        port=free_port(),
        model_name="mlp",
        model_base_path=saved_models.mlp,
        grpc_transport="grpcio",
        enable_batching=True,
    )
    plane = DataPlane(options, tracing=Tracing(SimpleSpanProcessor(exporter)))
    plane.start()
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mlp"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([[0.5] * 8] * 3, dtype=tf.float32))
        assert len(grpc_predict(plane, request).outputs["y"].float_val) == 12
    finally:
        plane.stop(1.0)
    root, children = spans_of(exporter, "PredictionService/Predict")
    assert f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.attributes["model.name"] == "mlp"
    assert {"decode", "queue", "batch", "model", "encode"} <= set(children)
    assert children["batch"].attributes["batch.size"] == 3
    assert children["batch"].start_time <= children["model"].start_time
    assert children["model"].end_time <= children["batch"].end_time


def test_rest_predict_is_traced_under_the_traceparent_header(traced_dataplane) -> None:
    plane, exporter = traced_dataplane
    answer = requests.post(
        f"http://127.0.0.1:{plane.rest.port}/v1/models/hpt:predict",
        json={"instances": [6.0]},
        headers={"traceparent": TRACEPARENT},
        timeout=30,
    )
    assert answer.json() == {"predictions": [5.0]}
    root, children = spans_of(exporter, "RestApi/predict")
    check_trace(root, children, {"decode", "model", "encode"})


def test_a_failed_request_is_an_error_span(traced_dataplane) -> None:
    plane, exporter = traced_dataplane
    answer = requests.post(
        f"http://127.0.0.1:{plane.rest.port}/v1/models/hpt:predict",
        json={"instances": [[1.0, 2.0]], "signature_name": "nope"},
        headers={"traceparent": TRACEPARENT},
        timeout=30,
    )
    assert answer.status_code == 400
    root, _ = spans_of(exporter, "RestApi/predict")
    assert root.status.status_code.name == "ERROR"
    assert "nope" in root.status.description


def test_sampling_follows_the_callers_flag_else_the_ratio() -> None:
    exporter = InMemorySpanExporter()
    never = Tracing(SimpleSpanProcessor(exporter), sample_ratio=0.0)
    unsampled_parent = f"00-{TRACE_ID}-{PARENT_ID}-00"
    assert never.begin("x", [("traceparent", unsampled_parent)]) is NO_TRACE
    assert never.begin("x", []) is NO_TRACE
    assert never.begin("x", [("traceparent", TRACEPARENT)]) is not NO_TRACE
    always = Tracing(SimpleSpanProcessor(exporter), sample_ratio=1.0)
    assert always.begin("x", [("traceparent", unsampled_parent)]) is NO_TRACE
    assert always.begin("x", [("traceparent", "garbage")]) is not NO_TRACE
    half = Tracing(SimpleSpanProcessor(exporter), sample_ratio=0.5)
    drawn = sum(half.begin("x", []) is not NO_TRACE for _ in range(4000))
    assert 1700 <= drawn <= 2300


def test_the_sample_ratio_flag_is_bounded() -> None:
    assert parse_options(["--tracing_sample_ratio=0.1"]).tracing_sample_ratio == 0.1
    with pytest.raises(SystemExit):
        parse_options(["--tracing_sample_ratio=1.5"])
