"""Tensor codecs for the request path: TensorProto <-> numpy and JSON <-> numpy.

`tf.make_tensor_proto`/`tf.make_ndarray` spend tens of microseconds of Python per tensor and
build one Python object per element; here whole arrays cross in one call (`np.frombuffer` on
`tensor_content`, `np.asarray` on a typed field, `extend(array.tolist())`, orjson's numpy
serializer), so a request allocates a handful of objects whatever its size.

The JSON side follows TensorFlow Serving's `json_tensor.cc` (the REST API of `api_rest.md`):
the same acceptance rules per dtype, the same error messages, and float32 outputs written with
the same decimal values TF Serving prints. JSON input goes through numpy first; only when numpy
cannot decide (strings, mixed or ragged values, out-of-range numbers) does a per-value walk that
mirrors TF Serving's run, which both converts exactly and names the first offending value.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from dataplane import errors
from dataplane.errors import Code, ServingError
from dataplane.limits import DEFAULT_LIMITS, RequestLimits
from dataplane.signatures import TensorSpec, dtype_name, numpy_dtype

# ---------------------------------------------------------------------------------------------
# TensorProto <-> numpy
# ---------------------------------------------------------------------------------------------

# DataType -> (typed field, numpy dtype the field's values arrive as). half/bfloat16 travel as
# their uint16 bit patterns in int32 `half_val`; complex numbers as interleaved (re, im) parts.
_TYPED_FIELDS: dict[int, tuple[str, np.dtype]] = {
    types_pb2.DT_FLOAT: ("float_val", np.dtype(np.float32)),
    types_pb2.DT_DOUBLE: ("double_val", np.dtype(np.float64)),
    types_pb2.DT_HALF: ("half_val", np.dtype(np.int32)),
    types_pb2.DT_BFLOAT16: ("half_val", np.dtype(np.int32)),
    types_pb2.DT_INT8: ("int_val", np.dtype(np.int32)),
    types_pb2.DT_INT16: ("int_val", np.dtype(np.int32)),
    types_pb2.DT_INT32: ("int_val", np.dtype(np.int32)),
    types_pb2.DT_UINT8: ("int_val", np.dtype(np.int32)),
    types_pb2.DT_UINT16: ("int_val", np.dtype(np.int32)),
    types_pb2.DT_INT64: ("int64_val", np.dtype(np.int64)),
    types_pb2.DT_UINT32: ("uint32_val", np.dtype(np.uint32)),
    types_pb2.DT_UINT64: ("uint64_val", np.dtype(np.uint64)),
    types_pb2.DT_BOOL: ("bool_val", np.dtype(np.bool_)),
    types_pb2.DT_COMPLEX64: ("scomplex_val", np.dtype(np.float32)),
    types_pb2.DT_COMPLEX128: ("dcomplex_val", np.dtype(np.float64)),
    types_pb2.DT_STRING: ("string_val", np.dtype(object)),
}
_HALF_BITS = (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16)
# Typed fields are filled this many values at a time: `tolist()` makes a Python object per
# value (~32 bytes), so a whole 16M-element answer at once would hold 512 MB just in passing.
_EXTEND_CHUNK = 1 << 20
MAX_RANK = 254  # TensorShape's kMaxDims: also keeps counting a declared shape cheap


def _supported_numpy_dtypes() -> dict[np.dtype, int]:
    """numpy dtype -> DataType for every dtype both this codec and `signatures` know."""
    found: dict[np.dtype, int] = {}
    for enum in _TYPED_FIELDS:
        try:
            found[numpy_dtype(enum)] = enum
        except KeyError:
            continue
    return found


_DTYPE_ENUMS = _supported_numpy_dtypes()
_ENUM_DTYPES = {enum: dtype for dtype, enum in _DTYPE_ENUMS.items()}


def _proto_dtype(enum: int) -> np.dtype:
    dtype = _ENUM_DTYPES.get(enum)
    if dtype is None:
        name = types_pb2.DataType.Name(enum) if enum in types_pb2.DataType.values() else enum
        raise errors.invalid_argument(f"tensor dtype {name} is not supported")
    return dtype


def _proto_shape(shape: tensor_shape_pb2.TensorShapeProto) -> tuple[int, ...]:
    if shape.unknown_rank:
        raise errors.invalid_argument("tensor shape has unknown rank")
    if len(shape.dim) > MAX_RANK:
        raise errors.invalid_argument(
            f"tensor shape has {len(shape.dim)} dimensions, more than the limit of {MAX_RANK}"
        )
    dims = tuple(d.size for d in shape.dim)
    if any(d < 0 for d in dims):
        raise errors.invalid_argument(f"tensor shape {_shape_text(dims)} has a negative dimension")
    return dims


def declared_elements(proto: tensor_pb2.TensorProto) -> int:
    """How many values a tensor's shape asks for, read from the shape alone (nothing is
    allocated): what `RequestLimits.check_request` counts."""
    return math.prod(_proto_shape(proto.tensor_shape))


def _typed_values(proto: tensor_pb2.TensorProto, dtype: np.dtype) -> np.ndarray:
    """The typed field as a flat array of `dtype` (upb fields convert in C via np.asarray)."""
    field, wire = _TYPED_FIELDS[proto.dtype]
    values = getattr(proto, field)
    if wire.kind == "O":
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
        return flat
    array = np.asarray(values, dtype=wire)
    if dtype.kind == "c":
        if array.size % 2:
            raise errors.invalid_argument(f"{field} holds an odd number of parts")
        return array.view(dtype)
    if proto.dtype in _HALF_BITS:
        return array.astype(np.uint16).view(dtype)
    return array.astype(dtype, copy=False)


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode a request tensor without TensorFlow.

    `tensor_content` becomes a zero-copy, read-only view (np.frombuffer). Typed fields are
    converted in one call; a single value fills the whole shape (TensorFlow's broadcast of a
    scalar), any other count that differs from the shape's is an error (TensorFlow would pad
    with the last value or truncate silently, hiding client bugs).
    """
    dtype = _proto_dtype(proto.dtype)
    shape = _proto_shape(proto.tensor_shape)
    count = math.prod(shape)
    content = proto.tensor_content
    if content:
        if dtype.kind == "O":
            raise errors.invalid_argument("string tensors cannot use tensor_content")
        if len(content) != count * dtype.itemsize:
            raise errors.invalid_argument(
                f"tensor_content holds {len(content)} bytes but shape {_shape_text(shape)} of "
                f"{dtype_name(proto.dtype)} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    values = _typed_values(proto, dtype)
    if values.size == count:
        return values.reshape(shape)
    if values.size == 1:
        return np.full(shape, values[0], dtype=dtype)
    raise errors.invalid_argument(
        f"tensor has {values.size} values but shape {_shape_text(shape)} needs {count}"
    )


def concatenated_ndarray(protos: Sequence[tensor_pb2.TensorProto]) -> np.ndarray:
    """Several requests' tensors of one dtype and shape, all in `tensor_content`, decoded as
    one array concatenated along dimension 0: one join and one zero-copy view, where
    decoding each and concatenating later would cost a decode per request and a copy."""
    first = protos[0]
    dtype = _proto_dtype(first.dtype)
    shape = _proto_shape(first.tensor_shape)
    if dtype.kind == "O" or not shape:
        raise errors.invalid_argument("only tensor_content tensors of rank >= 1 concatenate")
    merged = (shape[0] * len(protos), *shape[1:])
    content = b"".join(proto.tensor_content for proto in protos)
    if len(content) != math.prod(merged) * dtype.itemsize:
        raise errors.invalid_argument(
            f"tensor_content of {len(protos)} tensors holds {len(content)} bytes but shape "
            f"{_shape_text(merged)} of {dtype_name(first.dtype)} needs "
            f"{math.prod(merged) * dtype.itemsize}"
        )
    return np.frombuffer(content, dtype=dtype).reshape(merged)


def _array_dtype_enum(array: np.ndarray) -> int:
    if array.dtype.kind in "OS":
        return types_pb2.DT_STRING
    enum = _DTYPE_ENUMS.get(array.dtype)
    if enum is None:
        raise errors.invalid_argument(f"numpy dtype {array.dtype} has no TensorFlow DataType")
    return enum


def _as_bytes(value: object) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[arg-type]


def fill_tensor_proto(
    proto: tensor_pb2.TensorProto, array: np.ndarray, *, as_tensor_content: bool
) -> None:
    """Fill a response tensor: typed fields (TF Serving's default) or packed `tensor_content`.

    `extend(array.tolist())` is ~4x faster than `extend(array)` with upb protobuf (one C-level
    list walk instead of numpy-scalar conversions). Strings always go to `string_val`.
    """
    enum = _array_dtype_enum(array)
    proto.dtype = enum
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add(size=size)
    _fill_values(proto, array, enum, as_tensor_content)


def replace_values(
    proto: tensor_pb2.TensorProto, array: np.ndarray, *, as_tensor_content: bool
) -> None:
    """Put `array`'s values into a tensor `fill_tensor_proto` filled from an array of the same
    dtype and shape: the coalesced path reuses one response message for every request."""
    proto.ClearField("tensor_content")
    proto.ClearField(_TYPED_FIELDS[proto.dtype][0])
    _fill_values(proto, array, proto.dtype, as_tensor_content)


def _fill_values(
    proto: tensor_pb2.TensorProto, array: np.ndarray, enum: int, as_tensor_content: bool
) -> None:
    if enum == types_pb2.DT_STRING:
        proto.string_val.extend([_as_bytes(v) for v in array.ravel().tolist()])
        return
    if as_tensor_content:
        proto.tensor_content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        return
    field, wire = _TYPED_FIELDS[enum]
    flat = array.ravel()
    if flat.dtype.kind == "c":
        flat = flat.view(wire)
    elif enum in _HALF_BITS:
        flat = flat.view(np.uint16)
    values = getattr(proto, field)
    for start in range(0, flat.size, _EXTEND_CHUNK):
        values.extend(flat[start : start + _EXTEND_CHUNK].tolist())


# ---------------------------------------------------------------------------------------------
# JSON -> numpy (request side)
# ---------------------------------------------------------------------------------------------

_BASE64_KEY = "b64"
_BYTES_SUFFIX = "_bytes"


def _json_text(value: object) -> str:
    """A JSON value as TF Serving quotes it in messages (NaN/Infinity spelled out)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def _json_type(value: object) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return "Number"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), type(value).__name__)


def _shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _is_b64(value: object) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get(_BASE64_KEY)) is str


def _is_named_row(value: object) -> bool:
    return type(value) is dict and not _is_b64(value)


def _type_error(value: object, dtype_enum: int) -> ServingError:
    return errors.invalid_argument(
        f"JSON Value: {_json_text(value)} Type: {_json_type(value)} "
        f"is not of expected type: {dtype_name(dtype_enum)}"
    )


def _decode_b64(value: object) -> bytes:
    if not _is_b64(value):
        raise errors.invalid_argument(
            f"JSON Value: {_json_text(value)} not formatted correctly for base64 data"
        )
    try:
        return base64.b64decode(value[_BASE64_KEY], validate=True)  # type: ignore[index]
    except (binascii.Error, ValueError):
        raise errors.invalid_argument("Unable to base64 decode") from None


Leaf = Callable[[object], object]


def _string_leaf(dtype_enum: int) -> Leaf:
    def leaf(value: object) -> object:
        if type(value) is str:
            return value.encode()
        if type(value) is dict:
            return _decode_b64(value)
        raise _type_error(value, dtype_enum)

    return leaf


def _float_leaf(dtype_enum: int, dtype: np.dtype) -> Leaf:
    """TF Serving's IsLosslessDecimal: integers must fit the mantissa, decimals the range."""
    info = np.finfo(dtype)
    max_int = (1 << (info.nmant + 1)) - 1
    max_value = float(info.max)
    target = "float" if dtype_enum == types_pb2.DT_FLOAT else dtype_name(dtype_enum)

    def leaf(value: object) -> object:
        kind = type(value)
        if kind is int:
            lossy = abs(value) > max_int  # type: ignore[arg-type]
        elif kind is float:
            lossy = math.isfinite(value) and abs(value) > max_value  # type: ignore[arg-type]
        else:
            raise _type_error(value, dtype_enum)
        if lossy:
            raise errors.invalid_argument(
                f"Cannot convert JSON value: {_json_text(value)} to {target} "
                "without loss of precision."
            )
        return value

    return leaf


def _int_leaf(dtype_enum: int, dtype: np.dtype) -> Leaf:
    info = np.iinfo(dtype)
    low, high = int(info.min), int(info.max)

    def leaf(value: object) -> object:
        if type(value) is not int or not low <= value <= high:  # type: ignore[operator]
            raise _type_error(value, dtype_enum)
        return value

    return leaf


def _bool_leaf(dtype_enum: int) -> Leaf:
    def leaf(value: object) -> object:
        if type(value) is not bool:
            raise _type_error(value, dtype_enum)
        return value

    return leaf


def _unsupported_leaf(dtype_enum: int) -> Leaf:
    def leaf(value: object) -> object:
        raise ServingError(
            Code.UNIMPLEMENTED,
            f"Conversion of JSON Value: {_json_text(value)} to type: {dtype_name(dtype_enum)}",
        )

    return leaf


def _leaf_for(spec: TensorSpec) -> Leaf:
    """The per-value check-and-convert TF Serving's AddValueToTensor applies for a dtype."""
    if spec.is_string:
        return _string_leaf(spec.dtype)
    dtype = _ENUM_DTYPES.get(spec.dtype)
    if dtype is None or dtype.kind not in "fiub":
        return _unsupported_leaf(spec.dtype)
    if dtype.kind == "f":
        return _float_leaf(spec.dtype, dtype)
    if dtype.kind == "b":
        return _bool_leaf(spec.dtype)
    return _int_leaf(spec.dtype, dtype)


def _dense_shape(value: object) -> list[int]:
    """TF Serving's GetDenseTensorShape: the shape implied by following first elements."""
    shape = []
    while type(value) is list:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _collect(value: object, shape: list[int], level: int, leaf: Leaf, out: list) -> None:
    """TF Serving's FillTensorProto: check one dense JSON tensor and append its leaves."""
    if type(value) is not list:
        if level != len(shape):
            raise errors.invalid_argument(
                f"JSON Value: {_json_text(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {len(shape)}"
            )
        out.append(leaf(value))
        return
    if level >= len(shape):
        raise errors.invalid_argument(
            f"Encountered list at unexpected level: {level} expected < {len(shape)}"
        )
    if len(value) != shape[level]:
        raise errors.invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _collect(item, shape, level + 1, leaf, out)


def _leaves_array(leaves: list, shape: list[int], dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "O":
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(shape)
    return np.array(leaves, dtype=dtype).reshape(shape)


def _walk_value(value: object, spec: TensorSpec) -> np.ndarray:
    """Exact (slow) conversion of one columnar value, raising TF Serving's messages."""
    shape = _dense_shape(value)
    leaves: list = []
    _collect(value, shape, 0, _leaf_for(spec), leaves)
    return _leaves_array(leaves, shape, spec.np_dtype)


def _walk_rows(rows: list, spec: TensorSpec, key: str | None) -> np.ndarray:
    """Exact (slow) conversion of row-format values: every row must match row 0's shape."""
    leaf = _leaf_for(spec)
    leaves: list = []
    first: tuple[list[int], int] | None = None
    for index, row in enumerate(rows):
        if key is None and _is_named_row(row):
            raise errors.invalid_argument(
                f"Expecting value/list but got object at item {index} of input list"
            )
        shape, start = _dense_shape(row), len(leaves)
        try:
            _collect(row, shape, 0, leaf, leaves)
            first = first or (shape, len(leaves) - start)
            _check_row_like_first(shape, len(leaves) - start, first)
        except ServingError as error:
            where = f"{index}" if key is None else f"{index} key: {key}"
            raise ServingError(
                error.code,
                f"Failed to process element: {where} of 'instances' list. "
                f"Error: {error.code.name}: {error.message}",
            ) from None
    assert first is not None
    return _leaves_array(leaves, [len(rows), *first[0]], spec.np_dtype)


def _check_row_like_first(shape: list[int], size: int, first: tuple[list[int], int]) -> None:
    if size != first[1]:
        raise errors.invalid_argument(f"Expecting tensor size: {first[1]} but got: {size}")
    if shape != first[0]:
        raise errors.invalid_argument(
            f"Expecting shape {_shape_text(first[0])} but got: {_shape_text(shape)}"
        )


def _value_limits(dtype: np.dtype) -> dict[str, tuple[float, float]]:
    """Per inferred numpy kind, the value range that converts to `dtype` as TF Serving allows.

    Floats take integers that fit their mantissa (IsLosslessDecimal) and decimals within
    range; integers take integers within their range. NaN and infinities fail the check and
    take the exact path, which accepts them.
    """
    if dtype.kind == "f":
        info = np.finfo(dtype)
        max_int = (1 << (info.nmant + 1)) - 1
        return {"i": (-max_int, max_int), "u": (0, max_int), "f": (-info.max, info.max)}
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return {"i": (info.min, info.max), "u": (info.min, info.max)}
    return {"b": (False, True)}


# Which numpy-inferred kinds may take the fast path into a target kind (bools only to bools).
_FAST_SOURCES = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}
_LIMITS = {
    dtype: _value_limits(dtype) for dtype in _ENUM_DTYPES.values() if dtype.kind in _FAST_SOURCES
}


def _fast_numeric(value: object, dtype: np.dtype) -> np.ndarray | None:
    """numpy's conversion when it provably agrees with TF Serving's rules, else None.

    np.asarray infers int64/uint64/float64/bool for clean JSON and object/str/raises for
    anything mixed or ragged; only the clean cases are accepted here, with range checks done
    on the whole array at once.
    """
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError):
        return None
    kind = array.dtype.kind
    if array.size == 0 and kind in "fiub":
        return np.empty(array.shape, dtype=dtype)
    if kind not in _FAST_SOURCES.get(dtype.kind, ""):
        return None
    low, high = _LIMITS[dtype][kind]
    return array.astype(dtype, copy=False) if low <= array.min() and array.max() <= high else None


