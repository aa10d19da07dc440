"""Drop-in checks against TF Serving's own test models, api_rest.md examples and error paths.

Live data planes with default flags (and one with --enable_signature_method_name_check) serve
equivalents of TF Serving's testdata models, built by TensorFlow in the run
(``examples.builders``):

* ``saved_model_half_plus_two_2_versions``: the TF1 half_plus_two in versions 123 and 124.
* ``half_plus_two_tf2``: the TF2 export (``saved_model_half_plus_two_tf2_cpu``) in versions
  123 and 124; every signature says ``tensorflow/serving/predict``.
* ``half_plus_three``: ``saved_model_half_plus_three``, whose regress signature declares a
  DT_FLOAT input over a DT_STRING placeholder.
* ``contract_breakers``: signatures that each break one rule of Classify/Regress.

Every call goes through the official ``tensorflow-serving-api`` stubs or plain HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.support.processes import DataPlaneProcess, start_dataplane

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"
TF1 = "saved_model_half_plus_two_2_versions"
TF2 = "half_plus_two_tf2"
H3 = "half_plus_three"
BAD = "contract_breakers"


@pytest.fixture(scope="module")
def testdata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three models, built once for the module."""
    from examples import builders  # deferred: importing TensorFlow costs seconds

    root = tmp_path_factory.mktemp("tf_serving_testdata")
    for version in (123, 124):
        builders.build_half_plus_two_tf1(str(root / TF1), version)
        builders.build_half_plus_two_tf2(str(root / TF2), version)
    builders.build_half_plus_three_tf1(str(root / H3), 123)
    builders.build_contract_breakers_tf1(str(root / BAD), 1)
    return root


def _serve(testdata: Path, log_dir: Path, *flags: str) -> DataPlaneProcess:
    entries = " ".join(
        f'config {{ name: "{name}" base_path: "{testdata / name}" model_platform: "tensorflow"'
        " model_version_policy { all {} } }"
        for name in (TF1, TF2, H3, BAD)
    )
    config = log_dir / "models.config"
    config.write_text(f"model_config_list {{ {entries} }}")
    return start_dataplane(f"--model_config_file={config}", *flags, log_dir=log_dir)


@pytest.fixture(scope="module")
def plane(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    """Default flags, as `tensorflow_model_server --model_config_file=...` runs."""
    process = _serve(testdata, tmp_path_factory.mktemp("default"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def checking_plane(
    testdata: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DataPlaneProcess]:
    process = _serve(
        testdata, tmp_path_factory.mktemp("checking"), "--enable_signature_method_name_check"
    )
    yield process
    process.stop()


def stub(process: DataPlaneProcess) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(process.grpc_target)
    )


def example(**features: float) -> example_pb2.Example:
    return example_pb2.Example(
        features=feature_pb2.Features(
            feature={
                k: feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[v]))
                for k, v in features.items()
            }
        )
    )


def regression_request(model: str, signature: str, *xs: float) -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(example(x=x) for x in xs)
    return request


def classification_request(
    model: str, signature: str, *xs: float
) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(example(x=x) for x in xs)
    return request


def multi_request(model: str, *tasks: tuple[str, str]) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.extend([example(x=1.0), example(x=4.0)])
    return request


def post(process: DataPlaneProcess, path: str, body: Any) -> tuple[int, Any]:
    response = requests.post(f"{process.rest_url}{path}", json=body, timeout=30)
    return response.status_code, response.json()


def rpc_error(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


# ------------------------------------------------------------------- feed what the graph takes


def test_half_plus_three_regress_over_rest_is_api_rest_mds_example(plane) -> None:
    body = {"signature_name": REGRESS, "examples": [{"x": 1.0}, {"x": 2.0}]}
    assert post(plane, f"/v1/models/{H3}:regress", body) == (200, {"results": [3.5, 4.0]})


def test_half_plus_three_regress_over_grpc(plane) -> None:
    response = stub(plane).Regress(regression_request(H3, REGRESS, 1.0, 2.0), timeout=30)
    assert [r.value for r in response.result.regressions] == [3.5, 4.0]
    assert (response.model_spec.name, response.model_spec.version.value) == (H3, 123)
    assert response.model_spec.signature_name == REGRESS


# ------------------------------------------------------- TF2 predict signatures, default flags


def test_tf2_regress_and_classify_run_with_default_flags(plane) -> None:
    prediction = stub(plane)
    regressed = prediction.Regress(regression_request(TF2, "regress_x_to_y2", 1.0, 4.0), timeout=30)
    assert [r.value for r in regressed.result.regressions] == [3.5, 5.0]
    classified = prediction.Classify(
        classification_request(TF2, "classify_x_to_y", 1.0, 4.0), timeout=30
    )
    rows = [[(c.label, c.score) for c in row.classes] for row in classified.result.classifications]
    assert rows == [[("", 2.5)], [("", 4.0)]]
    assert classified.model_spec.version.value == 124
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]}
    assert post(plane, f"/v1/models/{TF2}:regress", body) == (200, {"results": [2.5, 3.0]})
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert post(plane, f"/v1/models/{TF2}:classify", body) == (200, {"results": [[["", 3.0]]]})


