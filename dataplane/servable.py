"""One loaded SavedModel version and its signatures as prepared callables.

TensorFlow Serving runs signatures through a session by tensor name, which works for TF1
exports (Estimator graphs with ParseExample) where `tf.saved_model.load` can fail, and for
TF2/Keras exports alike. We do the same: the MetaGraphDef is loaded into a private Graph and
Session, and each (signature, outputs) pair gets a `Session.make_callable` prepared once, so a
request pays only for the feed and the kernels.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, saved_model_pb2

from dataplane import errors
from dataplane.errors import Code, ServingError
from dataplane.options import ServerOptions
from dataplane.signatures import (
    SignatureSpec,
    TensorSpec,
    dtype_name,
    numpy_dtype,
    signature_spec,
)

log = logging.getLogger(__name__)

# Without it TensorFlow gives every session the intra-op pool the process's first session
# sized (local_device.cc's global pool), so no model could get threads of its own. Read once,
# when the first session is created.
os.environ.setdefault("TF_OVERRIDE_GLOBAL_THREADPOOL", "1")

_Callable = Callable[..., list[np.ndarray]]

# inter_op_parallelism_threads < 0: TensorFlow runs every op in the thread calling Run.
CALLER_THREAD = -1
# Unless asked otherwise, one thread per op: a server runs many calls at once (REST threads,
# batch threads), and Eigen's intra-op pool costs more in hand-offs and spinning than it saves
# on serving-sized calls. Measured over gRPC on 2 cores, 1 vs all cores: MLP 617 -> 1,011 req/s
# at 1 client (p50 1.33 -> 0.87 ms), 1,191 -> 1,878 at 32; CNN 726 -> 1,131 and 1,250 -> 2,185.
DEFAULT_INTRA_OP_THREADS = 1

# Weight of the newest call in Signature.typical_seconds (about the last 10 calls count).
_TIMING_WEIGHT = 0.1

# TF2 exports record their initializer as a pseudo-signature; it is not servable.
INIT_OP_SIGNATURE = "__saved_model_init_op"


@dataclass(frozen=True)
class SessionOptions:
    """How sessions are configured: tags to load and TensorFlow's threading/device knobs."""

    tags: tuple[str, ...] = ("serve",)
    intra_op_parallelism: int = DEFAULT_INTRA_OP_THREADS
    inter_op_parallelism: int = CALLER_THREAD
    per_process_gpu_memory_fraction: float = 0.0
    # No intra-op flag was given: a model whose warmup calls are long gets more threads
    # (warmup.PreparedLoader).
    fitted_intra_op: bool = False

    @classmethod
    def from_server_options(cls, options: ServerOptions) -> SessionOptions:
        """TF Serving's session flags; unset pools mean "run in the caller", one thread per op.

        TensorFlow's default hands every Session::Run to its inter-op pool and back: for a
        small graph that hop costs more than the kernels (measured: 31 us vs 9 us per call for
        half_plus_two, 455 vs 299 us for a 256-1024-1024-10 MLP). Concurrency comes from
        running many calls at once instead (see DEFAULT_INTRA_OP_THREADS). A positive flag
        value restores a pool: inter-op for graphs with wide independent branches, intra-op
        for big kernels on many cores at low concurrency.
        """
        intra = options.tensorflow_intra_op_parallelism or options.tensorflow_session_parallelism
        inter = options.tensorflow_inter_op_parallelism or options.tensorflow_session_parallelism
        return cls(
            tags=options.tags,
            intra_op_parallelism=intra or DEFAULT_INTRA_OP_THREADS,
            inter_op_parallelism=inter or CALLER_THREAD,
            per_process_gpu_memory_fraction=options.per_process_gpu_memory_fraction,
            fitted_intra_op=not intra,
        )

    def config_proto(self) -> config_pb2.ConfigProto:
        """Soft placement lets one export run on a GPU host and a CPU-only host alike."""
        config = config_pb2.ConfigProto(
            allow_soft_placement=True,
            intra_op_parallelism_threads=self.intra_op_parallelism,
            inter_op_parallelism_threads=self.inter_op_parallelism,
        )
        if self.per_process_gpu_memory_fraction > 0:
            config.gpu_options.per_process_gpu_memory_fraction = (
                self.per_process_gpu_memory_fraction
            )
        else:
            config.gpu_options.allow_growth = True
        return config


