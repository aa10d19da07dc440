"""TensorFlow Serving's REST API (g3doc/api_rest.md) over the protocol-free inference core.

Routing and translation only: a path is matched with TF Serving's own route expressions
(http_rest_api_util.cc), the JSON body becomes the core's inputs, the core's result becomes
TF Serving's JSON, and every ServingError becomes `{"error": "..."}` with the HTTP status TF
Serving maps its code to. Messages follow TF Serving's where clients might match on them.

Predict is the hot path: one orjson parse, tensors decoded straight into numpy by
`dataplane.tensors`, the model called inline on the HTTP loop thread when it is fast (as on
gRPC's dispatcher), one response buffer.
"""

from __future__ import annotations

import binascii
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import orjson
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from dataplane import errors, rest_protos
from dataplane.errors import ServingError, UnknownSignature
from dataplane.http_server import (
    Handler,
    HttpLimits,
    HttpServer,
    Request,
    Response,
    internal_error,
    json_error,
)
from dataplane.inference import (
    Classification,
    Examples,
    InferenceService,
    ModelRef,
    Plan,
    Regression,
)
from dataplane.json_logs import JSON
from dataplane.limits import RequestLimits
from dataplane.options import ServerOptions
from dataplane.request_ids import with_request_ids
from dataplane.request_log import RequestLogger, logging_answer
from dataplane.rest_protos import ExamplesProtos, examples_pair, predict_pair
from dataplane.signatures import TensorSpec
from dataplane.tensors import (
    columnar_to_arrays,
    instances_to_arrays,
    outputs_json,
    predictions_json,
)
from dataplane.tracing import Traced, Tracing
from dataplane.transport.tls import TlsConfig

if TYPE_CHECKING:
    from dataplane.transport.rest_native import NativeHttpServer

log = logging.getLogger(__name__)

ExtraRoute = Callable[[], tuple[int, bytes, str]]