def test_tf2_multi_inference_runs_with_default_flags(plane) -> None:
    request = multi_request(TF2, ("classify_x_to_y", CLASSIFY), ("regress_x_to_y2", REGRESS))
    response = stub(plane).MultiInference(request, timeout=30)
    scores = [
        c.score
        for row in response.results[0].classification_result.classifications
        for c in row.classes
    ]
    assert scores == [2.5, 4.0]
    assert [r.value for r in response.results[1].regression_result.regressions] == [3.5, 5.0]
    assert [r.model_spec.signature_name for r in response.results] == [
        "classify_x_to_y",
        "regress_x_to_y2",
    ]


def test_method_name_check_refuses_tf2_signatures_on_every_api(checking_plane, plane) -> None:
    prediction = stub(checking_plane)
    classify = classification_request(TF2, "classify_x_to_y", 1.0)
    regress = regression_request(TF2, "regress_x_to_y", 1.0)
    multi = multi_request(TF2, ("regress_x_to_y", REGRESS))
    expected_classify = (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Expected classification signature method_name to be {CLASSIFY}. Was: {PREDICT}",
    )
    expected_regress = (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Expected regression signature method_name to be {REGRESS}. Was: {PREDICT}",
    )
    assert rpc_error(lambda: prediction.Classify(classify, timeout=30)) == expected_classify
    assert rpc_error(lambda: prediction.Regress(regress, timeout=30)) == expected_regress
    assert rpc_error(lambda: prediction.MultiInference(multi, timeout=30)) == expected_regress
    custom = predict_pb2.PredictRequest()
    custom.model_spec.name = BAD
    custom.model_spec.signature_name = "custom_method"
    custom.inputs["inputs"].dtype = types_pb2.DT_STRING
    custom.inputs["inputs"].tensor_shape.dim.add(size=1)
    custom.inputs["inputs"].string_val.append(example(x=1.0).SerializeToString())
    assert rpc_error(lambda: prediction.Predict(custom, timeout=30)) == (
        grpc.StatusCode.INTERNAL,
        f"Expected prediction signature method_name to be one of {{{PREDICT}, {CLASSIFY}, "
        f"{REGRESS}}}. Was: example/custom",
    )
    ran = stub(plane).Predict(custom, timeout=30)  # the default plane does not check
    assert list(ran.outputs["outputs"].float_val) == [1.0]
    # TF1 signatures that say what they are still run.
    tf1 = prediction.Regress(regression_request(TF1, "regress_x_to_y", 1.0), timeout=30)
    assert [r.value for r in tf1.result.regressions] == [2.5]
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert post(checking_plane, f"/v1/models/{TF2}:classify", body) == (
        400,
        {"error": expected_classify[1]},
    )


# ------------------------------------------------------------------------- metadata as JSON


def info(name: str, dtype: str, dims: list[str] | None) -> dict[str, Any]:
    """A TensorInfo as TF Serving's REST metadata prints it (None: unknown rank)."""
    if dims is None:
        shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": d, "name": ""} for d in dims], "unknown_rank": False}
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def signature(
    inputs: dict[str, dict[str, Any]], outputs: dict[str, dict[str, Any]], method: str
) -> dict[str, Any]:
    return {"inputs": inputs, "outputs": outputs, "method_name": method, "defaults": {}}


