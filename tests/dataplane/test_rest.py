"""The REST API against one live `python -m dataplane` over loopback, with real models.

Expected bodies and messages come from TensorFlow Serving's own tests
(http_rest_api_handler_test.cc, tensorflow_model_server_test.py) and api_rest.md. After every
test the quick-start request must still be answered: no bad request may hurt the server.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from dataplane.http_server import HttpLimits
from dataplane.inference import InferenceService, run_direct
from dataplane.manager import ModelManager
from dataplane.offload import Offload
from dataplane.options import ServerOptions
from dataplane.rest import RestServer, http_limits
from dataplane.servable import load_servable
from tests.dataplane.fakes import OneModel
from tests.support.processes import DataPlaneProcess, start_dataplane

MAX_REQUEST_BYTES = 65536
HPT = "/v1/models/half_plus_two"
QUICK_START = {"instances": [1.0, 2.0, 5.0]}


@pytest.fixture(scope="module")
def dataplane(saved_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("rest")
    models = {
        "half_plus_two": (
            saved_models.half_plus_two,
            'version_labels { key: "stable" value: 123 }',
        ),
        "multi_version": (
            saved_models.multi_version,
            "model_version_policy { all {} }",
        ),
        "strings": (saved_models.strings, ""),
        "keras": (saved_models.keras, ""),
    }
    entries = "".join(
        f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" {extra} }}'
        for name, (path, extra) in models.items()
    )
    config = Path(root, "models.config")
    config.write_text(f"model_config_list {{ {entries} }}")
    process: DataPlaneProcess = start_dataplane(
        f"--model_config_file={config}",
        f"--rest_api_max_request_bytes={MAX_REQUEST_BYTES}",
        "--allow_version_labels_for_unavailable_models",  # the label is in the first config
        log_dir=root,
    )
    yield process.rest_url
    process.stop()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def call(
    session: requests.Session, url: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """(status, parsed JSON) — `body` is sent as JSON unless it is already bytes/str."""
    data = body if isinstance(body, bytes | str) or body is None else json.dumps(body)
    response = session.request(method, url + path, data=data, timeout=30)
    assert response.headers["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.content)  # json accepts NaN/Infinity


@pytest.fixture(autouse=True)
def server_still_answers(dataplane: str, session: requests.Session) -> Iterator[None]:
    yield
    assert call(session, dataplane, "POST", f"{HPT}:predict", QUICK_START) == (
        200,
        {"predictions": [2.5, 3.0, 4.5]},
    )


# ------------------------------------------------------------------------------ model status

AVAILABLE_123 = {
    "model_version_status": [
        {
            "version": "123",
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
    ]
}


@pytest.mark.parametrize("path", [HPT, f"{HPT}/versions/123", f"{HPT}/labels/stable"])
def test_model_status(dataplane: str, session: requests.Session, path: str) -> None:
    assert call(session, dataplane, "GET", path) == (200, AVAILABLE_123)


@pytest.mark.parametrize("path", ["/v1/models/multi_version", "/v1/models/multi_version/labels/x"])
def test_model_status_lists_every_version_newest_first(
    dataplane: str, session: requests.Session, path: str
) -> None:
    """A label selects nothing: TF Serving's GetModelStatus reads only a version."""
    status, body = call(session, dataplane, "GET", path)
    assert status == 200
    assert [(v["version"], v["state"]) for v in body["model_version_status"]] == [
        ("2", "AVAILABLE"),
        ("1", "AVAILABLE"),
    ]


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/v1/models/nope", 404, "Could not find any versions of model nope"),
        (f"{HPT}/versions/7", 404, "Could not find version 7 of model half_plus_two"),
        ("/v1/models", 400, "Missing model name in request."),
        ("/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
        ("/v1/models/debug/model_name", 400, "Malformed request: GET /v1/models/debug/model_name"),
    ],
)
def test_model_status_errors(
    dataplane: str, session: requests.Session, path: str, status: int, error: str
) -> None:
    assert call(session, dataplane, "GET", path) == (status, {"error": error})


def test_head_answers_like_get_without_a_body(dataplane: str, session: requests.Session) -> None:
    got = session.get(dataplane + HPT, timeout=30)
    head = session.head(dataplane + HPT, timeout=30)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["Content-Length"] == got.headers["Content-Length"]


