"""Builders for the real SavedModels that modelplane is tested, benchmarked and demoed with.

Every builder writes one servable version into ``<base_path>/<version>/`` and returns that
version directory. The export is staged in a dot-prefixed sibling inside ``base_path`` and
renamed into place at the end, so a model server polling ``base_path`` never observes a
half-written version (TF Serving, and therefore our data plane, ignores non-numeric children).

The models are deliberately tiny and deterministic so that tests can assert exact outputs:

* ``build_half_plus_two_tf1`` -- TF1 graph mirroring TF Serving's ``saved_model_half_plus_two``.
* ``build_keras_model`` -- Keras 3 ``Model.export`` with fixed weights.
* ``build_string_model`` -- DT_STRING in, DT_STRING/int64 out (b64 and string handling).
* ``build_mlp`` / ``build_big_mlp`` / ``build_cnn`` -- seeded models for benchmarks and memory.
* ``build_digits_classifier`` -- trained at build time on scikit-learn's bundled digits.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # must precede the TensorFlow import

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

tf.get_logger().setLevel("ERROR")  # hide TF1 API deprecation chatter during graph building

v1 = tf.compat.v1
SERVE_TAG = "serve"
PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"

#: Warmup requests written by ``build_half_plus_two_tf1(..., warmup=True)``: one record per row.
HALF_PLUS_TWO_WARMUP_INPUTS: tuple[tuple[float, ...], ...] = ((1.0, 2.0, 5.0), (0.0,), (-4.0, 8.0))

#: Asset shipped in ``assets/`` like upstream's, so loaders must cope with an assets directory.
HALF_PLUS_TWO_ASSETS = {"foo.txt": "asset-file-contents"}

#: Keras model: ``output_0 = relu(features @ KERAS_W1 + KERAS_B1) @ KERAS_W2 + KERAS_B2``.
KERAS_W1 = np.array([[1.0, -1.0], [2.0, 0.0], [0.0, 1.0]], dtype=np.float32)
KERAS_B1 = np.array([0.0, 1.0], dtype=np.float32)
KERAS_W2 = np.array([[1.0], [2.0]], dtype=np.float32)
KERAS_B2 = np.array([0.5], dtype=np.float32)

MLP_SIZES = (256, 1024, 1024, 10)
BIG_MLP_SIZES = (2048, 4096, 4096, 2048, 10)  # 33.6M float32 weights, about 134 MB
CNN_INPUT_SHAPE = (64, 64, 3)
DIGITS_SEED = 0


# --------------------------------------------------------------------------- shared plumbing


def version_path(base_path: str, version: int) -> str:
    """Return ``<base_path>/<version>``, the directory layout TF Serving expects."""
    return os.path.join(base_path, str(version))


@contextlib.contextmanager
def _staged_export(base_path: str, version: int) -> Iterator[str]:
    """Yield a not-yet-existing directory to export into, then atomically publish it.

    Exporters (``SavedModelBuilder``, ``Model.export``) insist on creating the directory
    themselves, hence the yielded path does not exist yet.
    """
    final = version_path(base_path, version)
    if os.path.exists(final):
        raise FileExistsError(f"SavedModel version already exists: {final}")
    os.makedirs(base_path, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".staging-{version}-", dir=base_path)
    try:
        export_dir = os.path.join(staging, "export")
        yield export_dir
        os.rename(export_dir, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _export_module(
    base_path: str, version: int, module: tf.Module, signatures: Mapping[str, Callable]
) -> str:
    """Save a TF2 module with the given signature functions as one servable version."""
    with _staged_export(base_path, version) as export_dir:
        tf.saved_model.save(module, export_dir, signatures=dict(signatures))
    return version_path(base_path, version)


def _tf1_signature(
    inputs: Mapping[str, tf.Tensor], outputs: Mapping[str, tf.Tensor], method_name: str
) -> tf.compat.v1.SignatureDef:
    """Build a SignatureDef with an explicit method name (TF2 exports only know predict)."""
    return v1.saved_model.build_signature_def(
        inputs={k: v1.saved_model.build_tensor_info(t) for k, t in inputs.items()},
        outputs={k: v1.saved_model.build_tensor_info(t) for k, t in outputs.items()},
        method_name=method_name,
    )


def _export_tf1_graph(
    base_path: str,
    version: int,
    build_graph: Callable[[], dict[str, tf.compat.v1.SignatureDef]],
    assets: Mapping[str, str] | None = None,
) -> str:
    """Run ``build_graph`` inside a fresh TF1 Graph/Session and save it with its signatures.

    ``build_graph`` creates variables and tensors in the default graph and returns the
    signature map; variables are initialised here, which is what gets checkpointed.
    ``assets`` (file name -> text) are copied into the SavedModel's ``assets/`` directory.
    """
    with _staged_export(base_path, version) as export_dir:
        graph = tf.Graph()
        with graph.as_default(), v1.Session(graph=graph) as session:
            signatures = build_graph()
            asset_tensors = _asset_tensors(os.path.dirname(export_dir), assets or {})
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                session,
                [SERVE_TAG],
                signature_def_map=signatures,
                assets_collection=asset_tensors or None,
            )
            builder.save()
    return version_path(base_path, version)


def _asset_tensors(scratch_dir: str, assets: Mapping[str, str]) -> list[tf.Tensor]:
    """Write asset sources under ``scratch_dir`` and return their path constants.

    The SavedModel builder copies every file named by these string constants into
    ``assets/`` and records them in the MetaGraph, as TF1 exporters did.
    """
    tensors = []
    for name, text in assets.items():
        source = os.path.join(scratch_dir, "asset-sources", name)
        os.makedirs(os.path.dirname(source), exist_ok=True)
        with open(source, "w", encoding="utf-8") as handle:
            handle.write(text)
        tensors.append(tf.constant(source, name=f"asset_path_{len(tensors)}"))
    return tensors


def _parse_float_feature(
    serialized: tf.Tensor, name: str, width: int, default: Sequence[float] | None = None
) -> tf.Tensor:
    """Parse one fixed-length float feature out of serialized ``tf.Example`` protos."""
    feature = v1.io.FixedLenFeature([width], tf.float32, default_value=default)
    parsed = v1.io.parse_example(serialized, {name: feature})[name]
    parsed.set_shape([None, width])  # known even when the placeholder's rank is not
    return parsed


# --------------------------------------------------------------------------- half_plus_two


def build_half_plus_two_tf1(
    base_path: str,
    version: int = 1,
    *,
    a: float = 0.5,
    b: float = 2.0,
    c: float = 3.0,
    warmup: bool = False,
    model_name: str = "half_plus_two",
) -> str:
    """TF1 graph equivalent to TF Serving's ``saved_model_half_plus_two`` test model.

    ``y = a*x + b``, ``y2 = a*x + c``, ``y3 = a*x2 + c``. ``x`` (and ``x2``, default 0.0) are
    parsed from the serialized ``tf.Example`` placeholder ``tf_example`` and then renamed,
    exactly like upstream, so Predict feeds the *parsed* tensor ``x:0`` directly. Signatures:

    ===================  ========  ================================  ======================
    key                  method    inputs                            outputs
    ===================  ========  ================================  ======================
    serving_default      predict   x: float [-1,1] (x:0)             y: float [-1,1]
    classify_x_to_y      classify  inputs: string [?] (tf_example)   scores: y
    classify_x2_to_y3    classify  inputs: float [-1,1] (x2:0)       scores: y3
    regress_x_to_y       regress   inputs: string [?] (tf_example)   outputs: y
    regress_x_to_y2      regress   inputs: string [?] (tf_example)   outputs: y2
    regress_x2_to_y3     regress   inputs: float [-1,1] (x2:0)       outputs: y3
    ===================  ========  ================================  ======================

    ``assets/foo.txt`` holds ``asset-file-contents`` (also as upstream).
    Like TF Serving, feeding ``x`` with shape ``[3]`` works and returns shape ``[3]``.
    ``warmup=True`` also writes ``assets.extra/tf_serving_warmup_requests`` with one
    PredictRequest per ``HALF_PLUS_TWO_WARMUP_INPUTS`` row (``model_spec.name=model_name``).
    """

    def graph() -> dict[str, tf.compat.v1.SignatureDef]:
        a_var = v1.Variable(a, name="a")
        b_var = v1.Variable(b, name="b")
        c_var = v1.Variable(c, name="c")
        # No static shape, as in upstream's export (its metadata says unknown_rank: true).
        serialized = v1.placeholder(tf.string, name="tf_example")
        x = tf.identity(_parse_float_feature(serialized, "x", 1), name="x")
        x2 = tf.identity(_parse_float_feature(serialized, "x2", 1, default=[0.0]), name="x2")
        y = tf.identity(a_var * x + b_var, name="y")
        y2 = tf.identity(a_var * x + c_var, name="y2")
        # Separate variables for the x2 path, as upstream, so graph optimizers cannot fuse it.
        y3 = tf.identity(v1.Variable(a, name="a2") * x2 + v1.Variable(c, name="c2"), name="y3")
        return {
            "serving_default": _tf1_signature({"x": x}, {"y": y}, PREDICT),
            "classify_x_to_y": _tf1_signature({"inputs": serialized}, {"scores": y}, CLASSIFY),
            "classify_x2_to_y3": _tf1_signature({"inputs": x2}, {"scores": y3}, CLASSIFY),
            "regress_x_to_y": _tf1_signature({"inputs": serialized}, {"outputs": y}, REGRESS),
            "regress_x_to_y2": _tf1_signature({"inputs": serialized}, {"outputs": y2}, REGRESS),
            "regress_x2_to_y3": _tf1_signature({"inputs": x2}, {"outputs": y3}, REGRESS),
        }

    path = _export_tf1_graph(base_path, version, graph, HALF_PLUS_TWO_ASSETS)
    if warmup:
        write_warmup_requests(
            path, [_half_plus_two_request(model_name, row) for row in HALF_PLUS_TWO_WARMUP_INPUTS]
        )
    return path


def build_half_plus_three_tf1(base_path: str, version: int = 123) -> str:
    """TF1 graph equivalent to TF Serving's ``saved_model_half_plus_three`` test model.

    ``y = 0.5*x + 3`` with ``x`` parsed from the serialized ``tf.Example`` placeholder
    ``tf_example``. Two signatures, TensorInfos without shapes as upstream's:

    * ``serving_default`` (predict): ``x`` float (``x:0``) -> ``y`` float (``y:0``).
    * ``tensorflow/serving/regress`` (regress): ``inputs`` -> ``outputs`` (``Identity:0``),
      whose input TensorInfo *claims DT_FLOAT* while ``tf_example:0`` is DT_STRING. That is
      upstream's quirk, kept on purpose: a server must feed the serialized examples the
      graph takes, not what the SignatureDef says (api_rest.md's regress example:
      ``{"examples": [{"x": 1.0}, {"x": 2.0}]}`` -> ``{"results": [3.5, 4.0]}``).
    """

    def graph() -> dict[str, tf.compat.v1.SignatureDef]:
        a_var = v1.Variable(0.5, name="a")
        b_var = v1.Variable(3.0, name="b")
        serialized = v1.placeholder(tf.string, name="tf_example")
        x = tf.identity(_parse_float_feature(serialized, "x", 1), name="x")
        y = tf.identity(a_var * x + b_var, name="y")
        predict = _tf1_signature({"x": x}, {"y": y}, PREDICT)
        regress = _tf1_signature({"inputs": serialized}, {"outputs": tf.identity(y)}, REGRESS)
        regress.inputs["inputs"].dtype = tf.float32.as_datatype_enum
        for signature in (predict, regress):
            for info in (*signature.inputs.values(), *signature.outputs.values()):
                info.ClearField("tensor_shape")
        return {"serving_default": predict, REGRESS: regress}

    return _export_tf1_graph(base_path, version, graph, HALF_PLUS_TWO_ASSETS)


def build_contract_breakers_tf1(base_path: str, version: int = 1) -> str:
    """TF1 graph whose signatures each break one rule of TF Serving's Classify/Regress
    (classifier.cc / regressor.cc), so every such error can be seen on a live server.

    All take serialized ``tf.Example`` strings as ``inputs`` (feature ``x``, one float):

    ==================  ========  ==============================================
    key                 method    what is wrong
    ==================  ========  ==============================================
    two_inputs          regress   inputs ``inputs`` and ``other``
    three_outputs       classify  outputs ``classes``, ``scores`` and ``extra``
    classes_vector      classify  ``classes`` string [batch] (not [batch, k])
    int_scores          classify  ``scores`` int64 [batch, 1]
    uneven_classes      classify  ``classes`` [batch, 2] but ``scores`` [batch, 1]
    short_scores        classify  ``scores`` [1, 1] whatever the batch
    wide_outputs        regress   ``outputs`` float [batch, 2]
    int_outputs         regress   ``outputs`` int64 [batch]
    short_outputs       regress   ``outputs`` float [1] whatever the batch
    custom_method       (custom)  a method name none of the three APIs knows
    ==================  ========  ==============================================
    """

    def graph() -> dict[str, tf.compat.v1.SignatureDef]:
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        x = _parse_float_feature(serialized, "x", 1)
        rows = tf.shape(x)[0]
        labels = tf.fill([rows, 1], "a")
        two_labels = tf.fill([rows, 2], "a")
        ints = tf.cast(x, tf.int64)
        one = {"inputs": serialized}

        def classify(**outputs: tf.Tensor) -> tf.compat.v1.SignatureDef:
            return _tf1_signature(one, outputs, CLASSIFY)

        def regress(outputs: tf.Tensor) -> tf.compat.v1.SignatureDef:
            return _tf1_signature(one, {"outputs": outputs}, REGRESS)

        other = v1.placeholder(tf.string, shape=[None], name="other")
        return {
            "two_inputs": _tf1_signature(
                {"inputs": serialized, "other": other}, {"outputs": x}, REGRESS
            ),
            "three_outputs": classify(classes=labels, scores=x, extra=x),
            "classes_vector": classify(classes=tf.fill([rows], "a")),
            "int_scores": classify(scores=ints),
            "uneven_classes": classify(classes=two_labels, scores=x),
            "short_scores": classify(scores=x[:1]),
            "wide_outputs": regress(tf.concat([x, x], axis=1)),
            "int_outputs": regress(tf.reshape(ints, [-1])),
            "short_outputs": regress(tf.reshape(x, [-1])[:1]),
            "custom_method": _tf1_signature(one, {"outputs": x}, "example/custom"),
        }

    return _export_tf1_graph(base_path, version, graph)


class _HalfPlusTwoTf2(tf.Module):
    """Native TF2 half_plus_two: the signature set of TF Serving's TF2 test export.

    Every signature's method is ``tensorflow/serving/predict`` (all a TF2 export can say).
    The ``*_x_to_*`` ones take serialized ``tf.Example`` strings [None] under the alias
    ``inputs``; the ``*_x2_to_y3`` ones and ``serving_default`` take floats of shape [1].
    """

    def __init__(self, b: float, asset: str) -> None:
        super().__init__()
        self.a = tf.Variable(0.5, name="a")
        self.b = tf.Variable(b, name="b")
        self.c = tf.Variable(3.0, name="c")
        self.asset = tf.saved_model.Asset(asset)

    def _x(self, serialized: tf.Tensor) -> tf.Tensor:
        return _parse_float_feature(serialized, "x", 1)

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_xy(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * self._x(serialized) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_xy2(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * self._x(serialized) + self.c}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
    def regress_x2y3(self, x2: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * x2 + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_xy(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self.a * self._x(serialized) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
    def classify_x2y3(self, x2: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self.a * x2 + self.c}


def build_half_plus_two_tf2(base_path: str, version: int = 123, *, b: float = 2.0) -> str:
    """TF2 ``tf.saved_model.save`` export equivalent to TF Serving's
    ``saved_model_half_plus_two_tf2_cpu`` (its metadata: ``..._tf2_2_versions_metadata.json``).

    ``y = 0.5*x + b``, ``y2 = 0.5*x + 3``, ``y3 = 0.5*x2 + 3``; signatures
    ``serving_default`` (x [1] -> y), ``regress_x_to_y`` / ``regress_x_to_y2`` /
    ``classify_x_to_y`` (serialized examples -> outputs / scores [-1,1]) and
    ``regress_x2_to_y3`` / ``classify_x2_to_y3`` (x2 [1] -> [1]), all with method
    ``tensorflow/serving/predict``, plus the ``__saved_model_init_op`` TF2 adds (the asset
    ``foo.txt`` gives it work). The signatures' fed and fetched tensor names match upstream's.
    """
    with _staged_export(base_path, version) as export_dir:
        scratch = os.path.dirname(export_dir)
        asset = os.path.join(scratch, "asset-sources", "foo.txt")
        os.makedirs(os.path.dirname(asset), exist_ok=True)
        with open(asset, "w", encoding="utf-8") as handle:
            handle.write(HALF_PLUS_TWO_ASSETS["foo.txt"])
        module = _HalfPlusTwoTf2(b, asset)
        signatures = {
            "serving_default": module.predict,
            "regress_x_to_y": module.regress_xy,
            "regress_x_to_y2": module.regress_xy2,
            "regress_x2_to_y3": module.regress_x2y3,
            "classify_x_to_y": module.classify_xy,
            "classify_x2_to_y3": module.classify_x2y3,
        }
        tf.saved_model.save(module, export_dir, signatures=signatures)
    return version_path(base_path, version)


def _half_plus_two_request(model_name: str, row: Sequence[float]) -> predict_pb2.PredictRequest:
    """A PredictRequest feeding ``x`` with shape [len(row), 1]."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_default"
    values = np.asarray(row, dtype=np.float32).reshape(-1, 1)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(values))
    return request