def test_tf1_metadata_is_tf_servings_2_versions_json(plane) -> None:
    """saved_model_half_plus_two_2_versions_metadata.json, as upstream's REST test reads it."""
    column = ["-1", "1"]
    examples = info("tf_example:0", "DT_STRING", None)
    x2 = info("x2:0", "DT_FLOAT", column)
    expected = {
        "model_spec": {"name": TF1, "signature_name": "", "version": "123"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "regress_x2_to_y3": signature(
                        {"inputs": x2}, {"outputs": info("y3:0", "DT_FLOAT", column)}, REGRESS
                    ),
                    "serving_default": signature(
                        {"x": info("x:0", "DT_FLOAT", column)},
                        {"y": info("y:0", "DT_FLOAT", column)},
                        PREDICT,
                    ),
                    "classify_x_to_y": signature(
                        {"inputs": examples}, {"scores": info("y:0", "DT_FLOAT", column)}, CLASSIFY
                    ),
                    "classify_x2_to_y3": signature(
                        {"inputs": x2}, {"scores": info("y3:0", "DT_FLOAT", column)}, CLASSIFY
                    ),
                    "regress_x_to_y2": signature(
                        {"inputs": examples}, {"outputs": info("y2:0", "DT_FLOAT", column)}, REGRESS
                    ),
                    "regress_x_to_y": signature(
                        {"inputs": examples}, {"outputs": info("y:0", "DT_FLOAT", column)}, REGRESS
                    ),
                }
            }
        },
    }
    response = requests.get(f"{plane.rest_url}/v1/models/{TF1}/versions/123/metadata", timeout=30)
    assert (response.status_code, response.json()) == (200, expected)


def test_tf2_metadata_is_tf_servings_tf2_2_versions_json(plane) -> None:
    """saved_model_half_plus_two_tf2_2_versions_metadata.json. Two facts differ from that
    file on purpose: the model is served here as `half_plus_two_tf2`, and the init op's
    SignatureDef shows `"defaults": {}` like every other one (TF Serving prints empty maps,
    as the file's other entries show; the file omits it there only)."""
    column, one, batch = ["-1", "1"], ["1"], ["-1"]

    def strings(name: str) -> dict[str, Any]:
        return {"inputs": info(f"{name}_inputs:0", "DT_STRING", batch)}

    def floats(name: str) -> dict[str, Any]:
        return {"inputs": info(f"{name}_inputs:0", "DT_FLOAT", one)}

    def call(number: int, dims: list[str]) -> dict[str, Any]:
        suffix = f"_{number}" if number else ""
        return info(f"StatefulPartitionedCall{suffix}:0", "DT_FLOAT", dims)

    expected = {
        "model_spec": {"name": TF2, "signature_name": "", "version": "123"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "regress_x_to_y": signature(
                        strings("regress_x_to_y"), {"outputs": call(3, column)}, PREDICT
                    ),
                    "regress_x_to_y2": signature(
                        strings("regress_x_to_y2"), {"outputs": call(4, column)}, PREDICT
                    ),
                    "classify_x_to_y": signature(
                        strings("classify_x_to_y"), {"scores": call(1, column)}, PREDICT
                    ),
                    "serving_default": signature(
                        {"x": info("serving_default_x:0", "DT_FLOAT", one)},
                        {"y": call(5, one)},
                        PREDICT,
                    ),
                    "regress_x2_to_y3": signature(
                        floats("regress_x2_to_y3"), {"outputs": call(2, one)}, PREDICT
                    ),
                    "classify_x2_to_y3": signature(
                        floats("classify_x2_to_y3"), {"scores": call(0, one)}, PREDICT
                    ),
                    "__saved_model_init_op": signature(
                        {},
                        {"__saved_model_init_op": info("NoOp", "DT_INVALID", None)},
                        "",
                    ),
                }
            }
        },
    }
    response = requests.get(f"{plane.rest_url}/v1/models/{TF2}/versions/123/metadata", timeout=30)
    assert (response.status_code, response.json()) == (200, expected)


def test_grpc_metadata_lists_the_init_op_too(plane) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = TF2
    response = stub(plane).GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert "__saved_model_init_op" in signatures.signature_def
    assert response.model_spec.version.value == 124


# ------------------------------------------------------------------- error paths over gRPC


def _predict(**spec: Any) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    return request


def _bad_tensor() -> predict_pb2.PredictRequest:
    request = _predict(name=TF1)
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add(size=3)
    request.inputs["x"].float_val.extend([1.0, 2.0])
    return request


def _unknown_method() -> inference_pb2.MultiInferenceRequest:
    return multi_request(TF1, ("regress_x_to_y", REGRESS), ("serving_default", PREDICT))


def _two_models() -> inference_pb2.MultiInferenceRequest:
    request = multi_request(TF1, ("regress_x_to_y", REGRESS), ("regress_x_to_y2", REGRESS))
    request.tasks[1].model_spec.name = H3
    return request


def _empty_second_name() -> inference_pb2.MultiInferenceRequest:
    request = multi_request(TF1, ("regress_x_to_y", REGRESS), ("regress_x_to_y2", REGRESS))
    request.tasks[1].model_spec.name = ""
    return request