# ------------------------------------------------------------------------------ metadata


def tensor_info(name: str, dtype: str, dims: list[str] | None) -> dict[str, Any]:
    """TensorInfo as TF Serving's metadata JSON prints it (proto names, defaults shown)."""
    shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    if dims is not None:
        shape = {"dim": [{"size": d, "name": ""} for d in dims], "unknown_rank": False}
    return {"name": name, "dtype": dtype, "tensor_shape": shape}


@pytest.mark.parametrize("prefix", [HPT, f"{HPT}/versions/123", f"{HPT}/labels/stable"])
def test_metadata_has_tf_servings_shape(
    dataplane: str, session: requests.Session, prefix: str
) -> None:
    status, body = call(session, dataplane, "GET", f"{prefix}/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == [
        "classify_x2_to_y3",
        "classify_x_to_y",
        "regress_x2_to_y3",
        "regress_x_to_y",
        "regress_x_to_y2",
        "serving_default",
    ]
    assert signatures["serving_default"] == {
        "inputs": {"x": tensor_info("x:0", "DT_FLOAT", ["-1", "1"])},
        "outputs": {"y": tensor_info("y:0", "DT_FLOAT", ["-1", "1"])},
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    assert signatures["classify_x_to_y"]["inputs"] == {
        "inputs": tensor_info("tf_example:0", "DT_STRING", None)
    }


# ------------------------------------------------------------------------------ predict


@pytest.mark.parametrize(
    ("path", "request_body", "expected"),
    [
        (f"{HPT}:predict", QUICK_START, {"predictions": [2.5, 3.0, 4.5]}),
        (
            f"{HPT}:predict",
            {"instances": [[1.0, 2.0], [3.0, 4.0]]},
            {"predictions": [[2.5, 3.0], [3.5, 4.0]]},
        ),
        (f"{HPT}/versions/123:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
        (f"{HPT}/labels/stable:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
        (
            f"{HPT}/versions/123:predict",
            {"signature_name": "serving_default", "instances": [3.0, 4.0]},
            {"predictions": [3.5, 4.0]},
        ),
        (
            f"{HPT}/versions/123:predict",
            {"signature_name": "serving_default", "inputs": [3.0, 4.0]},
            {"outputs": [3.5, 4.0]},
        ),
        (f"{HPT}:predict", {"inputs": {"x": [[1.0], [2.0]]}}, {"outputs": [[2.5], [3.0]]}),
        (f"{HPT}:predict", {"instances": [{"x": [1.0]}]}, {"predictions": [[2.5]]}),
        (f"{HPT}:predict", {"instances": [0.1]}, {"predictions": [2.05]}),
        # A scalar output past 1e6 took a formatting path that failed on rank 0 (fuzzing).
        (f"{HPT}:predict", {"inputs": 2e7}, {"outputs": 10000002.0}),
        (
            "/v1/models/multi_version/versions/1:predict",
            {"instances": [1.0]},
            {"predictions": [2.5]},
        ),
        ("/v1/models/multi_version:predict", {"instances": [1.0]}, {"predictions": [3.5]}),
        ("/V1/MODELS/half_plus_two:predict", {"instances": [1.0]}, {"predictions": [2.5]}),
        (
            "/v1/models/keras:predict",
            {"instances": [[1.0, 2.0, 3.0]]},
            {"predictions": [[11.5]]},
        ),
    ],
)
def test_predict(
    dataplane: str, session: requests.Session, path: str, request_body: Any, expected: Any
) -> None:
    assert call(session, dataplane, "POST", path, request_body) == (200, expected)


def test_predict_accepts_and_writes_nan_and_infinity(
    dataplane: str, session: requests.Session
) -> None:
    body = b'{"instances": [NaN, Infinity, -Infinity]}'
    status, result = call(session, dataplane, "POST", f"{HPT}:predict", body)
    assert status == 200
    first, *rest = result["predictions"]
    assert math.isnan(first) and rest == [math.inf, -math.inf]


def test_predict_b64_strings_in_and_out(dataplane: str, session: requests.Session) -> None:
    raw = b"\x00\xffab"
    body = {"instances": [{"b64": base64.b64encode(raw).decode()}, "hello"]}
    status, result = call(session, dataplane, "POST", "/v1/models/strings:predict", body)
    assert status == 200
    # Two outputs: one object per row. Non-UTF-8 output bytes come back as {"b64": ...}.
    assert result == {
        "predictions": [
            {"length": 4, "upper": {"b64": base64.b64encode(b"\x00\xffAB").decode()}},
            {"length": 5, "upper": "HELLO"},
        ]
    }
    status, result = call(
        session, dataplane, "POST", "/v1/models/strings:predict", {"inputs": ["a", "bc"]}
    )
    assert (status, result) == (200, {"outputs": {"length": [1, 2], "upper": ["A", "BC"]}})


BOTH_FORMS = "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (f"{HPT}:predict", b"", 400, "JSON Parse error: The document is empty"),
        (
            f"{HPT}:predict",
            b"instances = [1, 2]",
            400,
            "JSON Parse error: Invalid value. at offset: 0",
        ),
        (f"{HPT}:predict", b'{"instances": [1.0', 400, None),
        (f"{HPT}:predict", b'{"instances": ["\xff"]}', 400, None),
        (f"{HPT}:predict", b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, None),
        (
            f"{HPT}:predict",
            b'{"instances": [' + b"1" * 5000 + b"]}",
            400,
            "JSON Parse error: Number too big to be stored in double.",
        ),
        (f"{HPT}:predict", b"[1, 2]", 400, "JSON Value: [1, 2] Is not object"),
        (f"{HPT}:predict", {"instances": [1.0], "inputs": [1.0]}, 400, BOTH_FORMS),
        (
            f"{HPT}:predict",
            {"signature_name": "serving_default"},
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        (
            f"{HPT}:predict",
            {"signature_name": 100},
            400,
            "JSON Value: 100 not formatted correctly. 'signature_name' key must be a string value.",
        ),
        (f"{HPT}:predict", {"instances": []}, 400, "No values in 'instances' array"),
        (f"{HPT}:predict", {"instances": 1.0}, 400, "Expecting 'instances' to be an list/array"),
        (
            "/v1/models/nope:predict",
            {"instances": [1]},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            f"{HPT}/versions/99:predict",
            {"instances": [1.0]},
            404,
            "Servable not found for request: Specific(half_plus_two, 99)",
        ),
        # The model is resolved before the body is looked at, as in TF Serving.
        (
            "/v1/models/nope:predict",
            {"neither": 1},
            404,
            "Servable not found for request: Latest(nope)",
        ),
    ],
)
def test_predict_errors(
    dataplane: str, session: requests.Session, path: str, body: Any, status: int, error: str | None
) -> None:
    got_status, result = call(session, dataplane, "POST", path, body)
    assert got_status == status
    assert list(result) == ["error"]
    if error is None:
        assert result["error"].startswith("JSON Parse error: ")
    else:
        assert result["error"] == error


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            b'{"instances": ["\\ud800"]}',
            "JSON Parse error: The surrogate pair in string is invalid. at offset: 16",
        ),
        (
            b'{"instances": ["a\xff"]}',
            "JSON Parse error: Invalid encoding in string. at offset: 17",
        ),
    ],
    ids=["lone-surrogate-escape", "invalid-utf8-byte"],
)
def test_bad_unicode_is_a_parse_error_with_its_offset(
    dataplane: str, session: requests.Session, body: bytes, error: str
) -> None:
    assert call(session, dataplane, "POST", f"{HPT}:predict", body) == (400, {"error": error})