def write_warmup_requests(version_dir: str, requests: Sequence[predict_pb2.PredictRequest]) -> str:
    """Write ``assets.extra/tf_serving_warmup_requests``: a TFRecord of PredictionLog protos.

    ``requests`` are PredictRequest protos, each wrapped into ``predict_log.request``, the
    format TF Serving replays at load time. Returns the written file path.
    """
    extra = os.path.join(version_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    path = os.path.join(extra, "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())
    return path


# --------------------------------------------------------------------------- keras


def build_keras_model(base_path: str, version: int = 1) -> str:
    """Keras 3 functional model exported with ``Model.export`` (signature ``serving_default``).

    Input alias ``features`` (float32 [None,3], taken from the ``keras.Input`` name), output
    alias ``output_0`` (float32 [None,1]), formula
    ``relu(features @ KERAS_W1 + KERAS_B1) @ KERAS_W2 + KERAS_B2``; e.g. [[1,2,3]] -> [[11.5]].
    Keras also adds a second endpoint ``serve`` with the same function.
    """
    import keras

    features = keras.Input(shape=(3,), name="features", dtype="float32")
    hidden = keras.layers.Dense(2, activation="relu", name="hidden")(features)
    score = keras.layers.Dense(1, name="score")(hidden)
    model = keras.Model(features, score, name="keras_demo")
    model.get_layer("hidden").set_weights([KERAS_W1, KERAS_B1])
    model.get_layer("score").set_weights([KERAS_W2, KERAS_B2])
    with _staged_export(base_path, version) as export_dir:
        model.export(export_dir, format="tf_saved_model", verbose=False)
    return version_path(base_path, version)


def keras_expected(features: np.ndarray) -> np.ndarray:
    """NumPy reference for ``build_keras_model``'s ``output_0``."""
    hidden = np.maximum(np.asarray(features, np.float32) @ KERAS_W1 + KERAS_B1, 0.0)
    return hidden @ KERAS_W2 + KERAS_B2


# --------------------------------------------------------------------------- strings


class _StringModel(tf.Module):
    """``text`` (string [None]) -> ``length`` (int64 bytes) and ``upper`` (string)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "length": tf.cast(tf.strings.length(text, unit="BYTE"), tf.int64),
            "upper": tf.strings.upper(text),
        }


def build_string_model(base_path: str, version: int = 1) -> str:
    """DT_STRING model: ``serving_default`` maps ``text`` [None] to ``length`` and ``upper``.

    ``length`` is the byte length (int64) and ``upper`` the ASCII upper-cased bytes, so
    arbitrary binary inputs (the REST ``{"b64": ...}`` path) round-trip observably.
    """
    module = _StringModel()
    return _export_module(base_path, version, module, {"serving_default": module.serve})


# --------------------------------------------------------------------------- dense / conv


def _seeded(rng: np.random.Generator, shape: Sequence[int], fan_in: int) -> tf.Variable:
    """He-scaled normal weights so activations stay O(1) through deep benchmark nets."""
    values = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    return tf.Variable(values)


class _Mlp(tf.Module):
    """ReLU MLP; the last layer is linear."""

    def __init__(self, sizes: Sequence[int], seed: int) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        pairs = list(itertools.pairwise(sizes))
        self.weights = [_seeded(rng, (i, o), i) for i, o in pairs]
        self.biases = [tf.Variable(np.full(o, 0.01, np.float32)) for _, o in pairs]
        self.serve = tf.function(
            self._forward, input_signature=[tf.TensorSpec([None, sizes[0]], tf.float32, "x")]
        )

    def _forward(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        for index, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = tf.matmul(x, w) + b
            if index < len(self.weights) - 1:
                x = tf.nn.relu(x)
        return {"y": x}


def build_mlp(
    base_path: str, version: int = 1, *, sizes: Sequence[int] = MLP_SIZES, seed: int = 0
) -> str:
    """Seeded dense MLP: ``x`` float32 [None, sizes[0]] -> ``y`` float32 [None, sizes[-1]].

    Weights come from ``numpy.random.default_rng(seed)``, so the same arguments always yield
    the same model (benchmarks compare like with like).
    """
    module = _Mlp(sizes, seed)
    return _export_module(base_path, version, module, {"serving_default": module.serve})


def build_big_mlp(base_path: str, version: int = 1, *, seed: int = 0) -> str:
    """``build_mlp`` with ``BIG_MLP_SIZES``: about 134 MB of variables, for load/unload memory."""
    return build_mlp(base_path, version, sizes=BIG_MLP_SIZES, seed=seed)


class _Cnn(tf.Module):
    """Two strided 3x3 convolutions, global average pooling, dense softmax over 10 classes."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        channels = CNN_INPUT_SHAPE[-1]
        self.conv1 = _seeded(rng, (3, 3, channels, 16), 9 * channels)
        self.conv2 = _seeded(rng, (3, 3, 16, 32), 9 * 16)
        self.dense = _seeded(rng, (32, 10), 32)

    @tf.function(input_signature=[tf.TensorSpec([None, *CNN_INPUT_SHAPE], tf.float32, "x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.nn.relu(tf.nn.conv2d(x, self.conv1, strides=2, padding="SAME"))
        x = tf.nn.relu(tf.nn.conv2d(x, self.conv2, strides=2, padding="SAME"))
        return {"y": tf.nn.softmax(tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.dense))}


def build_cnn(base_path: str, version: int = 1, *, seed: int = 0) -> str:
    """Small seeded CNN: ``x`` float32 [None,64,64,3] -> ``y`` float32 [None,10] (softmax)."""
    module = _Cnn(seed)
    return _export_module(base_path, version, module, {"serving_default": module.serve})


# --------------------------------------------------------------------------- digits


def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified 75/25 split of sklearn's bundled 8x8 digits (no download)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    pixels = data.data.astype(np.float32)
    labels = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, labels, test_size=0.25, random_state=DIGITS_SEED, stratify=labels
    )
    return x_train, y_train, x_test, y_test


def digits_holdout() -> tuple[np.ndarray, np.ndarray]:
    """Held-out (pixels float32 [N,64] in 0..16, labels int64 [N]) never seen in training."""
    _, _, x_test, y_test = _digits_split()
    return x_test, y_test


def _train_digits(pixels: np.ndarray, labels: np.ndarray, steps: int = 300) -> list[np.ndarray]:
    """Full-batch Adam on a 64-32-10 ReLU MLP; returns [w1, b1, w2, b2] as NumPy arrays.

    Full batch plus a fixed seed keeps training reproducible and takes well under a second.
    """
    rng = np.random.default_rng(DIGITS_SEED)
    params = [_seeded(rng, (64, 32), 64), tf.Variable(tf.zeros([32])),
              _seeded(rng, (32, 10), 32), tf.Variable(tf.zeros([10]))]  # fmt: skip
    optimizer = _Adam(params, learning_rate=0.01)
    x = tf.constant(pixels / 16.0, tf.float32)
    y = tf.constant(labels)

    @tf.function
    def step() -> None:
        with tf.GradientTape() as tape:
            logits = _digits_logits(x, *params)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        optimizer.apply(tape.gradient(loss, params))

    for _ in range(steps):
        step()
    return [p.numpy() for p in params]


class _Adam:
    """Minimal Adam so training needs no Keras import (saves seconds on every test run)."""

    def __init__(self, params: Sequence[tf.Variable], learning_rate: float) -> None:
        self.params = list(params)
        self.lr = learning_rate
        self.m = [tf.Variable(tf.zeros_like(p)) for p in params]
        self.v = [tf.Variable(tf.zeros_like(p)) for p in params]
        self.t = tf.Variable(0.0)

    def apply(self, grads: Sequence[tf.Tensor], b1: float = 0.9, b2: float = 0.999) -> None:
        self.t.assign_add(1.0)
        scale = self.lr * tf.sqrt(1.0 - b2**self.t) / (1.0 - b1**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m.assign(b1 * m + (1.0 - b1) * g)
            v.assign(b2 * v + (1.0 - b2) * tf.square(g))
            p.assign_sub(scale * m / (tf.sqrt(v) + 1e-7))


def _digits_logits(
    scaled: tf.Tensor, w1: tf.Variable, b1: tf.Variable, w2: tf.Variable, b2: tf.Variable
) -> tf.Tensor:
    """Forward pass shared by training and both exported paths; ``scaled`` = pixels / 16."""
    return tf.matmul(tf.nn.relu(tf.matmul(scaled, w1) + b1), w2) + b2


def build_digits_classifier(base_path: str, version: int = 1) -> str:
    """Digits classifier trained at build time, exported as a TF1 graph with two signatures.

    * ``serving_default`` (predict): ``pixels`` float32 [None,64] with values 0..16 ->
      ``probabilities`` float32 [None,10] and ``classes`` int64 [None] (argmax).
    * ``classify`` (classify): ``inputs`` serialized ``tf.Example`` strings [None] with a float
      feature ``pixels`` of length 64 -> ``scores`` float32 [None,10] and ``classes`` string
      [None,10] (labels "0".."9"), the shape TF Serving's Classify API expects.

    Accuracy on ``digits_holdout()`` is about 0.97 (see tests/examples/test_builders.py).
    """
    x_train, y_train, _, _ = _digits_split()
    weights = _train_digits(x_train, y_train)

    def graph() -> dict[str, tf.compat.v1.SignatureDef]:
        params = [v1.Variable(w, name=n) for w, n in zip(weights, ("w1", "b1", "w2", "b2"),
                                                          strict=True)]  # fmt: skip
        pixels = v1.placeholder(tf.float32, shape=[None, 64], name="pixels")
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = _parse_float_feature(serialized, "pixels", 64)
        probabilities = tf.nn.softmax(_digits_logits(pixels / 16.0, *params), name="probabilities")
        classes = tf.argmax(probabilities, axis=1, name="classes")
        scores = tf.nn.softmax(_digits_logits(parsed / 16.0, *params), name="scores")
        labels = tf.constant([str(i).encode() for i in range(10)])
        class_names = tf.tile(labels[tf.newaxis, :], [tf.shape(scores)[0], 1], name="class_names")
        return {
            "serving_default": _tf1_signature(
                {"pixels": pixels}, {"probabilities": probabilities, "classes": classes}, PREDICT
            ),
            "classify": _tf1_signature(
                {"inputs": serialized}, {"scores": scores, "classes": class_names}, CLASSIFY
            ),
        }

    return _export_tf1_graph(base_path, version, graph)
