"""Fuzz targets: the code that parses what a client or an operator sends, one function each.

A target takes the fuzzer's bytes and drives one parser the way the server does. Each target
names the exceptions that parser documents as its answer to bad input (`expected`); anything
else escaping is a crash (a bug: a 500 or INTERNAL for the client, or a traceback at startup).
Private parsers are called by name: the harness exercises exactly the code the server runs.
The same targets run under atheris (`run.py`) and replay the committed corpus in pytest
(`test_fuzz.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, regression_pb2

from dataplane import config, grpc_service, rest, tensors
from dataplane.batching import parse_batching_config
from dataplane.errors import ServingError
from dataplane.http_server import ProtocolError, RequestReader
from dataplane.inference import Examples
from dataplane.limits import RequestLimits
from dataplane.metrics import parse_monitoring_config, prometheus_path
from dataplane.signatures import TensorSpec

# The bounds the server applies before it allocates (--max_request_elements,
# --rest_api_max_json_depth), smaller than the defaults so a run stays within memory.
LIMITS = RequestLimits(max_request_elements=1 << 20, max_response_elements=1 << 20)
MAX_JSON_DEPTH = 100
CORPUS_ROOT = Path(__file__).resolve().parent / "corpus"  # committed seeds, one dir per target
HTTP_MAX_BODY = 4096


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    expected: tuple[type[BaseException], ...]


def _spec(alias: str, dtype: int, shape: tuple[int | None, ...] | None) -> TensorSpec:
    return TensorSpec(alias=alias, tensor_name=f"{alias}:0", dtype=dtype, shape=shape)


# Signatures of the shapes the fixture models have, one per first byte of the input.
_SIGNATURES: tuple[dict[str, TensorSpec], ...] = (
    {"x": _spec("x", types_pb2.DT_FLOAT, (None,))},  # half_plus_two
    {"features": _spec("features", types_pb2.DT_FLOAT, (None, 3))},  # keras
    {"text": _spec("text", types_pb2.DT_STRING, (None,))},  # strings
    {
        "a": _spec("a", types_pb2.DT_INT64, (None, 2)),
        "b": _spec("b", types_pb2.DT_BOOL, (None,)),
        "c": _spec("c", types_pb2.DT_HALF, None),
    },
    {"u": _spec("u", types_pb2.DT_UINT8, (None, None))},
    {"z": _spec("z", types_pb2.DT_COMPLEX64, (None,))},
    {"bf": _spec("bf", types_pb2.DT_BFLOAT16, (None,)), "d": _spec("d", types_pb2.DT_DOUBLE, ())},
)


def rest_body(data: bytes) -> None:
    """A REST Predict/Classify body -> JSON -> tensors, and the tensors back to JSON."""
    if not data:
        return
    selector, body = data[0], data[1:]
    if selector & 0x80:
        rest._examples_request(body, MAX_JSON_DEPTH)[1].check(LIMITS)
        return
    document = rest._parse_json_object(body, MAX_JSON_DEPTH)
    rest._signature_name(document)
    specs = _SIGNATURES[selector % len(_SIGNATURES)]
    arrays = rest._decode_predict_inputs(document, specs, LIMITS)
    if "instances" in document:
        tensors.predictions_json(arrays)
    else:
        tensors.outputs_json(arrays)


def http_request(data: bytes) -> None:
    """Bytes arriving on a REST connection, in pieces whose sizes the input's first byte picks."""
    if not data:
        return
    step = data[0] + 1
    reader = RequestReader(HTTP_MAX_BODY)
    for start in range(1, len(data), step):
        reader.feed(data[start : start + step])
        while (parsed := reader.take()) is not None:
            assert len(parsed.request.body) <= HTTP_MAX_BODY, "body over the limit was accepted"


def tensor_proto(data: bytes) -> None:
    """A TensorProto from the wire -> ndarray, alone and concatenated with itself."""
    proto = tensor_pb2.TensorProto.FromString(data)
    LIMITS.check_request(tensors.declared_elements(proto))
    array = tensors.to_ndarray(proto)
    if proto.tensor_content and array.ndim >= 1:
        tensors.concatenated_ndarray([proto, proto])


_REQUEST_TYPES = (
    predict_pb2.PredictRequest,
    classification_pb2.ClassificationRequest,
    regression_pb2.RegressionRequest,
)


def serving_request(data: bytes) -> None:
    """A Predict/Classify/Regress request message -> the core's model ref and inputs."""
    if not data:
        return
    request_type = _REQUEST_TYPES[data[0] % len(_REQUEST_TYPES)]
    request = request_type.FromString(data[1:])
    grpc_service.model_ref(request)
    if not isinstance(request, predict_pb2.PredictRequest):
        Examples.from_input(request.input).check(LIMITS)
        return
    grpc_service._decode_inputs(request.inputs, LIMITS, {})
    if grpc_service.coalescing_key(request) is not None and grpc_service.batch_rows(request):
        grpc_service._concatenated_inputs([request, request], LIMITS, {})


_VALID_CONFIG = config.parse_config_text(
    'model_config_list { config { name: "m" base_path: "/models/m" model_platform: '
    '"tensorflow" } }',
    "fuzz",
)


def config_text(data: bytes) -> None:
    """The text-format files an operator writes: ModelServerConfig, batching, monitoring."""
    if not data:
        return
    try:
        text = data[1:].decode("utf-8")
    except UnicodeDecodeError:
        return  # the file readers turn undecodable bytes into their own error first
    kind = data[0] % 3
    if kind == 0:
        parsed = config.parse_config_text(text, "fuzz")
        config.validate(parsed, None)
        config.validate(parsed, _VALID_CONFIG)
    elif kind == 1:
        parse_batching_config(text, "fuzz")
    else:
        prometheus_path(parse_monitoring_config(text, "fuzz"))


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("rest_body", rest_body, (ServingError,)),
        Target("http_request", http_request, (ProtocolError,)),
        Target("tensor_proto", tensor_proto, (DecodeError, ServingError)),
        Target("serving_request", serving_request, (DecodeError, ServingError)),
        Target("config_text", config_text, (config.ConfigError, ServingError)),
    )
}
