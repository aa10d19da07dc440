"""Loading real SavedModels (TF1 graphs and TF2/Keras exports) into prepared callables."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from dataplane.errors import Code, ServingError
from dataplane.servable import SessionOptions, load_servable
from examples.builders import keras_expected


@pytest.fixture(scope="module")
def half_plus_two(saved_models):
    servable = load_servable(
        "half_plus_two", 123, f"{saved_models.half_plus_two}/123", SessionOptions()
    )
    yield servable
    servable.close()


def test_tf1_signatures_are_read_from_the_meta_graph(half_plus_two):
    default = half_plus_two.signature("serving_default")
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["x"].dtype == types_pb2.DT_FLOAT
    assert default.inputs["x"].shape == (None, 1)
    assert half_plus_two.signature("classify_x_to_y").inputs["inputs"].is_string
    assert set(half_plus_two.signature_defs) >= {"regress_x_to_y", "classify_x2_to_y3"}


def test_run_feeds_by_tensor_name_without_static_shape_checks(half_plus_two):
    default = half_plus_two.signature("serving_default")
    out = default.run({"x": np.array([1.0, 2.0, 5.0], np.float32)})
    assert out["y"].tolist() == [2.5, 3.0, 4.5]
    out = default.run({"x": np.array([[4.0]], np.float32)}, ["y"])
    assert out["y"].tolist() == [[4.0]]


def test_run_rejects_wrong_dtype_and_aliases(half_plus_two):
    default = half_plus_two.signature("serving_default")
    with pytest.raises(ServingError) as info:
        default.run({"x": np.array([1], np.int64)})
    assert info.value.code is Code.INVALID_ARGUMENT
    assert "Expects arg[x] to be float but int64 is provided" in info.value.message
    with pytest.raises(ServingError, match=r"Missing but required: \{x\}"):
        default.run({"z": np.array([1.0], np.float32)})
    with pytest.raises(ServingError, match="duplicate output tensor alias: y"):
        default.run({"x": np.array([1.0], np.float32)}, ["y", "y"])


def test_unknown_signature_is_failed_precondition(half_plus_two):
    with pytest.raises(ServingError) as info:
        half_plus_two.signature("nope")
    assert info.value.code is Code.FAILED_PRECONDITION
    assert info.value.message == 'Serving signature key "nope" not found.'


def test_keras_export_loads_through_the_session_path(saved_models):
    servable = load_servable("keras", 1, f"{saved_models.keras}/1", SessionOptions())
    try:
        features = np.array([[1.0, 2.0, 3.0]], np.float32)
        out = servable.signature("serving_default").run({"features": features})
        np.testing.assert_allclose(out["output_0"], keras_expected(features), rtol=1e-6)
    finally:
        servable.close()


def test_missing_and_corrupt_versions_fail_with_a_status(saved_models, tmp_path):
    with pytest.raises(ServingError) as info:
        load_servable("m", 1, str(tmp_path / "absent"), SessionOptions())
    assert info.value.code is Code.NOT_FOUND
    corrupt = tmp_path / "1"
    shutil.copytree(f"{saved_models.half_plus_two}/123", corrupt)
    (corrupt / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(ServingError) as info:
        load_servable("m", 1, str(corrupt), SessionOptions())
    assert info.value.code is not Code.OK
    assert info.value.message
    os.remove(corrupt / "saved_model.pb")
    with pytest.raises(ServingError, match="SavedModel"):
        load_servable("m", 1, str(corrupt), SessionOptions())


def load_error(path, options: SessionOptions | None = None) -> tuple[Code, str]:
    with pytest.raises(ServingError) as info:
        load_servable("m", 1, str(path), options or SessionOptions())
    return info.value.code, info.value.message


def test_what_is_missing_is_not_found_in_tensorflows_words(saved_models, tmp_path):
    """TF Serving's loader is TensorFlow's C++ one (cc/saved_model/reader.cc): NOT_FOUND."""
    assert load_error(tmp_path / "absent") == (
        Code.NOT_FOUND,
        f"SavedModel directory does not exist: {tmp_path / 'absent'}",
    )
    version = tmp_path / "1"
    shutil.copytree(f"{saved_models.half_plus_two}/123", version)
    assert load_error(version, SessionOptions(tags=("serve", "gpu"))) == (
        Code.NOT_FOUND,
        "Could not find meta graph def matching supplied tags: { gpu serve }. To inspect "
        "available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`",
    )
    os.remove(version / "saved_model.pb")
    assert load_error(version) == (
        Code.NOT_FOUND,
        f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {version}. "
        "Check that the directory exists and that you have the right permissions for accessing "
        "it.",
    )


def test_a_graph_the_python_loader_refuses_is_invalid_argument(tmp_path):
    """A graph whose node lacks its op's attributes: import_graph_def raises ValueError."""
    version = tmp_path / "1"
    version.mkdir()
    (version / "saved_model.pbtxt").write_text(
        'meta_graphs { meta_info_def { tags: "serve" } '
        'graph_def { node { name: "a" op: "Const" } } }'
    )
    assert load_error(version) == (
        Code.INVALID_ARGUMENT,
        f"Failed to load SavedModel at {version}: NodeDef missing attrs 'dtype', 'value' from "
        "Op<name=Const; signature= -> output:dtype; attr=value:tensor; attr=dtype:type>; "
        "NodeDef: {{node a}}",
    )