def test_without_a_depth_bound_deep_json_is_still_a_parse_error(half_plus_two) -> None:
    """--rest_api_max_json_depth=0 turns the bound off; the parser's own limit answers."""
    options = ServerOptions(rest_api_port=0, rest_api_max_json_depth=0)
    server = RestServer(options, InferenceService(OneModel(half_plus_two)))  # type: ignore[arg-type]
    server.start()
    try:
        body = '{"instances": ' + "[" * 5000 + "1" + "]" * 5000 + "}"
        with requests.Session() as session:
            url = f"http://127.0.0.1:{server.port}"
            assert call(session, url, "POST", f"{HPT}:predict", body) == (
                400,
                {"error": "JSON Parse error: The document is nested too deeply"},
            )
    finally:
        server.stop(1.0)


def test_predict_wrong_type_names_the_value(dataplane: str, session: requests.Session) -> None:
    status, result = call(session, dataplane, "POST", f"{HPT}:predict", {"instances": ["x", "y"]})
    assert status == 400
    assert "not of expected type: float" in result["error"]


def test_predict_unknown_signature_is_a_bad_request(
    dataplane: str, session: requests.Session
) -> None:
    status, result = call(
        session, dataplane, "POST", f"{HPT}:predict", {"signature_name": "nope", "instances": [1.0]}
    )
    error = 'Serving signature name: "nope" not found in signature def'
    assert (status, result) == (400, {"error": error})