def _can_go_fast(spec: TensorSpec) -> bool:
    dtype = _ENUM_DTYPES.get(spec.dtype)
    return dtype is not None and dtype.kind in "fiub"


def _value_to_array(value: object, spec: TensorSpec) -> np.ndarray:
    if _can_go_fast(spec):
        array = _fast_numeric(value, spec.np_dtype)
        if array is not None:
            return array
    return _walk_value(value, spec)


def _rows_to_array(rows: list, spec: TensorSpec, key: str | None) -> np.ndarray:
    if _can_go_fast(spec):
        array = _fast_numeric(rows, spec.np_dtype)
        if array is not None:
            return array
    return _walk_rows(rows, spec, key)


def _require_inputs(specs: Mapping[str, TensorSpec]) -> None:
    if not specs:
        raise errors.invalid_argument("Failed to get input map for signature")


def _named_row_error(index: int, row: dict, inputs: Mapping[str, TensorSpec]) -> ServingError:
    unknown = next((name for name in row if name not in inputs), None)
    if unknown is not None:
        return errors.invalid_argument(
            f"Failed to process element: {index} key: {unknown} of 'instances' list. "
            f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {unknown}"
        )
    return errors.invalid_argument(
        f"Failed to process element: {index} of 'instances' list. JSON object: "
        f"{_json_text(row)} keys must be equal to: {','.join(sorted(inputs))}"
    )