GRPC_ERRORS = [
    ("Predict", predict_pb2.PredictRequest(), "INVALID_ARGUMENT", "Missing ModelSpec"),
    ("Predict", _predict(name=""), "INVALID_ARGUMENT", "ModelSpec has no name specified."),
    (
        "Predict",
        _predict(name=TF1, version_label="nope"),
        "INVALID_ARGUMENT",
        "Unrecognized servable version label: nope",
    ),
    (
        "Predict",
        _predict(name=TF1, signature_name="nope"),
        "FAILED_PRECONDITION",
        'Serving signature key "nope" not found.',
    ),
    (
        "Classify",
        classification_request(TF1, "nope", 1.0),
        "INVALID_ARGUMENT",
        "No signature was found with the name: nope",
    ),
    (
        "Regress",
        regression_request(TF1, "nope", 1.0),
        "INVALID_ARGUMENT",
        "No signature was found with the name: nope",
    ),
    (
        "Regress",
        regression_request(TF1, "classify_x_to_y", 1.0),
        "INVALID_ARGUMENT",
        'No regression outputs found in SignatureDef: inputs {\n  key: "inputs"\n  value {\n'
        '    name: "tf_example:0"\n    dtype: DT_STRING\n    tensor_shape {\n'
        '      unknown_rank: true\n    }\n  }\n}\noutputs {\n  key: "scores"\n  value {\n'
        '    name: "y:0"\n    dtype: DT_FLOAT\n    tensor_shape {\n      dim {\n'
        "        size: -1\n      }\n      dim {\n        size: 1\n      }\n    }\n  }\n}\n"
        f'method_name: "{CLASSIFY}"\n',
    ),
    (
        "Classify",
        classification_request(TF1, "regress_x2_to_y3", 1.0),
        "INVALID_ARGUMENT",
        'Expected classification signature outputs to contain at least one of "classes" or '
        '"scores". Signature was: inputs {',
    ),
    (
        "Classify",
        classification_request(TF1, "classify_x_to_y"),
        "INVALID_ARGUMENT",
        "Input is empty.",
    ),
    (
        "MultiInference",
        _unknown_method(),
        "UNIMPLEMENTED",
        f"Unsupported signature method_name: {PREDICT}",
    ),
    (
        "MultiInference",
        multi_request(TF1, ("nope", REGRESS)),
        "INVALID_ARGUMENT",
        "Requested signature not found in model graph: nope",
    ),
    (
        "MultiInference",
        _two_models(),
        "INVALID_ARGUMENT",
        "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
    ),
    (
        "MultiInference",
        _empty_second_name(),
        "INVALID_ARGUMENT",
        "Found ModelSpec with an empty model name.",
    ),
    (
        "MultiInference",
        inference_pb2.MultiInferenceRequest(),
        "INVALID_ARGUMENT",
        "ModelSpec has no name specified.",
    ),
    (
        "GetModelMetadata",
        get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
        "INVALID_ARGUMENT",
        "Missing ModelSpec",
    ),
    (
        "GetModelMetadata",
        get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": TF1}),
        "INVALID_ARGUMENT",
        "GetModelMetadataRequest must specify at least one metadata_field",
    ),
    (
        "Predict",
        _bad_tensor(),
        "INVALID_ARGUMENT",
        "tensor parsing error: x: tensor has 2 values but shape [3] needs 3",
    ),
    (
        "Regress",
        regression_request(TF2, "regress_x2_to_y3", 1.0),
        "INVALID_ARGUMENT",
        "Expects arg[inputs] to be float but string is provided",
    ),
    (
        "Regress",
        regression_request(TF1, "serving_default", 1.0),
        "INVALID_ARGUMENT",
        "No regression inputs found in SignatureDef: inputs {",
    ),
    *[
        (method, request, "INVALID_ARGUMENT", message)
        for method, request, message in [
            ("Regress", regression_request(BAD, "two_inputs", 1.0), "Expected one input Tensor."),
            (
                "Regress",
                regression_request(BAD, "three_outputs", 1.0),
                "Expected one output Tensor.",
            ),
            (
                "Classify",
                classification_request(BAD, "three_outputs", 1.0),
                "Expected one or two output Tensors, found 3",
            ),
            (
                "Classify",
                classification_request(BAD, "classes_vector", 1.0, 2.0),
                "Expected Tensor shape: [batch_size num_classes] but got [2]",
            ),
            (
                "Classify",
                classification_request(BAD, "int_scores", 1.0),
                "Expected scores Tensor of DT_FLOAT. Got: DT_INT64",
            ),
            (
                "Classify",
                classification_request(BAD, "uneven_classes", 1.0),
                "Tensors class and score should match in dim_size(1). Got 2 vs. 1",
            ),
            (
                "Classify",
                classification_request(BAD, "short_scores", 1.0, 2.0),
                "Expected scores output batch size of 2. Got: 1",
            ),
            (
                "Regress",
                regression_request(BAD, "wide_outputs", 1.0, 2.0),
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
                "got [2,2]",
            ),
            (
                "Regress",
                regression_request(BAD, "int_outputs", 1.0),
                "Expected output Tensor of DT_FLOAT.  Got: DT_INT64",
            ),
            (
                "Regress",
                regression_request(BAD, "short_outputs", 1.0, 2.0),
                "Input batch size did not match output batch size: 2 vs. 1",
            ),
        ]
    ],
]


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"),
    GRPC_ERRORS,
    ids=[f"{m}-{i}" for i, (m, *_rest) in enumerate(GRPC_ERRORS)],
)
def test_grpc_errors_are_tf_servings(plane, method, request_, code, message) -> None:
    got_code, details = rpc_error(lambda: getattr(stub(plane), method)(request_, timeout=30))
    assert got_code.name == code, details
    if message.endswith("SignatureDef: inputs {") or message.endswith("was: inputs {"):
        # the rest is the SignatureDef in text format
        assert details.startswith(message), details
    else:
        assert details == message


