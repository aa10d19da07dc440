"""What a SavedModel signature promises: tensor specs read once from its SignatureDef.

Kept apart from TensorFlow's own objects so the protocol codecs (`tensors.py`) and the
request validation in `inference.py` can work from plain numpy dtypes and shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import ml_dtypes
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

# DataType enum -> numpy dtype for every dtype a signature can carry over the wire.
# DT_STRING maps to object arrays holding `bytes`; DT_BFLOAT16 to ml_dtypes' bfloat16.
_NUMPY_DTYPES: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
    types_pb2.DT_COMPLEX64: np.dtype(np.complex64),
    types_pb2.DT_COMPLEX128: np.dtype(np.complex128),
    types_pb2.DT_BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    types_pb2.DT_STRING: np.dtype(object),
}


def numpy_dtype(dtype_enum: int) -> np.dtype:
    """The numpy dtype that carries a TensorFlow DataType (KeyError for unsupported ones)."""
    return _NUMPY_DTYPES[dtype_enum]


def datatype_of(dtype: np.dtype) -> str:
    """The DataType enum name (DT_FLOAT) for a numpy dtype, as TF Serving's messages print it."""
    for enum, candidate in _NUMPY_DTYPES.items():
        if candidate == dtype:
            return types_pb2.DataType.Name(enum)
    return f"DT_INVALID ({dtype})"


def dtype_name(dtype_enum: int) -> str:
    """TensorFlow's short name for a DataType, as its error messages print it ("float")."""
    return types_pb2.DataType.Name(dtype_enum).removeprefix("DT_").lower()


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a signature.

    `shape` is None for unknown rank; unknown dimensions are None.
    """

    alias: str
    tensor_name: str
    dtype: int  # tensorflow DataType enum value, e.g. types_pb2.DT_FLOAT
    shape: tuple[int | None, ...] | None

    @property
    def np_dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype)

    @property
    def is_string(self) -> bool:
        return self.dtype == types_pb2.DT_STRING


@dataclass(frozen=True, slots=True)
class SignatureSpec:
    """A signature's key, method name and its inputs/outputs by alias."""

    key: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]


def _tensor_spec(alias: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(d.size if d.size >= 0 else None for d in info.tensor_shape.dim)
    return TensorSpec(alias=alias, tensor_name=info.name, dtype=info.dtype, shape=shape)


def signature_spec(key: str, signature_def: meta_graph_pb2.SignatureDef) -> SignatureSpec:
    """Read one SignatureDef into a SignatureSpec (aliases sorted for a stable feed order)."""
    return SignatureSpec(
        key=key,
        method_name=signature_def.method_name,
        inputs={a: _tensor_spec(a, signature_def.inputs[a]) for a in sorted(signature_def.inputs)},
        outputs={
            a: _tensor_spec(a, signature_def.outputs[a]) for a in sorted(signature_def.outputs)
        },
    )