def _named_rows(
    instances: list, inputs: Mapping[str, TensorSpec], limits: RequestLimits
) -> dict[str, np.ndarray]:
    names = inputs.keys()
    for index, row in enumerate(instances):
        if not _is_named_row(row):
            raise errors.invalid_argument(
                f"Expecting object but got list at item {index} of input list"
            )
        if row.keys() != names:
            raise _named_row_error(index, row, inputs)
    columns = {alias: [row[alias] for row in instances] for alias in inputs}
    _check_json_elements(columns.values(), limits)
    return {alias: _rows_to_array(columns[alias], spec, alias) for alias, spec in inputs.items()}


def _json_elements(value: object) -> int:
    """The values a JSON tensor declares by its first elements (as TF Serving reads its
    shape); a ragged one that declares fewer is refused when it is walked."""
    return math.prod(_dense_shape(value))


def _check_json_elements(values: Iterable[object], limits: RequestLimits) -> None:
    limits.check_request(sum(_json_elements(value) for value in values))


def instances_to_arrays(
    instances: object, inputs: Mapping[str, TensorSpec], limits: RequestLimits = DEFAULT_LIMITS
) -> dict[str, np.ndarray]:
    """Row format (`"instances"`): rows batched along a new dimension 0, per input alias.

    Rows are plain values/lists for a single input, or objects {alias: value} naming every
    input (the form multi-input signatures require). The values they declare are counted
    against `limits` before numpy allocates anything.
    """
    _require_inputs(inputs)
    if type(instances) is not list:
        raise errors.invalid_argument("Expecting 'instances' to be an list/array")
    if not instances:
        raise errors.invalid_argument("No values in 'instances' array")
    if _is_named_row(instances[0]):
        return _named_rows(instances, inputs, limits)
    if len(inputs) > 1:
        raise errors.invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    _check_json_elements([instances], limits)
    alias, spec = next(iter(inputs.items()))
    return {alias: _rows_to_array(instances, spec, None)}


