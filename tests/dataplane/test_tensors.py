"""Tensor codecs: proto round trips, and JSON behaviour taken from TF Serving's json_tensor_test."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from dataplane import tensors
from dataplane.errors import Code, ServingError
from dataplane.limits import RequestLimits
from dataplane.signatures import TensorSpec

NUMERIC = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
]


def _sample(dtype: type) -> np.ndarray:
    values = np.arange(-3, 9).reshape(2, 3, 2)
    if dtype is np.bool_:
        return values % 2 == 0
    if np.issubdtype(dtype, np.unsignedinteger):
        values = values + 3
    array = values.astype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        array = array + 0.5j * array
    elif np.issubdtype(dtype, np.floating):
        array = array / 4
    return array


def _spec(dtype: int, alias: str = "x") -> TensorSpec:
    return TensorSpec(alias=alias, tensor_name=f"{alias}:0", dtype=dtype, shape=None)


def _error(call, *args) -> ServingError:
    with pytest.raises(ServingError) as info:
        call(*args)
    return info.value


# --- TensorProto <-> numpy -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("as_tensor_content", [False, True])
def test_proto_round_trip_matches_tensorflow(dtype: type, as_tensor_content: bool) -> None:
    array = _sample(dtype)
    proto = tensor_pb2.TensorProto()
    tensors.fill_tensor_proto(proto, array, as_tensor_content=as_tensor_content)
    assert bool(proto.tensor_content) == as_tensor_content
    assert [d.size for d in proto.tensor_shape.dim] == [2, 3, 2]
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)  # TensorFlow reads ours
    decoded = tensors.to_ndarray(proto)
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)
    np.testing.assert_array_equal(tensors.to_ndarray(tf.make_tensor_proto(array)), array)


def test_typed_fields_are_tf_servings_default_fields() -> None:
    proto = tensor_pb2.TensorProto()
    tensors.fill_tensor_proto(proto, np.array([2.5, 3.0], np.float32), as_tensor_content=False)
    assert proto.dtype == types_pb2.DT_FLOAT
    assert list(proto.float_val) == [2.5, 3.0]
    half = tensor_pb2.TensorProto()
    tensors.fill_tensor_proto(half, np.array([1.0], np.float16), as_tensor_content=False)
    assert list(half.half_val) == [0x3C00]


def test_strings_always_use_string_val() -> None:
    array = np.array([[b"a", b"\xff\x00"], [b"", b"long" * 10]], dtype=object)
    proto = tensor_pb2.TensorProto()
    tensors.fill_tensor_proto(proto, array, as_tensor_content=True)
    assert proto.dtype == types_pb2.DT_STRING
    assert not proto.tensor_content
    assert list(proto.string_val) == [b"a", b"\xff\x00", b"", b"long" * 10]
    decoded = tensors.to_ndarray(proto)
    assert decoded.dtype == object
    assert decoded.tolist() == array.tolist()


def test_scalar_value_broadcasts_over_shape() -> None:
    proto = tf.make_tensor_proto(7.5, dtype=tf.float32, shape=[2, 3])
    assert list(proto.float_val) == [7.5]
    np.testing.assert_array_equal(tensors.to_ndarray(proto), np.full((2, 3), 7.5, np.float32))
    strings = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"s"])
    strings.tensor_shape.dim.add(size=3)
    assert tensors.to_ndarray(strings).tolist() == [b"s", b"s", b"s"]


def test_zero_dim_and_scalar_tensors() -> None:
    empty = tensors.to_ndarray(tf.make_tensor_proto(np.zeros((0, 4), np.float32)))
    assert empty.shape == (0, 4)
    scalar = tensors.to_ndarray(tf.make_tensor_proto(np.int64(5)))
    assert scalar.shape == ()
    assert scalar == 5


def test_tensor_content_is_zero_copy_view() -> None:
    array = np.arange(32 * 64 * 64 * 3, dtype=np.float32).reshape(32, 64, 64, 3)
    proto = tensor_pb2.TensorProto()
    tensors.fill_tensor_proto(proto, array, as_tensor_content=True)
    decoded = tensors.to_ndarray(proto)
    assert decoded.shape == (32, 64, 64, 3)
    assert not decoded.flags.owndata
    np.testing.assert_array_equal(decoded, array)


def content_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto()
    tensors.fill_tensor_proto(proto, array, as_tensor_content=True)
    return proto


def test_tensors_of_several_requests_concatenate_along_dimension_0() -> None:
    parts = [np.arange(6, dtype=np.int32).reshape(2, 3) + 10 * i for i in range(3)]
    merged = tensors.concatenated_ndarray([content_proto(p) for p in parts])
    np.testing.assert_array_equal(merged, np.concatenate(parts))
    assert merged.dtype == np.int32


@pytest.mark.parametrize("as_tensor_content", [False, True])
@pytest.mark.parametrize(
    ("first", "second"),
    [
        (np.array([[1.5, 2.5]], np.float32), np.array([[3.5, 4.5]], np.float32)),
        (np.array([[1, 2]], np.int64), np.array([[300, -4]], np.int64)),
        (np.array([b"a", b"bc"], object), np.array([b"def", b""], object)),
    ],
)
def test_replacing_values_gives_the_tensor_filled_from_the_new_array(
    first: np.ndarray, second: np.ndarray, as_tensor_content: bool
) -> None:
    reused = tensor_pb2.TensorProto()
    tensors.fill_tensor_proto(reused, first, as_tensor_content=as_tensor_content)
    tensors.replace_values(reused, second, as_tensor_content=as_tensor_content)
    fresh = tensor_pb2.TensorProto()
    tensors.fill_tensor_proto(fresh, second, as_tensor_content=as_tensor_content)
    assert reused == fresh


@pytest.mark.parametrize(
    ("protos", "message"),
    [
        (
            [
                content_proto(np.ones((2, 2), np.float32)),
                content_proto(np.ones((1, 2), np.float32)),
            ],
            "tensor_content of 2 tensors holds 24 bytes but shape [4,2] of float needs 32",
        ),
        (
            [tf.make_tensor_proto(np.float32(1))] * 2,
            "only tensor_content tensors of rank >= 1 concatenate",
        ),
    ],
)
def test_tensors_that_do_not_concatenate_are_invalid(protos, message: str) -> None:
    with pytest.raises(ServingError) as caught:
        tensors.concatenated_ndarray(protos)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        (
            tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1, 2]),
            "tensor has 2 values but shape [] needs 1",
        ),
        (
            tensor_pb2.TensorProto(dtype=types_pb2.DT_INVALID),
            "tensor dtype DT_INVALID is not supported",
        ),
        (
            tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE),
            "tensor dtype DT_RESOURCE is not supported",
        ),
        (
            tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0" * 6),
            "tensor_content holds 6 bytes but shape [] of float needs 4",
        ),
        (
            tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=b"abc"),
            "string tensors cannot use tensor_content",
        ),
    ],
)
def test_bad_protos_are_invalid_argument(proto: tensor_pb2.TensorProto, message: str) -> None:
    error = _error(tensors.to_ndarray, proto)
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == message


def test_wrong_count_against_shape() -> None:
    packed = tf.make_tensor_proto(np.arange(6, dtype=np.int32))
    packed.tensor_shape.dim[0].size = 4
    assert _error(tensors.to_ndarray, packed).message == (
        "tensor_content holds 24 bytes but shape [4] of int32 needs 16"
    )
    typed = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, int_val=[1, 2, 3])
    typed.tensor_shape.dim.add(size=4)
    assert _error(tensors.to_ndarray, typed).message == "tensor has 3 values but shape [4] needs 4"
    unknown = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1])
    unknown.tensor_shape.unknown_rank = True
    assert _error(tensors.to_ndarray, unknown).message == "tensor shape has unknown rank"


# --- JSON -> numpy (json_tensor_test.cc cases) -----------------------------------------------


def test_single_unnamed_tensor_rows() -> None:
    arrays = tensors.instances_to_arrays([[1, 2], [3, 4], [5, 6]], {"default": _spec(3)})
    assert arrays["default"].dtype == np.int32
    assert arrays["default"].tolist() == [[1, 2], [3, 4], [5, 6]]


def test_mixed_ints_and_decimals_for_float_and_double() -> None:
    floats = tensors.instances_to_arrays(
        [1, 2.0, 3, 4, 5.003, 0.007, 0.0], {"x": _spec(types_pb2.DT_FLOAT)}
    )["x"]
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats, np.float32([1, 2, 3, 4, 5.003, 0.007, 0]))
    doubles = tensors.instances_to_arrays([1.0, 2, 0.662, 0], {"x": _spec(types_pb2.DT_DOUBLE)})
    assert doubles["x"].tolist() == [1.0, 2.0, 0.662, 0.0]


def test_base64_scalars_and_lists() -> None:
    spec = {"default": _spec(types_pb2.DT_STRING)}
    scalars = tensors.instances_to_arrays([{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], spec)
    assert scalars["default"].tolist() == [b"hello", b"world"]
    lists = tensors.instances_to_arrays([[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]], spec)
    assert lists["default"].shape == (2, 1)
    named = tensors.instances_to_arrays(
        [{"default": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}], spec
    )
    assert named["default"].shape == (1, 2, 1)
    assert named["default"].ravel().tolist() == [b"hello", b"world"]


def test_multiple_named_tensors_rows() -> None:
    specs = {
        "int_tensor": _spec(types_pb2.DT_INT32, "int_tensor"),
        "str_tensor": _spec(types_pb2.DT_STRING, "str_tensor"),
        "float_tensor": _spec(types_pb2.DT_FLOAT, "float_tensor"),
        "dbl_tensor": _spec(types_pb2.DT_DOUBLE, "dbl_tensor"),
    }
    rows = [
        {
            "int_tensor": [[1, 2], [3, 4], [5, 6]],
            "str_tensor": ["foo", "bar"],
            "float_tensor": [1.0, float("nan")],
            "dbl_tensor": [float("nan")],
        },
        {
            "int_tensor": [[7, 8], [9, 0], [1, 2]],
            "str_tensor": ["baz", "bat"],
            "float_tensor": [2.0, float("inf")],
            "dbl_tensor": [2.0],
        },
    ]
    arrays = tensors.instances_to_arrays(rows, specs)
    assert arrays["int_tensor"].shape == (2, 3, 2)
    assert arrays["int_tensor"].ravel().tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert arrays["str_tensor"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]
    np.testing.assert_array_equal(arrays["float_tensor"], np.float32([[1, np.nan], [2, np.inf]]))
    np.testing.assert_array_equal(arrays["dbl_tensor"], [[np.nan], [2.0]])


def test_columnar_single_and_named() -> None:
    spec = {"int_tensor": _spec(types_pb2.DT_INT32, "int_tensor")}
    named = tensors.columnar_to_arrays({"int_tensor": [[[1, 2], [3, 4], [5, 6]]]}, spec)
    plain = tensors.columnar_to_arrays([[[1, 2], [3, 4], [5, 6]]], spec)
    for arrays in (named, plain):
        assert arrays["int_tensor"].shape == (1, 3, 2)
        assert arrays["int_tensor"].ravel().tolist() == [1, 2, 3, 4, 5, 6]
    specs = {
        "int_tensor": _spec(types_pb2.DT_INT32, "int_tensor"),
        "str_tensor": _spec(types_pb2.DT_STRING, "str_tensor"),
        "bin_tensor": _spec(types_pb2.DT_STRING, "bin_tensor"),
    }
    arrays = tensors.columnar_to_arrays(
        {"int_tensor": [[[1, 2]]], "str_tensor": ["foo", "bar"], "bin_tensor": {"b64": "aGVsbG8="}},
        specs,
    )
    assert arrays["str_tensor"].tolist() == [b"foo", b"bar"]
    assert arrays["bin_tensor"].shape == ()
    assert arrays["bin_tensor"][()] == b"hello"


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        (
            [[1, 2], [3, 4], [5, 6, 7]],
            "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting tensor size: 2 but got: 3",
        ),
        (
            [[1, 2], [3, 4], [[5, 6]]],
            "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting shape [2] but got: [1,2]",
        ),
        (
            [1, [1]],
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting shape [] but got: [1]",
        ),
        (
            [[1, 2], ["a", "b"]],
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "a" Type: String is not of expected type: int32',
        ),
        (
            [[1, 2], [3, 4.5]],
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 4.5 Type: Number is not of expected type: int32",
        ),
        (
            [[1, [2]]],
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Encountered list at unexpected level: 1 expected < 1",
        ),
        (
            [2**31],
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 2147483648 Type: Number is not of expected type: int32",
        ),
        ([], "No values in 'instances' array"),
        ({"a": 1}, "Expecting 'instances' to be an list/array"),
    ],
)
def test_single_unnamed_tensor_errors(instances: object, message: str) -> None:
    error = _error(tensors.instances_to_arrays, instances, {"default": _spec(types_pb2.DT_INT32)})
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == message


@pytest.mark.parametrize(
    ("dtype", "value", "target"),
    [
        (types_pb2.DT_FLOAT, 1.7976931348623157e308, "float"),
        (types_pb2.DT_FLOAT, 16777217, "float"),
        (types_pb2.DT_DOUBLE, 9007199254740993, "double"),
    ],
)
def test_lossy_decimals_are_rejected(dtype: int, value: object, target: str) -> None:
    error = _error(tensors.instances_to_arrays, [value], {"x": _spec(dtype)})
    assert error.message.endswith(
        f"Cannot convert JSON value: {orjson.dumps(value).decode()} to {target} "
        "without loss of precision."
    )
    assert tensors.instances_to_arrays([16777215], {"x": _spec(types_pb2.DT_FLOAT)})["x"][0] == (
        16777215
    )


def test_bool_and_unsigned_rules() -> None:
    assert tensors.instances_to_arrays([True, False], {"x": _spec(types_pb2.DT_BOOL)})[
        "x"
    ].tolist() == [True, False]
    assert "Type: Number is not of expected type: bool" in (
        _error(tensors.instances_to_arrays, [1, 0], {"x": _spec(types_pb2.DT_BOOL)}).message
    )
    assert "JSON Value: -1 Type: Number is not of expected type: uint32" in (
        _error(tensors.instances_to_arrays, [1, -1], {"x": _spec(types_pb2.DT_UINT32)}).message
    )
    assert "JSON Value: true Type: True is not of expected type: float" in (
        _error(tensors.instances_to_arrays, [True], {"x": _spec(types_pb2.DT_FLOAT)}).message
    )
    assert "JSON Value: null Type: Null is not of expected type: float" in (
        _error(tensors.columnar_to_arrays, [1.0, None], {"x": _spec(types_pb2.DT_FLOAT)}).message
    )


def test_unsupported_json_dtype_is_unimplemented() -> None:
    error = _error(tensors.columnar_to_arrays, [1.0], {"x": _spec(types_pb2.DT_COMPLEX64)})
    assert error.code == Code.UNIMPLEMENTED
    assert error.message == "Conversion of JSON Value: 1.0 to type: complex64"


def test_multiple_named_tensor_errors() -> None:
    specs = {
        "int_tensor": _spec(types_pb2.DT_INT32, "int_tensor"),
        "str_tensor": _spec(types_pb2.DT_STRING, "str_tensor"),
    }
    shape = _error(
        tensors.instances_to_arrays,
        [
            {"int_tensor": [[1, 2], [3, 4], [5, 6]], "str_tensor": ["foo", "bar"]},
            {"int_tensor": [[[7, 8], [9, 0], [1, 2]]], "str_tensor": ["baz", "bat"]},
        ],
        specs,
    )
    assert shape.message == (
        "Failed to process element: 1 key: int_tensor of 'instances' list. Error: "
        "INVALID_ARGUMENT: Expecting shape [3,2] but got: [1,3,2]"
    )
    mixed = _error(
        tensors.instances_to_arrays,
        [{"int_tensor": [1], "str_tensor": ["a"]}, [1, 20, 30]],
        specs,
    )
    assert mixed.message == "Expecting object but got list at item 1 of input list"
    plain = _error(
        tensors.instances_to_arrays,
        [["baz", "bar"], {"str_tensor": ["baz"]}],
        {"s": specs["str_tensor"]},
    )
    assert plain.message == "Expecting value/list but got object at item 1 of input list"
    unknown = _error(tensors.instances_to_arrays, [{"int_tensor": [1], "foo": ["a"]}], specs)
    assert unknown.message == (
        "Failed to process element: 0 key: foo of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: foo"
    )
    missing = _error(tensors.instances_to_arrays, [{"int_tensor": [1]}], specs)
    assert missing.message == (
        "Failed to process element: 0 of 'instances' list. JSON object: "
        '{"int_tensor":[1]} keys must be equal to: int_tensor,str_tensor'
    )
    columnar = _error(tensors.columnar_to_arrays, {"int_tensor": [1]}, specs)
    assert columnar.message == "Missing named input: str_tensor in 'inputs' object."
    plain_columnar = _error(tensors.columnar_to_arrays, [1], specs)
    assert plain_columnar.message.startswith(
        "inputs is a plain value/list, but expecting an object"
    )
    plain_rows = _error(tensors.instances_to_arrays, [1], specs)
    assert plain_rows.message.startswith("instances is a plain list, but expecting list of objects")


def test_bad_base64() -> None:
    spec = {"s": _spec(types_pb2.DT_STRING)}
    assert _error(tensors.columnar_to_arrays, {"b64": "%%%"}, spec).message == (
        "Unable to base64 decode"
    )
    assert _error(tensors.columnar_to_arrays, [{"b64": 1}], spec).message == (
        'JSON Value: {"b64":1} not formatted correctly for base64 data'
    )


def test_big_json_image_batch() -> None:
    image = np.random.default_rng(0).random((8, 64, 64, 3)).astype(np.float32)
    rows = orjson.loads(orjson.dumps(image, option=orjson.OPT_SERIALIZE_NUMPY))
    arrays = tensors.instances_to_arrays(rows, {"x": _spec(types_pb2.DT_FLOAT)})
    np.testing.assert_array_equal(arrays["x"], image)


# --- numpy -> JSON ---------------------------------------------------------------------------


def test_predictions_and_outputs_single_tensor() -> None:
    ints = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)
    assert orjson.loads(tensors.predictions_json({"int_tensor": ints})) == {
        "predictions": ints.tolist()
    }
    assert orjson.loads(tensors.outputs_json({"int_tensor": ints})) == {"outputs": ints.tolist()}
    assert tensors.predictions_json({"y": np.float32([2.5, 3.0])}) == b'{"predictions":[2.5,3.0]}'


def test_bytes_suffix_outputs_base64() -> None:
    strings = np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object)
    assert orjson.loads(tensors.predictions_json({"str_tensor_bytes": strings})) == {
        "predictions": [
            [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
            [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
        ]
    }
    text = tensors.outputs_json({"s": np.array([b"caf\xc3\xa9", b"\xff"], dtype=object)})
    assert orjson.loads(text) == {"outputs": ["café", {"b64": base64.b64encode(b"\xff").decode()}]}


def test_six_digit_precision_floats() -> None:
    floats = np.float32([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]])
    values = orjson.loads(tensors.predictions_json({"float_tensor": floats}))["predictions"]
    assert values == [[9e6, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, b"0.1"),
        (0.2, b"0.2"),
        (1.2345679, b"1.23456788"),  # %.6g does not round-trip: TF Serving prints %.9g
        (3.0, b"3.0"),
        (-2.5, b"-2.5"),
        (1e-20, b"1e-20"),
        (3.4028235e38, b"3.40282347e+38"),
        (0.0, b"0.0"),
    ],
)
def test_float32_values_are_tf_servings_decimals(value: float, text: bytes) -> None:
    assert tensors.outputs_json({"y": np.float32([value])}) == b'{"outputs":[' + text + b"]}"
    many = np.full(100, value, dtype=np.float32)  # the vectorised path
    assert tensors.outputs_json({"y": many}) == b'{"outputs":[' + b",".join([text] * 100) + b"]}"


@pytest.mark.parametrize(("value", "text"), [(1e7, b"10000000.0"), (2.0**30, b"1073741820.0")])
def test_a_scalar_float32_output_outside_the_fast_decades_is_written(
    value: float, text: bytes
) -> None:
    """Found by tests/fuzz: a rank-0 output of 1e7 was a TypeError (a 500) on the slow path."""
    assert (
        tensors.outputs_json({"y": np.float32(value).reshape(())}) == b'{"outputs":' + text + b"}"
    )
    assert tensors.outputs_json({"y": np.float32([[value]])}) == b'{"outputs":[[' + text + b"]]}"


def test_vectorised_float_formatting_matches_scalar_reference() -> None:
    rng = np.random.default_rng(7)
    exponents = rng.integers(-40, 38, 20000).astype(np.float32)
    values = rng.standard_normal(20000).astype(np.float32) * np.float32(10.0) ** exponents
    values = np.concatenate([values[np.isfinite(values)], np.float32([1e6, 1e-13, 999999.5, 0])])
    reference = [tensors._tf_float32_scalar(v) for v in values.astype(np.float64).tolist()]
    assert tensors._tf_float32(values).tolist() == reference


def test_non_finite_floats_are_written_raw() -> None:
    floats = np.float32([[np.nan, np.inf], [3, -np.inf]])
    assert tensors.predictions_json({"float_tensor": floats}) == (
        b'{"predictions":[[NaN,Infinity],[3.0,-Infinity]]}'
    )
    assert tensors.outputs_json({"d": np.float64([np.nan, 0.25])}) == b'{"outputs":[NaN,0.25]}'


def test_multiple_named_outputs() -> None:
    outputs = {
        "double_scalar_tensor": np.float64([8.0, 9.0]),
        "float_tensor": np.float32([[1.0], [2.0]]),
        "int_tensor": np.arange(12, dtype=np.int32).reshape(2, 3, 2),
        "str_tensor": np.array([[b"foo", b"bar"], [b"baz", b"bat"]], dtype=object),
        "str_tensor_bytes": np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object),
    }
    rows = orjson.loads(tensors.predictions_json(outputs))["predictions"]
    assert rows[1] == {
        "double_scalar_tensor": 9.0,
        "float_tensor": [2.0],
        "int_tensor": [[6, 7], [8, 9], [10, 11]],
        "str_tensor": ["baz", "bat"],
        "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
    }
    columns = orjson.loads(tensors.outputs_json(outputs))["outputs"]
    assert columns["float_tensor"] == [[1.0], [2.0]]
    assert columns["str_tensor"] == [["foo", "bar"], ["baz", "bat"]]


def test_output_scalars_bools_and_half() -> None:
    assert tensors.outputs_json({"s": np.array(2.5, np.float32)}) == b'{"outputs":2.5}'
    assert tensors.outputs_json({"b": np.array([True, False])}) == b'{"outputs":[true,false]}'
    assert tensors.outputs_json({"h": np.float16([0.1])}) == b'{"outputs":[0.0999755859]}'
    assert tensors.outputs_json({"u": np.uint64([2**64 - 1])}) == (
        b'{"outputs":[18446744073709551615]}'
    )


def test_output_errors() -> None:
    assert _error(tensors.predictions_json, {}).message == "Cannot convert empty tensor map to JSON"
    complex_error = _error(tensors.outputs_json, {"c": np.complex64([1, 2])})
    assert complex_error.message == "Failed to write JSON value for tensor type: complex64"
    assert _error(tensors.predictions_json, {"t": np.array(1, np.int32)}).message == (
        "Tensor name: t has no shape information "
    )
    inconsistent = {"a": np.zeros((2, 3), np.int32), "b": np.zeros((1, 3), np.int32)}
    assert _error(tensors.predictions_json, inconsistent).message == (
        "Tensor name: b has inconsistent batch size: 1 expecting: 2"
    )
    assert _error(tensors.predictions_json, {"e": np.zeros((0, 2))}).message == (
        "Tensor name: e has invalid batch size: 0"
    )


# --- request bounds (dataplane.limits) -------------------------------------------------------


def test_declared_elements_come_from_the_shape_alone() -> None:
    broadcast = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    broadcast.tensor_shape.dim.add(size=268435456)
    assert tensors.declared_elements(broadcast) == 268435456
    scalar = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    assert tensors.declared_elements(scalar) == 1


def test_a_rank_beyond_tensorflows_is_refused_before_counting() -> None:
    deep = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    for _ in range(255):
        deep.tensor_shape.dim.add(size=2)
    for call in (tensors.declared_elements, tensors.to_ndarray):
        error = _error(call, deep)
        assert error.code == Code.INVALID_ARGUMENT
        assert error.message == "tensor shape has 255 dimensions, more than the limit of 254"


LIMIT_4 = RequestLimits(max_request_elements=4)
REFUSED_6 = (
    "Request tensors have 6 elements in total, more than the limit of 4 (--max_request_elements)"
)


@pytest.mark.parametrize(
    ("convert", "value", "specs"),
    [
        (tensors.instances_to_arrays, [[1, 2], [3, 4], [5, 6]], {"x": _spec(types_pb2.DT_FLOAT)}),
        (tensors.columnar_to_arrays, [[1, 2, 3], [4, 5, 6]], {"x": _spec(types_pb2.DT_FLOAT)}),
        (
            tensors.instances_to_arrays,
            [{"a": [1, 2], "b": 1}, {"a": [3, 4], "b": 2}],
            {"a": _spec(types_pb2.DT_INT32, "a"), "b": _spec(types_pb2.DT_INT32, "b")},
        ),
        (
            tensors.columnar_to_arrays,
            {"a": [1, 2, 3, 4], "b": [[1, 2]], "ignored": [1] * 100},
            {"a": _spec(types_pb2.DT_INT32, "a"), "b": _spec(types_pb2.DT_INT32, "b")},
        ),
        (
            tensors.instances_to_arrays,
            [[{"b64": "YQ=="}] * 3] * 2,
            {"x": _spec(types_pb2.DT_STRING)},
        ),
    ],
    ids=["rows", "columns", "named-rows", "named-columns", "b64"],
)
def test_json_tensors_past_the_bound_are_refused_in_every_format(convert, value, specs) -> None:
    error = _error(convert, value, specs, LIMIT_4)
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, REFUSED_6)


def test_json_tensors_at_the_bound_are_converted() -> None:
    arrays = tensors.instances_to_arrays(
        [[1, 2], [3, 4]], {"x": _spec(types_pb2.DT_FLOAT)}, LIMIT_4
    )
    assert arrays["x"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_typed_fields_larger_than_one_fill_step_keep_every_value() -> None:
    array = np.arange(tensors._EXTEND_CHUNK * 2 + 3, dtype=np.int32)
    proto = tensor_pb2.TensorProto()
    tensors.fill_tensor_proto(proto, array, as_tensor_content=False)
    np.testing.assert_array_equal(tensors.to_ndarray(proto), array)


@pytest.mark.parametrize("convert", [tensors.instances_to_arrays, tensors.columnar_to_arrays])
def test_a_signature_without_inputs_cannot_take_json(convert) -> None:
    error = _error(convert, [1.0], {})
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        "Failed to get input map for signature",
    )


def test_a_ragged_columnar_value_is_a_list_of_unexpected_size() -> None:
    error = _error(
        tensors.columnar_to_arrays, [[1, 2], [3, 4, 5]], {"default": _spec(types_pb2.DT_INT32)}
    )
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        "Encountered list at unexpected size: 3 at level: 1 expected size: 2",
    )