def test_oversized_body_is_413_with_an_error_body(
    dataplane: str, session: requests.Session
) -> None:
    body = json.dumps({"instances": [1.0] * (MAX_REQUEST_BYTES // 4)})
    status, result = call(session, dataplane, "POST", f"{HPT}:predict", body)
    assert (status, result) == (
        413,
        {
            "error": f"Request body is larger than the limit of {MAX_REQUEST_BYTES} bytes "
            "(--rest_api_max_body_bytes)"
        },
    )


def test_truncated_body_then_close_leaves_the_server_up(dataplane: str) -> None:
    host, port = dataplane.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"POST {HPT}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"instances": [1.0'
        )
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""


# ------------------------------------------------------------------------------ classify/regress


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            f"{HPT}:classify",
            {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]},
            {"results": [[["", 12.0]]]},
        ),
        (
            f"{HPT}/labels/stable:classify",
            {"signature_name": "classify_x_to_y", "examples": [{"x": 10.0}, {"x": 2.0}]},
            {"results": [[["", 7.0]], [["", 3.0]]]},
        ),
        (
            f"{HPT}:regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]},
            {"results": [42.0]},
        ),
        (
            f"{HPT}/versions/123:regress",
            {"signature_name": "regress_x_to_y2", "examples": [{"x": [2.0]}]},
            {"results": [4.0]},
        ),
        (
            # Context features go into every example; an example's own feature wins.
            f"{HPT}:regress",
            {
                "signature_name": "regress_x_to_y",
                "context": {"x": 1.0},
                "examples": [{}, {"x": 3.0}],
            },
            {"results": [2.5, 3.5]},
        ),
        (
            # Features the graph does not parse are converted (all kinds) and ignored.
            f"{HPT}:regress",
            {
                "signature_name": "regress_x_to_y",
                "examples": [
                    {"x": 0.5, "n": [1, 2], "flag": True, "s": "text", "blob": {"b64": "AAE="}}
                ],
            },
            {"results": [2.25]},
        ),
    ],
)
def test_classify_and_regress(
    dataplane: str, session: requests.Session, path: str, body: Any, expected: Any
) -> None:
    assert call(session, dataplane, "POST", path, body) == (200, expected)


REGRESS = {"signature_name": "regress_x_to_y"}


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            f"{HPT}:regress",
            REGRESS,
            400,
            "When method is classify, key 'examples' is expected and was not found",
        ),
        (
            f"{HPT}:regress",
            {**REGRESS, "examples": {}},
            400,
            "Expecting 'examples' value to be an list/array",
        ),
        (f"{HPT}:regress", {**REGRESS, "examples": []}, 400, "'examples' value is an empty array"),
        (
            f"{HPT}:regress",
            {**REGRESS, "examples": [[1]]},
            400,
            "Example must be JSON object but got JSON Array",
        ),
        (
            f"{HPT}:regress",
            {**REGRESS, "examples": [{"x": [1.0, "a"]}]},
            400,
            "Unexpected element type in feature: x expecting type: float",
        ),
        (
            f"{HPT}:regress",
            {**REGRESS, "examples": [{"x": None}]},
            400,
            "Feature: x has element with unexpected JSON type: Null",
        ),
        (
            f"{HPT}:regress",
            {**REGRESS, "examples": [{"x": [[1.0]]}]},
            400,
            "Feature: x has element with unexpected JSON type: Array",
        ),
        (
            f"{HPT}:regress",
            {**REGRESS, "examples": [{"x": 2**63}]},
            400,
            "Feature: x has uint64 element. Only int64 is supported.",
        ),
        (
            f"{HPT}:regress",
            {**REGRESS, "examples": [{"x": 1e300}]},
            400,
            "Cannot convert JSON value: 1e+300 to float without loss of precision.",
        ),
        (
            f"{HPT}:regress",
            {**REGRESS, "examples": [{"x": 10**400}]},
            400,
            f"Cannot convert JSON value: {str(10**400)[:256]} to float without loss of precision.",
        ),
        (
            f"{HPT}:regress",
            {**REGRESS, "examples": [{"x": {"b64": "!!"}}]},
            400,
            "Unable to base64 decode",
        ),
        (
            f"{HPT}:classify",
            {"signature_name": "nope", "examples": [{"x": 1.0}]},
            400,
            "No signature was found with the name: nope",
        ),
        (
            f"{HPT}:regress",
            {"signature_name": "nope", "examples": [{"x": 1.0}]},
            400,
            "No signature was found with the name: nope",
        ),
        (
            "/v1/models/nope:classify",
            {"examples": [{"x": 1.0}]},
            404,
            "Servable not found for request: Latest(nope)",
        ),
    ],
)
def test_classify_and_regress_errors(
    dataplane: str, session: requests.Session, path: str, body: Any, status: int, error: str
) -> None:
    assert call(session, dataplane, "POST", path, body) == (status, {"error": error})