def columnar_to_arrays(
    inputs: object, specs: Mapping[str, TensorSpec], limits: RequestLimits = DEFAULT_LIMITS
) -> dict[str, np.ndarray]:
    """Columnar format (`"inputs"`): one value for a single input, or {alias: value}.

    Like TF Serving, keys of the object that name no input are ignored. The values declared
    are counted against `limits` before numpy allocates anything.
    """
    _require_inputs(specs)
    if not _is_named_row(inputs):
        if len(specs) > 1:
            raise errors.invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        _check_json_elements([inputs], limits)
        alias, spec = next(iter(specs.items()))
        return {alias: _value_to_array(inputs, spec)}
    for alias in specs:
        if alias not in inputs:  # type: ignore[operator]
            raise errors.invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
    _check_json_elements((inputs[alias] for alias in specs), limits)  # type: ignore[index]
    return {
        alias: _value_to_array(inputs[alias], spec)  # type: ignore[index]
        for alias, spec in specs.items()
    }


# ---------------------------------------------------------------------------------------------
# numpy -> JSON (response side)
# ---------------------------------------------------------------------------------------------

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_NON_FINITE = {
    "nan": orjson.Fragment(b"NaN"),
    "inf": orjson.Fragment(b"Infinity"),
    "-inf": orjson.Fragment(b"-Infinity"),
}
# Decade lookup for _tf_float32: searchsorted(_DECADES, |x|, "right") is i for |x| in
# [1e(i-14), 1e(i-13)); _SCALE6[i] brings it to six integer digits. Decades 1..19 cover
# [1e-13, 1e6), where every scale (and scale * 1000 for nine digits) is an exact double;
# decades 0 and 20 (below/above) are handled one value at a time.
_DECADES = 10.0 ** np.arange(-13, 7)
_SCALE6 = 10.0 ** (19 - np.clip(np.arange(21), 1, 19))
_OUTSIDE_DECADE = len(_DECADES)