# TF Serving's route expressions (kPredictionApiGegex / kModelStatusApiRegex), full-matched.
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_OUTPUTS_PREFIX = b'{"outputs":'
_SNIPPET_CHARS = 256  # how much of a bad JSON value an error message echoes
_CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)
_NO_PRESENCE = {"always_print_fields_with_no_presence": True, "indent": 1}
_NO_TIMEOUT_S = 24 * 3600.0  # what a timeout flag of 0 means
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included
_BRACKETS = frozenset(b"[{]}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)


class RestApi:
    """Maps one HTTP request to one core call and its JSON answer.

    Runs on the HTTP server's one loop thread and never blocks it: a model call is submitted to
    the core, which answers at once when the call is fast and runs inline, or later (batched,
    or on the offload pool) through the returned Future.
    """

    def __init__(
        self,
        service: InferenceService,
        extra_routes: Mapping[str, ExtraRoute],
        cors: bool,
        max_json_depth: int = 100,
        request_logs: RequestLogger | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._service = service
        self._logs = request_logs
        self._tracing = tracing or Tracing.off()
        self._max_json_depth = max_json_depth
        self._extra_routes = dict(extra_routes)
        self._cors = cors
        self._verbs: dict[str, Callable[[ModelRef, bytes, Traced], Future[Response]]] = {
            "predict": self._predict,
            "classify": partial(self._examples, _CLASSIFY),
            "regress": partial(self._examples, _REGRESS),
        }

    def handle(self, request: Request) -> Response | Future[Response]:
        """The HTTP server's handler; errors it raises become responses in `error_response`."""
        path = request.path
        if request.method == "GET" and path in self._extra_routes:
            status, body, content_type = self._extra_routes[path]()
            return Response(status, body, content_type)
        if request.method == "OPTIONS" and self._cors:
            return Response(200, b"")
        if not _API_PATH.fullmatch(path):
            return json_error(404, f"Not found: {request.method} {path}")
        return self._dispatch(request.method, path, request.body, request.headers)

    def _dispatch(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> Response | Future[Response]:
        if method == "POST":
            match = _PREDICTION_PATH.fullmatch(path)
            if match:
                name, version, label, verb = match.groups()
                ref = _model_ref(name, version, label)
                call = self._verbs.get(verb)  # TF Serving compares the verb case-sensitively
                if call is not None:
                    return call(ref, body, self._tracing.begin(f"RestApi/{verb}", headers.items()))
        elif method == "GET":
            match = _STATUS_PATH.fullmatch(path)
            if match:
                name, version, label, subresource = match.groups()
                ref = _model_ref(name or "", version, label)
                if not ref.name:
                    raise errors.invalid_argument("Missing model name in request.")
                if subresource == "metadata":
                    return Response(200, self._metadata(ref))
                return Response(200, self._status(ref))
        raise errors.invalid_argument(f"Malformed request: {method} {path}")

    def _predict(self, ref: ModelRef, body: bytes, traced: Traced) -> Future[Response]:
        document = _parse_json_object(body, self._max_json_depth)
        signature_name = _signature_name(document)
        encode = predictions_json if "instances" in document else outputs_json
        decoded: dict[str, Mapping[str, np.ndarray]] = {}

        def decode_inputs(specs: Mapping[str, TensorSpec]) -> Mapping[str, np.ndarray]:
            # Runs once the model and signature are resolved, so (as in TF Serving) an
            # unknown model is reported before a malformed body.
            decoded["inputs"] = _decode_predict_inputs(document, specs, self._service.limits)
            return decoded["inputs"]

        plan = self._service.predict_plan(
            ref, signature_name, traced.timed("decode", decode_inputs)
        )
        answer = logging_answer(
            self._logs,
            ref.name,
            "predict",
            lambda done: Response(200, encode(done.outputs)),
            lambda done, _: predict_pair(ref, signature_name, decoded["inputs"], done),
        )
        return traced.submit(lambda: self._service.submit(plan, traced.answer(answer)))

    def _examples(
        self, verb: _ExamplesVerb, ref: ModelRef, body: bytes, traced: Traced
    ) -> Future[Response]:
        """:classify and :regress: one body (examples), each its own plan, JSON and protos."""
        signature_name, examples = _examples_request(body, self._max_json_depth)
        plan = verb.plan(self._service, ref, signature_name, examples)
        answer = logging_answer(
            self._logs,
            ref.name,
            verb.name,
            lambda done: Response(200, verb.to_json(done)),
            lambda done, _: examples_pair(verb.protos, ref, signature_name, examples, done),
        )
        return traced.submit(lambda: self._service.submit(plan, traced.answer(answer)))

    def _status(self, ref: ModelRef) -> bytes:
        """GetModelStatusResponse as TF Serving prints it (proto JSON, defaults included).

        A label selects nothing here: TF Serving's GetModelStatus reads only a version, so
        `/labels/L` lists every version, whatever L is (get_model_status_impl.cc)."""
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self._service.manager.model_status(ref.name, ref.version):
            entry = response.model_version_status.add(version=status.version, state=status.state)
            entry.status.error_code = status.error.code if status.error else 0
            entry.status.error_message = status.error.message if status.error else ""
        return json_format.MessageToJson(response, **_NO_PRESENCE).encode()

    def _metadata(self, ref: ModelRef) -> bytes:
        """GetModelMetadataResponse in TF Serving's REST shape (see ToJsonString there)."""
        resolved, signature_defs = self._service.metadata(ref)
        spec = model_pb2.ModelSpec(name=resolved.name)
        spec.version.value = resolved.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        options = {**_NO_PRESENCE, "preserving_proto_field_name": True}
        spec_json = json_format.MessageToJson(spec, **options)
        map_json = json_format.MessageToJson(signature_map, **options)
        return (
            f'{{\n"model_spec": {spec_json},\n"metadata": {{"signature_def": {map_json}}}\n}}\n'
        ).encode()


class RestServer:
    """The REST front end: TF Serving's REST API on `options.rest_api_port`, served by the
    HTTP/1.1 server --rest_transport names."""

    def __init__(
        self,
        options: ServerOptions,
        service: InferenceService,
        extra_routes: Mapping[str, ExtraRoute] | None = None,
        tls: TlsConfig | None = None,
        request_logs: RequestLogger | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """`tls`: serve HTTPS (--ssl_config_file); `request_logs`: logging_config's logger;
        `tracing`: --tracing_otlp_endpoint's tracer."""
        cors = options.rest_api_enable_cors_support
        api = RestApi(
            service,
            extra_routes or {},
            cors,
            options.rest_api_max_json_depth,
            request_logs,
            tracing,
        )
        handler: Handler = api.handle
        if options.logs_format == JSON:
            handler = with_request_ids(handler, error_response)
        common = {
            "port": options.rest_api_port,
            "limits": http_limits(options),
            "common_headers": _CORS_HEADERS if cors else (),
            "error_response": error_response,
        }
        native = _native_server() if options.rest_transport == "native" else None
        self._http: HttpServer | NativeHttpServer
        if native is not None:
            self._http = native(
                handler,
                tls=tls.transport_tuple() if tls is not None else None,
                spin_microseconds=options.grpc_dispatcher_spin_micros,
                **common,
            )
        else:
            ssl = tls.ssl_context() if tls is not None else None
            self._http = HttpServer(handler, ssl=ssl, **common)

    @property
    def port(self) -> int:
        return self._http.port

    def start(self) -> None:
        self._http.start()

    def stop(self, grace_seconds: float) -> None:
        self._http.stop(grace_seconds)


def _native_server() -> type[NativeHttpServer] | None:
    """The hyper server, or None (with one warning) where the extension is not built."""
    try:
        from dataplane.transport.rest_native import NativeHttpServer
    except ImportError:
        log.warning("the native transport is not built; serving REST with the Python server")
        return None
    return NativeHttpServer


def http_limits(options: ServerOptions) -> HttpLimits:
    """The REST flags as the HTTP layer's limits; --rest_api_timeout_in_ms bounds both
    reading a request and answering it, as one budget a client can reason about."""
    timeout_s = _seconds(options.rest_api_timeout_in_ms)
    return HttpLimits(
        max_body_bytes=options.rest_api_max_body_bytes,
        request_timeout_s=timeout_s,
        answer_timeout_s=timeout_s,
        idle_timeout_s=_seconds(options.rest_api_idle_timeout_in_ms),
        max_connections=options.rest_api_max_connections,
        max_pending=options.rest_api_max_pending_requests,
    )


def _seconds(milliseconds: int) -> float:
    """A timeout flag in seconds; 0 means none, which the HTTP layer takes as a day."""
    return milliseconds / 1000 if milliseconds > 0 else _NO_TIMEOUT_S


def error_response(exc: BaseException) -> Response:
    """A ServingError is `{"error": ...}` with the HTTP status TF Serving maps its code to;
    anything else is a bug in the data plane: a 500, logged."""
    if isinstance(exc, UnknownSignature):  # REST predict words it as GetInfoMap does
        return json_error(400, f'Serving signature name: "{exc.key}" not found in signature def')
    if isinstance(exc, ServingError):
        return json_error(exc.http_status, exc.message)
    return internal_error(exc)


def _model_ref(name: str, version: str | None, label: str | None) -> ModelRef:
    """Name and label are URL-decoded (as TF Serving does with curl); version is an int64."""
    number = None
    if version is not None:
        number = int(version)
        if number > _INT64_MAX:
            raise errors.invalid_argument(f"Failed to convert version: {version} to numeric.")
    return ModelRef(unquote(name) if "%" in name else name, number, label and unquote(label))


def _parse_json_object(body: bytes, max_depth: int) -> dict[str, Any]:
    """Parse a request body with orjson, falling back to the stdlib parser, which also
    accepts the NaN/Infinity tokens api_rest.md allows and integers beyond 64 bits.

    Nesting deeper than `max_depth` is refused first, so neither parser nor any walk over
    the document recurses without bound; a lone surrogate (which orjson refuses and the
    stdlib would let through into strings no encoder takes) is refused as rapidjson does."""
    _check_depth(body, max_depth)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson words invalid UTF-8 bytes as "surrogates not allowed" too; those go to the
        # stdlib parser, which names the encoding and the byte's offset.
        if "surrogate" in str(exc) and not str(exc).startswith("str is not valid UTF-8"):
            raise errors.invalid_argument(
                f"JSON Parse error: The surrogate pair in string is invalid. at offset: {exc.pos}"
            ) from None
        document = _parse_lenient(body)
    if not isinstance(document, dict):
        raise errors.invalid_argument(f"JSON Value: {_snippet(document)} Is not object")
    return document


def _parse_lenient(body: bytes) -> Any:
    if not body.strip():
        raise errors.invalid_argument("JSON Parse error: The document is empty")
    try:
        return json.loads(body.decode("utf-8"), parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise errors.invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}"
        ) from None
    except json.JSONDecodeError as exc:
        message = "Invalid value." if exc.msg == "Expecting value" else f"{exc.msg}."
        raise errors.invalid_argument(f"JSON Parse error: {message} at offset: {exc.pos}") from None
    except ValueError:  # from _finite_float, or an integer of more digits than int() takes
        raise errors.invalid_argument(
            "JSON Parse error: Number too big to be stored in double."
        ) from None
    except RecursionError:
        raise errors.invalid_argument(
            "JSON Parse error: The document is nested too deeply"
        ) from None


def _finite_float(text: str) -> float:
    """A decimal literal as a float; one beyond the double range (1e400) is refused, as
    rapidjson refuses it, rather than read as infinity (only the Infinity token means that)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(text)
    return value


def _check_depth(body: bytes, max_depth: int) -> None:
    """Refuse JSON nested deeper than `max_depth` arrays/objects (0: no bound).

    A body with no more opening brackets than the bound cannot exceed it (two byte counts,
    the usual case); otherwise strings are blanked out and the brackets left are summed.
    """
    if not max_depth or body.count(b"[") + body.count(b"{") <= max_depth:
        return
    brackets = _STRING.sub(b'""', body).translate(None, _NOT_BRACKETS)
    steps = np.frombuffer(brackets, np.uint8)
    opens = (steps == ord("[")) | (steps == ord("{"))
    depth = int(np.cumsum(np.where(opens, 1, -1), dtype=np.int32).max(initial=0))
    if depth > max_depth:
        raise errors.invalid_argument(
            f"JSON Parse error: The document is nested {depth} levels deep, more than the "
            f"limit of {max_depth} (--rest_api_max_json_depth)"
        )


def _snippet(value: Any) -> str:
    """A JSON value for an error message, cut short: bodies can be megabytes."""
    text = json.dumps(value)
    return text if len(text) <= _SNIPPET_CHARS else f"{text[:_SNIPPET_CHARS]}..."


def _signature_name(document: Mapping[str, Any]) -> str:
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise errors.invalid_argument(
            f"JSON Value: {_snippet(name)} not formatted correctly. 'signature_name' key must be"
            " a string value."
        )
    return name


def _decode_predict_inputs(
    document: Mapping[str, Any], specs: Mapping[str, TensorSpec], limits: RequestLimits
) -> Mapping[str, np.ndarray]:
    """Row (`instances`) or columnar (`inputs`) tensors; a request may use only one form."""
    if "instances" in document:
        if "inputs" in document:
            raise errors.invalid_argument(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to"
                " exist"
            )
        return instances_to_arrays(document["instances"], specs, limits)
    if "inputs" in document:
        return columnar_to_arrays(document["inputs"], specs, limits)
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")


# --------------------------------------------------------------------------- classify/regress


def _examples_request(body: bytes, max_depth: int) -> tuple[str, Examples]:
    """`{"signature_name", "context", "examples"}` as serialized tf.Example protos."""
    document = _parse_json_object(body, max_depth)
    signature_name = _signature_name(document)
    context = _example(document["context"]) if "context" in document else None
    examples = document.get("examples")
    if examples is None:
        raise errors.invalid_argument(
            "When method is classify, key 'examples' is expected and was not found"
        )
    if not isinstance(examples, list):
        raise errors.invalid_argument("Expecting 'examples' value to be an list/array")
    if not examples:
        raise errors.invalid_argument("'examples' value is an empty array")
    return signature_name, Examples.from_protos(map(_example, examples), context)


def _example(value: Any) -> example_pb2.Example:
    """One JSON object as a tf.Example, one Feature per key."""
    if not isinstance(value, dict):
        raise errors.invalid_argument(
            f"Example must be JSON object but got JSON {_json_type(value)}"
        )
    example = example_pb2.Example()
    features = example.features.feature
    for name, content in value.items():
        _fill_feature(features[name], name, content if isinstance(content, list) else [content])
    return example


def _fill_feature(feature: feature_pb2.Feature, name: str, values: list[Any]) -> None:
    """All values of one feature must share one kind: int64, float or bytes."""
    kind = ""
    converted = []
    for item in values:
        item_kind, value = _feature_value(name, item)
        if kind and item_kind != kind:
            raise errors.invalid_argument(
                f"Unexpected element type in feature: {name} expecting type: {kind}"
            )
        kind = item_kind
        converted.append(value)
    if kind == "int64":
        feature.int64_list.value.extend(converted)
    elif kind == "float":
        feature.float_list.value.extend(converted)
    elif kind == "bytes":
        feature.bytes_list.value.extend(converted)


def _feature_value(name: str, item: Any) -> tuple[str, Any]:
    """(kind, value) of one JSON feature value, by TF Serving's rules: booleans and whole
    numbers are int64, decimals are float, strings and {"b64": ...} are bytes."""
    if isinstance(item, bool):
        return "int64", int(item)
    if isinstance(item, int):
        if _INT64_MIN <= item <= _INT64_MAX:
            return "int64", item
        if 0 < item <= _UINT64_MAX:
            raise errors.invalid_argument(
                f"Feature: {name} has uint64 element. Only int64 is supported."
            )
        try:
            item = float(item)  # beyond 64 bits a JSON parser can only hold it as a decimal
        except OverflowError:  # and beyond a double's range not even so (found by tests/fuzz)
            raise errors.invalid_argument(
                f"Cannot convert JSON value: {str(item)[:_SNIPPET_CHARS]} to float without loss"
                " of precision."
            ) from None
    if isinstance(item, float):
        if math.isfinite(item) and abs(item) > _FLOAT32_MAX:
            raise errors.invalid_argument(
                f"Cannot convert JSON value: {item!r} to float without loss of precision."
            )
        return "float", item
    if isinstance(item, str):
        return "bytes", item.encode()
    if isinstance(item, dict) and len(item) == 1 and isinstance(item.get("b64"), str):
        return "bytes", _b64decode(item["b64"])
    raise errors.invalid_argument(
        f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}"
    )


def _b64decode(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise errors.invalid_argument("Unable to base64 decode") from None


def _json_type(value: Any) -> str:
    """rapidjson's type names, as TF Serving's messages print them."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _classification_json(result: Classification) -> bytes:
    """`{"results": [[[label, score], ...], ...]}`; a missing label is "", a missing score 0."""
    classes, scores = result.classes, result.scores
    shape = scores.shape if scores is not None else classes.shape  # type: ignore[union-attr]
    score_rows = json.loads(_float_json(scores)) if scores is not None else None
    results = [
        [
            [
                classes[i, j].decode("utf-8", "replace") if classes is not None else "",
                score_rows[i][j] if score_rows is not None else 0.0,
            ]
            for j in range(shape[1])
        ]
        for i in range(shape[0])
    ]
    return json.dumps({"results": results}).encode()  # json writes NaN/Infinity as TF does


def _regression_json(result: Regression) -> bytes:
    return b'{"results":' + _float_json(result.values) + b"}"


def _float_json(values: np.ndarray) -> bytes:
    """Float values as JSON written exactly like Predict outputs (TF Serving's decimals,
    NaN/Infinity tokens): the value part of the one-output columnar response."""
    return outputs_json({"values": values})[len(_OUTPUTS_PREFIX) : -1]


@dataclass(frozen=True)
class _ExamplesVerb:
    """What :classify and :regress do differently with the same examples body."""

    name: str
    plan: Callable[[InferenceService, ModelRef, str, Examples], Plan[Any]]
    to_json: Callable[[Any], bytes]
    protos: ExamplesProtos


_CLASSIFY = _ExamplesVerb(
    "classify", InferenceService.classify_plan, _classification_json, rest_protos.CLASSIFY
)
_REGRESS = _ExamplesVerb(
    "regress", InferenceService.regress_plan, _regression_json, rest_protos.REGRESS
)