def test_whole_number_feature_is_int64(dataplane: str, session: requests.Session) -> None:
    """`80` (no decimal point) becomes an int64_list, which the float parser rejects."""
    status, result = call(
        session, dataplane, "POST", f"{HPT}:regress", {**REGRESS, "examples": [{"x": 80}]}
    )
    assert status == 400
    assert "int64" in result["error"] and "float" in result["error"]


# ------------------------------------------------------------------------------ routing


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v1/foo", 400, "Malformed request: GET /v1/foo"),
        ("POST", "/v1/foo", 400, "Malformed request: POST /v1/foo"),
        ("POST", "/v1/models", 400, "Malformed request: POST /v1/models"),
        ("GET", f"{HPT}:predict", 400, f"Malformed request: GET {HPT}:predict"),
        (
            "POST",
            "/v1/models/foo/version/50:regress",
            400,
            "Malformed request: POST /v1/models/foo/version/50:regress",
        ),
        (
            "POST",
            "/v1/models/foo/versions/HELLO:regress",
            400,
            "Malformed request: POST /v1/models/foo/versions/HELLO:regress",
        ),
        (
            "POST",
            "/v1/models/foo/versions/18446744073709551615:regress",
            400,
            "Failed to convert version: 18446744073709551615 to numeric.",
        ),
        ("POST", "/v1/models/foo/metadata", 400, "Malformed request: POST /v1/models/foo/metadata"),
        (
            "POST",
            "/v1/models/foo/versions/50/labels/l:regress",
            400,
            "Malformed request: POST /v1/models/foo/versions/50/labels/l:regress",
        ),
        ("POST", f"{HPT}:PREDICT", 400, f"Malformed request: POST {HPT}:PREDICT"),
        ("DELETE", HPT, 400, f"Malformed request: DELETE {HPT}"),
        ("PUT", f"{HPT}:predict", 400, f"Malformed request: PUT {HPT}:predict"),
        ("GET", "/", 404, "Not found: GET /"),
        ("POST", "/index.html", 404, "Not found: POST /index.html"),
    ],
)
def test_route_errors(
    dataplane: str, session: requests.Session, method: str, path: str, status: int, error: str
) -> None:
    assert call(session, dataplane, method, path, {"instances": [1.0]}) == (
        status,
        {"error": error},
    )


def test_model_name_is_url_decoded(dataplane: str, session: requests.Session) -> None:
    status, _ = call(
        session, dataplane, "POST", "/v1/models/half%5Fplus%5Ftwo:predict", QUICK_START
    )
    assert status == 200


# ------------------------------------------------------------------------------ in-process


@pytest.fixture
def cors_server() -> Iterator[RestServer]:
    """A REST server with CORS and one extra route; no models are needed for these paths."""
    options = ServerOptions(rest_api_port=0, rest_api_enable_cors_support=True)
    service = InferenceService(ModelManager(options, load_servable))
    server = RestServer(
        options, service, {"/monitoring/metrics": lambda: (200, b"# up 1\n", "text/plain")}
    )
    server.start()
    yield server
    server.stop(1.0)


CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}


def test_cors_headers_and_preflight(cors_server: RestServer) -> None:
    url = f"http://127.0.0.1:{cors_server.port}"
    preflight = requests.options(f"{url}{HPT}:predict", timeout=10)
    assert (preflight.status_code, preflight.content) == (200, b"")
    error = requests.get(f"{url}/v1/models/nope", timeout=10)
    assert (error.status_code, error.json()) == (
        404,
        {"error": "Could not find any versions of model nope"},
    )
    for response in (preflight, error):
        assert {k: response.headers[k] for k in CORS} == CORS


def test_extra_route_is_served_as_given(cors_server: RestServer) -> None:
    response = requests.get(f"http://127.0.0.1:{cors_server.port}/monitoring/metrics", timeout=10)
    assert (response.status_code, response.content) == (200, b"# up 1\n")
    assert response.headers["Content-Type"] == "text/plain"


def test_a_slow_model_runs_off_the_loop_and_others_are_served_meanwhile(half_plus_two) -> None:
    """A signature slow enough for the offload pool must not hold up the one REST loop."""
    threads: list[str] = []

    def slow_runner(servable, signature, feeds, output_keys):
        threads.append(threading.current_thread().name)
        time.sleep(0.5)
        return run_direct(servable, signature, feeds, output_keys)

    half_plus_two.signature("serving_default").typical_seconds = 1.0
    options = ServerOptions(rest_api_port=0)
    with ThreadPoolExecutor(1, thread_name_prefix="offload") as pool:
        manager = OneModel(half_plus_two)
        service = InferenceService(manager, slow_runner, offload=Offload(pool))  # type: ignore[arg-type]
        server = RestServer(options, service, {"/up": lambda: (200, b"up", "text/plain")})
        server.start()
        url = f"http://127.0.0.1:{server.port}"
        try:
            with ThreadPoolExecutor(1) as client:
                slow = client.submit(
                    requests.post, f"{url}/v1/models/h:predict", json={"instances": [[1.0]]}
                )
                time.sleep(0.1)  # the predict is now running on the offload thread
                started = time.monotonic()
                assert requests.get(f"{url}/up", timeout=10).content == b"up"
                assert time.monotonic() - started < 0.3
                assert not slow.done()
                assert slow.result(10).json() == {"predictions": [[2.5]]}
        finally:
            server.stop(1.0)
    assert threads == ["offload_0"]


def test_rest_flags_become_the_http_limits() -> None:
    options = ServerOptions(
        rest_api_timeout_in_ms=1500,
        rest_api_max_body_bytes=10,
        rest_api_idle_timeout_in_ms=2500,
        rest_api_max_connections=3,
        rest_api_max_pending_requests=4,
    )
    assert http_limits(options) == HttpLimits(
        max_body_bytes=10,
        request_timeout_s=1.5,
        answer_timeout_s=1.5,
        idle_timeout_s=2.5,
        max_connections=3,
        max_pending=4,
    )
    unbounded = http_limits(ServerOptions(rest_api_timeout_in_ms=0, rest_api_idle_timeout_in_ms=0))
    assert unbounded.answer_timeout_s == unbounded.idle_timeout_s == 24 * 3600.0


def test_brackets_inside_strings_do_not_count_as_nesting(
    dataplane: str, session: requests.Session
) -> None:
    text = '\\"[' * 150 + "{" * 150  # escaped quotes and brackets, all inside one string
    body = '{"instances": [[1.0], [2.0]], "signature_name": "' + text + '"}'
    status, answer = call(session, dataplane, "POST", f"{HPT}:predict", body)
    assert status == 400  # parsed, then the signature is unknown: no nesting refusal
    assert "nested" not in answer["error"] and "signature" in answer["error"].lower()
    nested = '{"instances": ' + "[" * 101 + "1" + "]" * 101 + "}"
    assert call(session, dataplane, "POST", f"{HPT}:predict", nested) == (
        400,
        {
            "error": "JSON Parse error: The document is nested 102 levels deep, more than the "
            "limit of 100 (--rest_api_max_json_depth)"
        },
    )