def _tf_float32_scalar(value: float) -> float:
    """The number TF Serving writes for one float32: `%.6g` if it round-trips, else `%.9g`.

    (json_tensor.cc WriteDecimal: absl::StrCat's six significant digits, falling back to
    max_digits10.) Returned as the double nearest that decimal, so orjson's shortest-repr
    output spells the same number.
    """
    six = float(f"{value:.6g}")
    return six if np.float32(six) == np.float32(value) else float(f"{value:.9g}")


def _tf_float32(array: np.ndarray) -> np.ndarray:
    """TF Serving's decimals for a finite float32 array, as float64 (see _tf_float32_scalar).

    Vectorised: each value is rounded to 6 (else 9) significant digits by an exact power-of-ten
    scale found by a decade lookup (no log10 rounding doubts). Magnitudes outside
    [1e-13, 1e6), rare in model outputs, go through the scalar version.
    """
    flat = array.reshape(-1)  # numpy turns 0-d results into scalars, which cannot be assigned
    values = flat.astype(np.float64)
    magnitude = np.abs(values)
    decade = np.searchsorted(_DECADES, magnitude, side="right")
    scale = _SCALE6.take(decade)
    result = np.rint(values * scale) / scale
    lossy = result.astype(np.float32) != flat
    if np.count_nonzero(lossy):  # count_nonzero: ~5x cheaper than .any() on small arrays
        scale *= 1000.0
        result = np.where(lossy, np.rint(values * scale) / scale, result)
    outside = (decade == 0) | (decade == _OUTSIDE_DECADE)
    if np.count_nonzero(outside):
        slow = outside & (magnitude != 0)
        result[slow] = [_tf_float32_scalar(v) for v in values[slow].tolist()]
    return result.reshape(array.shape)