@dataclass
class Signature:
    """A signature bound to a session: validates feeds and runs prepared callables.

    `feed_dtypes` are the dtypes the graph's fed tensors really have, by alias. They usually
    equal the SignatureDef's, but not always: TF Serving's saved_model_half_plus_three declares
    its regress input DT_FLOAT over a DT_STRING placeholder, and TF Serving feeds what the
    graph takes (serialized tf.Examples), so feeds are checked against the graph, not the claim.
    """

    spec: SignatureSpec
    _session: tf.compat.v1.Session
    feed_dtypes: Mapping[str, int] = field(default_factory=dict)
    _callables: dict[tuple[str, ...], _Callable] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Moving average of recent call times: tells the gRPC dispatcher whether a call is short
    # enough to run inline or would stall every other request behind it.
    typical_seconds: float = 0.0

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def method_name(self) -> str:
        return self.spec.method_name

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self.spec.inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self.spec.outputs

    def run(
        self, feeds: Mapping[str, np.ndarray], output_keys: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run the signature; `output_keys` empty means every output, in alias order."""
        self._check_feed_keys(feeds)
        keys = self._check_output_keys(output_keys) if output_keys else tuple(self.outputs)
        values = [self._checked(alias, feeds[alias]) for alias in self.inputs]
        started = time.perf_counter()
        try:
            results = self._callable(keys)(*values)
        except tf.errors.OpError as exc:
            raise ServingError(Code(exc.error_code), exc.message) from None
        elapsed = time.perf_counter() - started
        if self.typical_seconds:
            self.typical_seconds += (elapsed - self.typical_seconds) * _TIMING_WEIGHT
        else:  # the first call: an average from zero would call a slow model fast
            self.typical_seconds = elapsed
        return dict(zip(keys, results, strict=True))

    def warm(self) -> None:
        """Prepare the all-outputs callable at load time so the first request pays nothing."""
        self._callable(tuple(self.outputs))

    def _callable(self, keys: tuple[str, ...]) -> _Callable:
        fn = self._callables.get(keys)
        if fn is None:
            with self._lock:
                fn = self._callables.get(keys)
                if fn is None:
                    fn = self._make_callable(keys)
                    self._callables[keys] = fn
        return fn

    def _make_callable(self, keys: tuple[str, ...]) -> _Callable:
        """A C++ `Session::MakeCallable` handle fed and fetched by tensor name.

        `Session.make_callable` with a feed list falls back to `Session.run` and its Python
        feed checks; the options-based callable goes straight to the C++ runtime, as TF
        Serving's own `Session::Run` does (no static-shape check on fed tensors either).
        """
        options = config_pb2.CallableOptions(
            feed=[spec.tensor_name for spec in self.inputs.values()],
            fetch=[self.outputs[k].tensor_name for k in keys],
        )
        return self._session._make_callable_from_options(options)

    def _check_feed_keys(self, feeds: Mapping[str, np.ndarray]) -> None:
        if len(feeds) == len(self.inputs) and all(k in self.inputs for k in feeds):
            return
        extra = sorted(set(feeds) - set(self.inputs))
        missing = sorted(set(self.inputs) - set(feeds))
        raise errors.invalid_argument(
            f"input size does not match signature: {len(feeds)}!={len(self.inputs)} "
            f"len({{{','.join(sorted(feeds))}}}) != len({{{','.join(self.inputs)}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )

    def _check_output_keys(self, output_keys: Sequence[str]) -> tuple[str, ...]:
        seen: set[str] = set()
        for key in output_keys:
            if key not in self.outputs:
                raise errors.invalid_argument(
                    f"output tensor alias not found in signature: {key} Outputs expected to be "
                    f"in the set {{{','.join(self.outputs)}}}."
                )
            if key in seen:
                raise errors.invalid_argument(f"duplicate output tensor alias: {key}")
            seen.add(key)
        return tuple(output_keys)

    def _checked(self, alias: str, value: np.ndarray) -> np.ndarray:
        """Reject a dtype the graph would reject (a session would cast silently).

        Shapes are left to TensorFlow, as in TF Serving: a signature's static shape is often
        stricter than what its graph accepts (half_plus_two takes [3] for a [-1,1] input).
        """
        dtype = self.feed_dtypes.get(alias, self.inputs[alias].dtype)
        if dtype == types_pb2.DT_STRING:
            if value.dtype.kind in "OSU":
                return value
        elif value.dtype == numpy_dtype(dtype):
            return value
        given = "string" if value.dtype.kind in "OSU" else value.dtype.name
        raise errors.invalid_argument(
            f"Expects arg[{alias}] to be {dtype_name(dtype)} but {given} is provided"
        )


class Servable:
    """A loaded model version: its signatures, its MetaGraphDef's signature map, its session."""

    def __init__(
        self,
        name: str,
        version: int,
        path: str,
        session: tf.compat.v1.Session,
        meta_graph: meta_graph_pb2.MetaGraphDef,
        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.intra_op_threads = intra_op_threads
        self._session = session
        # All of them, the init pseudo-signature included: GetModelMetadata reports the
        # MetaGraphDef's map as it is (TF Serving's TF2 testdata metadata lists it).
        self.signature_defs: Mapping[str, meta_graph_pb2.SignatureDef] = dict(
            meta_graph.signature_def
        )
        self.signatures: dict[str, Signature] = {
            key: Signature(signature_spec(key, sig_def), session, _feed_dtypes(session, sig_def))
            for key, sig_def in self.signature_defs.items()
            if key != INIT_OP_SIGNATURE
        }
        for signature in self.signatures.values():
            signature.warm()

    @property
    def longest_call_seconds(self) -> float:
        """The typical call time of its slowest signature (0 before any call)."""
        return max((s.typical_seconds for s in self.signatures.values()), default=0.0)

    def signature(self, key: str) -> Signature:
        """The named signature; TF Serving's FAILED_PRECONDITION when it is not exported."""
        signature = self.signatures.get(key)
        if signature is None:
            raise errors.UnknownSignature(key)
        return signature

    def close(self) -> None:
        """Release the session (and with it the graph's variables and buffers)."""
        self.signatures.clear()
        self._session.close()

    def __repr__(self) -> str:
        return f"Servable({self.name!r}, {self.version})"


def _feed_dtypes(
    session: tf.compat.v1.Session, signature_def: meta_graph_pb2.SignatureDef
) -> dict[str, int]:
    """The DataType of the graph tensor behind each input alias (see `Signature`)."""
    dtypes = {}
    for alias, info in signature_def.inputs.items():
        try:
            tensor = session.graph.get_tensor_by_name(info.name)
        except (KeyError, ValueError):  # not a plain tensor (sparse/composite): trust the claim
            continue
        dtypes[alias] = tensor.dtype.base_dtype.as_datatype_enum
    return dtypes


def load_servable(name: str, version: int, path: str, options: SessionOptions) -> Servable:
    """Load one SavedModel version directory into its own graph and session.

    Raises ServingError with the loader's status code so GetModelStatus can report it.
    """
    if not os.path.isdir(path):
        raise errors.not_found(f"SavedModel directory does not exist: {path}")
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=options.config_proto())
    try:
        with graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(session, list(options.tags), path)
        return Servable(name, version, path, session, meta_graph, options.intra_op_parallelism)
    except tf.errors.OpError as exc:
        session.close()
        raise ServingError(Code(exc.error_code), exc.message) from None
    except (RuntimeError, ValueError, OSError) as exc:
        session.close()
        missing = _missing_part(path, options.tags)
        if missing is not None:
            raise errors.not_found(missing) from None
        raise ServingError(
            Code.INVALID_ARGUMENT, f"Failed to load SavedModel at {path}: {exc}"
        ) from None


def _missing_part(path: str, tags: Sequence[str]) -> str | None:
    """TensorFlow's C++ loader (which TF Serving runs) answers NOT_FOUND, in these words, for
    a version directory without saved_model.pb(txt) and for one without a MetaGraph of the
    requested tags; the Python loader raises OSError/RuntimeError for both. Only read after
    a failed load, so a good load parses its SavedModel once."""
    files = [os.path.join(path, name) for name in ("saved_model.pb", "saved_model.pbtxt")]
    if not any(os.path.exists(file) for file in files):
        return (
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}."
            " Check that the directory exists and that you have the right permissions for"
            " accessing it."
        )
    if not any(os.path.isfile(file) for file in files):
        return None  # a FIFO or the like: reading it again could block
    try:
        tag_sets = {frozenset(graph.meta_info_def.tags) for graph in _read_saved_model(files)}
    except (OSError, UnicodeDecodeError, message.DecodeError, text_format.ParseError):
        return None  # unreadable: the loader's own error says more
    if frozenset(tags) in tag_sets:
        return None
    return (
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(tags))} }}."
        " To inspect available tag-sets in the SavedModel, please use the SavedModel CLI:"
        " `saved_model_cli`"
    )


def _read_saved_model(files: list[str]) -> Sequence[meta_graph_pb2.MetaGraphDef]:
    """The MetaGraphs of saved_model.pb, else of saved_model.pbtxt (TensorFlow's order)."""
    proto = saved_model_pb2.SavedModel()
    binary, text = files
    if os.path.isfile(binary):
        with open(binary, "rb") as file:
            proto.ParseFromString(file.read())
    else:
        with open(text, encoding="utf-8") as file:
            text_format.Parse(file.read(), proto)
    return proto.meta_graphs