def test_model_service_errors_are_tf_servings(plane, testdata) -> None:
    models = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(plane.grpc_target))
    status = rpc_error(
        lambda: models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=30)
    )
    assert status == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    empty = model_management_pb2.ReloadConfigRequest()
    assert rpc_error(lambda: models.HandleReloadConfigRequest(empty, timeout=30)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
        "ModelConfigList is currently supported",
    )
    # A label on a version the specific policy does not serve: FAILED_PRECONDITION.
    labelled = model_management_pb2.ReloadConfigRequest()
    model = labelled.config.model_config_list.config.add(
        name=H3, base_path=str(testdata / H3), model_platform="tensorflow"
    )
    model.model_version_policy.specific.versions.append(123)
    model.version_labels["stable"] = 7
    assert rpc_error(lambda: models.HandleReloadConfigRequest(labelled, timeout=30)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"Request to assign label to version 7 of model {H3}, which is not currently "
        "available for inference",
    )


# ------------------------------------------------------------------- error paths over HTTP


HTTP_ERRORS = [
    (
        f"/v1/models/{TF1}/labels/nope:predict",
        {"instances": [1.0]},
        400,
        "Unrecognized servable version label: nope",
    ),
    (
        f"/v1/models/{TF1}:predict",
        {"signature_name": "nope", "instances": [1.0]},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    (
        f"/v1/models/{TF1}:predict",
        {"instances": 1.0},
        400,
        "Expecting 'instances' to be an list/array",
    ),
    (
        f"/v1/models/{TF1}:classify",
        {"signature_name": "nope", "examples": [{"x": 1.0}]},
        400,
        "No signature was found with the name: nope",
    ),
    (
        f"/v1/models/{TF1}:regress",
        {"signature_name": "nope", "examples": [{"x": 1.0}]},
        400,
        "No signature was found with the name: nope",
    ),
    (
        f"/v1/models/{TF1}/versions/7:regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]},
        404,
        f"Servable not found for request: Specific({TF1}, 7)",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), HTTP_ERRORS)
def test_http_errors_are_tf_servings(plane, path, body, status, message) -> None:
    assert post(plane, path, body) == (status, {"error": message})


# ------------------------------------------------------------------------ labels at startup


def test_labels_in_the_first_config_need_the_unavailable_models_flag(
    testdata: Path, tmp_path: Path, start_dataplane
) -> None:
    """TF Serving assigns labels before the first config's versions load, so it refuses them
    unless --allow_version_labels_for_unavailable_models is set."""
    config = tmp_path / "labelled.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "{H3}" base_path: "{testdata / H3}" '
        'model_platform: "tensorflow" version_labels { key: "stable" value: 123 } } }'
    )
    with pytest.raises(RuntimeError, match="exited with 255") as refused:
        start_dataplane(f"--model_config_file={config}")
    assert (
        "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version "
        f"123 of model {H3}, which is not currently available for inference"
    ) in str(refused.value)

    allowed = start_dataplane(
        f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models"
    )
    body = {"signature_name": REGRESS, "examples": [{"x": 3.0}]}
    assert post(allowed, f"/v1/models/{H3}/labels/stable:regress", body) == (
        200,
        {"results": [4.5]},
    )