def _with_non_finite(array: np.ndarray) -> object:
    """Nested lists with NaN/Infinity/-Infinity written raw, as TF Serving's writer does."""
    objects = array.astype(object)
    objects[np.isnan(array)] = _NON_FINITE["nan"]
    objects[array == np.inf] = _NON_FINITE["inf"]
    objects[array == -np.inf] = _NON_FINITE["-inf"]
    return objects.tolist()


def _float_value(array: np.ndarray) -> object:
    finite = np.isfinite(array)
    all_finite = np.count_nonzero(finite) == finite.size
    if array.dtype != np.float64:
        array = array.astype(np.float32, copy=False)
        converted = _tf_float32(np.where(finite, array, 0) if not all_finite else array)
        array = converted if all_finite else np.where(finite, converted, array)
    return array if all_finite else _with_non_finite(array)


def _text_or_b64(value: bytes) -> object:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {_BASE64_KEY: base64.b64encode(value).decode()}


def _b64(value: bytes) -> object:
    return {_BASE64_KEY: base64.b64encode(value).decode()}


def _string_value(alias: str, array: np.ndarray) -> object:
    encode = _b64 if alias.endswith(_BYTES_SUFFIX) else _text_or_b64
    flat = np.empty(array.size, dtype=object)
    flat[:] = [encode(_as_bytes(v)) for v in array.ravel().tolist()]
    return flat.reshape(array.shape).tolist()


def _json_value(alias: str, array: np.ndarray) -> Any:
    """Something orjson serializes as TF Serving would write the tensor (numpy stays numpy)."""
    kind = array.dtype.kind
    if kind in "OS":
        value = _string_value(alias, array)
    elif kind in "iub":
        value = array
    elif kind == "f" or array.dtype == _ENUM_DTYPES.get(types_pb2.DT_BFLOAT16):
        value = _float_value(array)
    else:
        name = dtype_name(_DTYPE_ENUMS[array.dtype]) if array.dtype in _DTYPE_ENUMS else kind
        raise errors.invalid_argument(f"Failed to write JSON value for tensor type: {name}")
    return value[()] if isinstance(value, np.ndarray) and value.ndim == 0 else value


def _require_outputs(outputs: Mapping[str, np.ndarray]) -> None:
    if not outputs:
        raise errors.invalid_argument("Cannot convert empty tensor map to JSON")


def _batch_size(outputs: Mapping[str, np.ndarray]) -> int:
    """Row format needs every output batched alike along dimension 0 (TF Serving's checks)."""
    batch = 0
    for alias, array in outputs.items():
        if array.ndim == 0:
            raise errors.invalid_argument(f"Tensor name: {alias} has no shape information ")
        size = array.shape[0]
        if size < 1:
            raise errors.invalid_argument(f"Tensor name: {alias} has invalid batch size: {size}")
        if batch and size != batch:
            raise errors.invalid_argument(
                f"Tensor name: {alias} has inconsistent batch size: {size} expecting: {batch}"
            )
        batch = size
    return batch


def predictions_json(outputs: Mapping[str, np.ndarray]) -> bytes:
    """Row-format response `{"predictions": [...]}`: one entry per batch row.

    A single output gives the rows themselves; several give one {alias: row-value} object
    per row.
    """
    _require_outputs(outputs)
    batch = _batch_size(outputs)
    values = {alias: _json_value(alias, array) for alias, array in outputs.items()}
    if len(values) == 1:
        predictions = next(iter(values.values()))
    else:
        predictions = [{alias: value[i] for alias, value in values.items()} for i in range(batch)]
    return orjson.dumps({"predictions": predictions}, option=_DUMPS_OPTIONS)


def outputs_json(outputs: Mapping[str, np.ndarray]) -> bytes:
    """Columnar response `{"outputs": ...}`: the single output's value, or {alias: value}."""
    _require_outputs(outputs)
    values = {alias: _json_value(alias, array) for alias, array in outputs.items()}
    body = next(iter(values.values())) if len(values) == 1 else values
    return orjson.dumps({"outputs": body}, option=_DUMPS_OPTIONS)
