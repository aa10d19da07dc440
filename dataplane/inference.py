"""Predict, classify, regress and multi-inference on leased servables, free of any protocol.

The gRPC and REST layers decode their wire format, call one function here, and encode the
result. Everything a request must agree with (signature names, method names, aliases, the
shapes classify/regress outputs must have) is checked here, once, for both protocols.

Each request is written once, as a *plan*: a generator that leases a version, checks the
request, yields the model call(s) it needs and returns the result. `run` drives a plan with
blocking calls (warmup); `submit` drives the same plan without ever blocking (each front end's
one dispatcher thread: gRPC's dispatcher, the REST event loop), resuming it by callback when a
batched or slow call finishes instead of parking a thread on it, so one thread can feed the
batcher from many concurrent requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from google.protobuf import text_format
from tensorflow.core.example import example_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import input_pb2

from dataplane import errors, tracing
from dataplane.errors import Code, ServingError
from dataplane.limits import DEFAULT_LIMITS, RequestLimits
from dataplane.manager import ModelManager
from dataplane.metrics import UNKNOWN_MODEL
from dataplane.offload import SLOW_CALL_SECONDS, Offload
from dataplane.servable import Servable, Signature
from dataplane.signatures import TensorSpec, datatype_of

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
_PREDICTABLE_METHODS = (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD)
# The aliases TF Serving's Classify/Regress/MultiInference feed and fetch (signature_constants).
EXAMPLES_INPUT = "inputs"
REGRESSION_OUTPUT = "outputs"
InputDecoder = Callable[[Mapping[str, TensorSpec]], Mapping[str, np.ndarray]]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model a request addresses: a version, a label, or (neither) the latest."""

    name: str
    version: int | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """The version and signature a request actually ran on, for the response's model_spec."""

    name: str
    version: int
    signature_name: str


@dataclass(frozen=True, slots=True)
class Prediction:
    resolved: Resolved
    outputs: Mapping[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Classification:
    """Per example, per class: `classes` (bytes labels) and/or `scores` (float), [n, k]."""

    resolved: Resolved
    classes: np.ndarray | None
    scores: np.ndarray | None


@dataclass(frozen=True, slots=True)
class Regression:
    """One float value per example."""

    resolved: Resolved
    values: np.ndarray


@dataclass(frozen=True, slots=True)
class Examples:
    """Serialized tf.Examples plus an optional serialized context merged into each one.

    Concatenating serialized protos merges them, so `context + example` gives each example the
    context's features with its own taking precedence, exactly as TF Serving builds the batch.
    `protos` (and `context_proto`) are the messages they came from, kept to count their
    feature values for the request bound when that count could matter.
    """

    serialized: Sequence[bytes]
    context: bytes = b""
    protos: Sequence[example_pb2.Example] = ()
    context_proto: example_pb2.Example | None = None

    @classmethod
    def from_protos(
        cls,
        examples: Iterable[example_pb2.Example],
        context: example_pb2.Example | None = None,
    ) -> Examples:
        protos = list(examples)
        serialized = [example.SerializeToString() for example in protos]
        if context is None:
            return cls(serialized, b"", protos)
        return cls(serialized, context.SerializeToString(), protos, context)

    def check(self, limits: RequestLimits) -> None:
        """Refuse a batch whose merged form would exceed the request bound, before building
        it: a large context times many (even empty) examples is the amplification here.

        The elements are the examples plus their feature values, the context's once per
        example. Every value takes at least one serialized byte, so while the merged bytes
        and the examples together stay within the bound the values cannot exceed it, and the
        (per-feature, slow) count is skipped."""
        count = len(self.serialized)
        merged = sum(map(len, self.serialized)) + len(self.context) * count
        limits.check_serialized(merged)
        if not limits.max_request_elements or count + merged <= limits.max_request_elements:
            return
        values = sum(map(_feature_values, self.protos))
        if self.context_proto is not None:
            values += _feature_values(self.context_proto) * count
        limits.check_request(count + values)

    @classmethod
    def from_input(cls, request_input: input_pb2.Input) -> Examples:
        """TF Serving's Input message (a gRPC request's, or a warmup log's): the context is
        serialized once, to be merged into each example. An empty Input is refused by
        `tensor`, after the model is resolved, as TF Serving orders those checks."""
        kind = request_input.WhichOneof("kind")
        if kind == "example_list":
            return cls.from_protos(request_input.example_list.examples)
        if kind == "example_list_with_context":
            with_context = request_input.example_list_with_context
            return cls.from_protos(with_context.examples, with_context.context)
        return cls([])  # "Input is empty." once the model is resolved, as in TF Serving

    def tensor(self) -> np.ndarray:
        if not self.serialized:
            raise errors.invalid_argument("Input is empty.")
        items = [self.context + e for e in self.serialized] if self.context else self.serialized
        return np.array(items, dtype=object)


def _feature_values(example: example_pb2.Example) -> int:
    return sum(
        len(feature.float_list.value)
        + len(feature.int64_list.value)
        + len(feature.bytes_list.value)
        for feature in example.features.feature.values()
    )


@dataclass(frozen=True, slots=True)
class InferenceTask:
    """One task of a MultiInference request."""

    ref: ModelRef
    signature_name: str
    method_name: str


InferenceResult = Classification | Regression


class RequestMetrics(Protocol):
    """Where finished requests are counted (dataplane.metrics.ServingMetrics)."""

    def record_request(
        self,
        model: str,
        version: int | None,
        api: str,
        status: Code,
        seconds: float,
        entrypoint: str = "",
        requests: int = 1,
    ) -> None: ...


Runner = Callable[[Servable, Signature, Mapping[str, np.ndarray], Sequence[str]], Mapping]
Outputs = Mapping[str, np.ndarray]
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One model call a plan needs: the runner's arguments."""

    servable: Servable
    signature: Signature
    feeds: Mapping[str, np.ndarray]
    output_keys: Sequence[str]
    requests: int = 1  # > 1: the feeds are that many equal-sized requests, merged


Plan = Generator[ModelCall, Outputs, Result]


def run_direct(
    servable: Servable,
    signature: Signature,
    feeds: Mapping[str, np.ndarray],
    output_keys: Sequence[str],
) -> Mapping[str, np.ndarray]:
    """Run one request as its own model call (the default when batching is off)."""
    return signature.run(feeds, output_keys)


Answer = TypeVar("Answer")


class PendingAnswer(Future[Answer]):
    """The answer to a submitted plan; cancelling it also cancels the model call it waits on."""

    step: Future[Outputs] | None = None

    def cancel(self) -> bool:
        cancelled = super().cancel()  # first: the step's callback must find us cancelled
        step = self.step
        if cancelled and step is not None:
            step.cancel()
        return cancelled

    def settle(self, answer: Callable[[Result], Answer], result: Result) -> None:
        if self.cancelled():
            return
        try:
            reply = answer(result)
        except BaseException as exc:
            self.fail(exc)
            return
        with suppress(InvalidStateError):  # cancelled meanwhile: nobody waits for it
            self.set_result(reply)

    def fail(self, exc: BaseException) -> None:
        with suppress(InvalidStateError):
            self.set_exception(exc)


def _resume(plan: Plan[Result], step: Future[Outputs] | None) -> ModelCall:
    """The plan's next model call, after feeding it the finished step (None: at its start)."""
    if step is None:
        return next(plan)
    if step.cancelled():
        plan.close()  # releases the plan's lease
        raise ServingError(Code.UNAVAILABLE, "the model call was cancelled")
    error = step.exception()
    return plan.throw(error) if error is not None else plan.send(step.result())


class InferenceService:
    """The protocol-free API both protocol layers call."""

    def __init__(
        self,
        manager: ModelManager,
        runner: Runner = run_direct,
        check_method_names: bool = False,
        metrics: RequestMetrics | None = None,
        offload: Offload | None = None,
        entrypoint: str = "",
        runs_ready_batches: bool = False,
        limits: RequestLimits = DEFAULT_LIMITS,
    ) -> None:
        self.manager = manager
        self.limits = limits
        self._offload = offload
        self._run = runner
        # A runner with `submit` (the batcher) can hand back a future instead of blocking.
        self._submit: Callable[..., Future[Outputs]] | None = getattr(runner, "submit", None)
        # --enable_signature_method_name_check: off (TF Serving's default), Classify, Regress
        # and MultiInference run any signature whose inputs and outputs fit their API (every
        # TF2 export says tensorflow/serving/predict); on, each API insists on its own method.
        self._check_method_names = check_method_names
        self._metrics = metrics
        self._entrypoint = entrypoint
        self._runs_ready_batches = runs_ready_batches

    def via(self, entrypoint: str, runs_ready_batches: bool = False) -> InferenceService:
        """This service for one front end: the same manager, runner, pools and metrics, its
        requests labelled with the protocol they came by (TF Serving's `entrypoint` label on
        request latency: "GRPC" or "REST"). The core only carries the label.

        `runs_ready_batches`: the front end's thread may run a fast batch that need not wait
        itself (`BatchScheduler.run_here`). Right for a front end that hands over everything
        that arrived together at once (gRPC's coalescing dispatcher): what it blocks on is one
        batch, and what arrives meanwhile forms the next. Wrong for one that submits request
        by request (the REST loop): each would run alone and nothing would merge."""
        return InferenceService(
            self.manager,
            self._run,
            self._check_method_names,
            self._metrics,
            self._offload,
            entrypoint,
            runs_ready_batches,
            self.limits,
        )

    @contextmanager
    def _leased(self, api: str, ref: ModelRef, requests: int = 1) -> Iterator[Servable]:
        """Lease the version a request addresses; with metrics, count it and time it.

        A plan for several coalesced requests counts each of them when it succeeds; when it
        fails the front end serves them one by one, and those runs count them."""
        if self._metrics is None:
            with self.manager.lease(ref.name, ref.version, ref.label) as servable:
                yield servable
            return
        start = time.perf_counter()
        version: int | None = None
        status = Code.OK
        try:
            with self.manager.lease(ref.name, ref.version, ref.label) as servable:
                version = servable.version
                yield servable
        except ServingError as exc:
            status = exc.code
            raise
        except GeneratorExit:  # a submitted plan whose caller went away
            status = Code.CANCELLED
            raise
        except BaseException:
            status = Code.INTERNAL
            raise
        finally:
            elapsed = time.perf_counter() - start
            if requests == 1 or status is Code.OK:
                self._metrics.record_request(
                    self._model_label(ref.name, version),
                    version,
                    api,
                    status,
                    elapsed,
                    self._entrypoint,
                    requests,
                )

    def _model_label(self, name: str, version: int | None) -> str:
        """A served or configured model's own name; any other name (a client's typo or a
        flood of random ones) shares UNKNOWN_MODEL, so metrics stay bounded."""
        if version is not None or self.manager.is_configured(name):
            return name
        return UNKNOWN_MODEL

    def run(self, plan: Plan[Result]) -> Result:
        """Drive a plan with blocking model calls, in the caller's thread (warmup)."""
        try:
            call = next(plan)
            while True:
                call = self._call_now(plan, call)
        except StopIteration as done:
            return done.value

    def submit(self, plan: Plan[Result], answer: Callable[[Result], Answer]) -> Future[Answer]:
        """Drive a plan without ever blocking the calling thread (a front end's dispatcher).

        A direct call runs inline or on the offload threads as `Offload.place` decides (by
        the signature's typical call time and whether a core is idle); a batched or offloaded
        call is waited for by callback, and the plan resumes in the thread that finished it.
        `answer` turns the plan's result into the reply in that same thread. Cancelling the returned
        future cancels the model call it waits on, so a batch drops a caller who went away.
        """
        pending: PendingAnswer[Answer] = PendingAnswer()
        self._advance(plan, answer, pending, None)
        return pending

    def _advance(
        self,
        plan: Plan[Result],
        answer: Callable[[Result], Answer],
        pending: PendingAnswer[Answer],
        step: Future[Outputs] | None,
    ) -> None:
        try:
            call = _resume(plan, step)
            while (started := self._start(call)) is None:
                call = self._call_now(plan, call)
            pending.step = started
            pending.step.add_done_callback(lambda done: self._advance(plan, answer, pending, done))
        except StopIteration as done:
            pending.settle(answer, done.value)
        except BaseException as exc:
            pending.fail(exc)

    def _call_now(self, plan: Plan[Result], call: ModelCall) -> ModelCall:
        """Run one model call in this thread and feed its outputs (or error) to the plan."""
        run = self._run
        trace = tracing.active()
        if trace is not None:
            run = trace.timed("model", run)
        try:
            outputs = run(call.servable, call.signature, call.feeds, call.output_keys)
        except Exception as exc:
            return plan.throw(exc)
        return plan.send(outputs)

    def _start(self, call: ModelCall) -> Future[Outputs] | None:
        """The call started elsewhere (batcher or offload thread), or None: run it here."""
        args = (call.servable, call.signature, call.feeds, call.output_keys)
        if self._submit is not None:
            # A fast batch that need not wait may run in this thread (the batcher decides).
            fast = call.signature.typical_seconds < SLOW_CALL_SECONDS
            run_here = self._runs_ready_batches and fast
            return self._submit(*args, requests=call.requests, run_here=run_here)
        if self._offload is None:
            return None
        trace = tracing.active()
        run = self._run if trace is None else trace.timed("model", self._run)
        return self._offload.place(call.signature.typical_seconds, run, *args)

    def predict(
        self,
        ref: ModelRef,
        signature_name: str,
        decode_inputs: InputDecoder,
        output_filter: Sequence[str] = (),
    ) -> Prediction:
        return self.run(self.predict_plan(ref, signature_name, decode_inputs, output_filter))

    def classify(self, ref: ModelRef, signature_name: str, examples: Examples) -> Classification:
        return self.run(self.classify_plan(ref, signature_name, examples))

    def regress(self, ref: ModelRef, signature_name: str, examples: Examples) -> Regression:
        return self.run(self.regress_plan(ref, signature_name, examples))

    def multi_inference(
        self, tasks: Sequence[InferenceTask], examples: Examples
    ) -> list[InferenceResult]:
        return self.run(self.multi_inference_plan(tasks, examples))

    def predict_plan(
        self,
        ref: ModelRef,
        signature_name: str,
        decode_inputs: InputDecoder,
        output_filter: Sequence[str] = (),
        requests: int = 1,
    ) -> Plan[Prediction]:
        """Run a signature; inputs are decoded against the resolved signature's specs.

        `requests` > 1: `decode_inputs` gives that many equal-sized requests to the same
        model, signature and outputs, merged along dimension 0 (see `ModelCall.requests`)."""
        key = signature_name or DEFAULT_SIGNATURE
        with self._leased("Predict", ref, requests) as servable:
            signature = servable.signature(key)
            if self._check_method_names and signature.method_name not in _PREDICTABLE_METHODS:
                raise ServingError(
                    Code.INTERNAL,
                    "Expected prediction signature method_name to be one of {"
                    f"{', '.join(_PREDICTABLE_METHODS)}}}. Was: {signature.method_name}",
                )
            feeds = decode_inputs(signature.inputs)
            outputs = yield ModelCall(servable, signature, feeds, output_filter, requests)
            self.limits.check_response(outputs, requests)
            return Prediction(Resolved(servable.name, servable.version, key), outputs)

    def classify_plan(
        self, ref: ModelRef, signature_name: str, examples: Examples
    ) -> Plan[Classification]:
        key = signature_name or DEFAULT_SIGNATURE
        with self._leased("Classify", ref) as servable:
            signature = _named(servable, key, "No signature was found with the name: ")
            wanted = _classification_outputs(servable, signature, self._check_method_names)
            return (yield from _classify(servable, signature, wanted, examples, self.limits))

    def regress_plan(
        self, ref: ModelRef, signature_name: str, examples: Examples
    ) -> Plan[Regression]:
        key = signature_name or DEFAULT_SIGNATURE
        with self._leased("Regress", ref) as servable:
            signature = _named(servable, key, "No signature was found with the name: ")
            _check_regression(servable, signature, self._check_method_names)
            return (yield from _regress(servable, signature, examples, self.limits))

    def multi_inference_plan(
        self, tasks: Sequence[InferenceTask], examples: Examples
    ) -> Plan[list[InferenceResult]]:
        """Run several classify/regress signatures of ONE model version on the same examples.

        Every task is checked before any runs, as TF Serving's multi_inference.cc does."""
        with self._leased("MultiInference", _first_ref(tasks)) as servable:
            seen: set[str] = set()
            model = tasks[0].ref.name
            checked = [self._checked_task(servable, task, model, seen) for task in tasks]
            results: list[InferenceResult] = []
            for signature, wanted in checked:
                if wanted is None:
                    results.append(
                        (yield from _regress(servable, signature, examples, self.limits))
                    )
                else:
                    results.append(
                        (yield from _classify(servable, signature, wanted, examples, self.limits))
                    )
            return results

    def _checked_task(
        self, servable: Servable, task: InferenceTask, model: str, seen: set[str]
    ) -> tuple[Signature, list[str] | None]:
        """A task's signature and, for classify, the outputs it reads (None: regress).
        `model`: the first task's model name; `seen`: the signatures earlier tasks named."""
        key = _task_signature(task, model, seen)
        signature = _named(servable, key, "Requested signature not found in model graph: ")
        if task.method_name == CLASSIFY_METHOD:
            return signature, _classification_outputs(servable, signature, self._check_method_names)
        if task.method_name == REGRESS_METHOD:
            _check_regression(servable, signature, self._check_method_names)
            return signature, None
        raise ServingError(
            Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}"
        )

    def metadata(self, ref: ModelRef) -> tuple[Resolved, Mapping[str, meta_graph_pb2.SignatureDef]]:
        """The resolved version and its SignatureDefs, for GetModelMetadata."""
        with self._leased("GetModelMetadata", ref) as servable:
            return Resolved(servable.name, servable.version, ""), servable.signature_defs


def _named(servable: Servable, key: str, missing: str) -> Signature:
    """The signature `key`; `missing` + key (INVALID_ARGUMENT) when it is not exported."""
    signature = servable.signatures.get(key)
    if signature is None:
        raise errors.invalid_argument(f"{missing}{key}")
    return signature


def _signature_text(servable: Servable, signature: Signature) -> str:
    """The SignatureDef as TF Serving's messages print it (protobuf text format)."""
    return text_format.MessageToString(servable.signature_defs[signature.key])


def _check_method(signature: Signature, check: bool, method: str, kind: str) -> None:
    if check and signature.method_name != method:
        raise errors.invalid_argument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )


def _classification_outputs(servable: Servable, signature: Signature, check: bool) -> list[str]:
    """TF Serving's PreProcessClassification: the checks a signature must pass to classify,
    and the outputs to fetch ("classes" and/or "scores")."""
    _check_method(signature, check, CLASSIFY_METHOD, "classification")
    if len(signature.inputs) != 1:
        raise errors.invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise errors.invalid_argument(
            f"Expected one or two output Tensors, found {len(signature.outputs)}"
        )
    if EXAMPLES_INPUT not in signature.inputs:
        raise errors.invalid_argument(
            "No classification inputs found in SignatureDef: "
            + _signature_text(servable, signature)
        )
    wanted = [k for k in ("classes", "scores") if k in signature.outputs]
    if not wanted:
        raise errors.invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes"'
            ' or "scores". Signature was: ' + _signature_text(servable, signature)
        )
    return wanted


def _check_regression(servable: Servable, signature: Signature, check: bool) -> None:
    """TF Serving's PreProcessRegression: the checks a signature must pass to regress."""
    _check_method(signature, check, REGRESS_METHOD, "regression")
    if len(signature.inputs) != 1:
        raise errors.invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise errors.invalid_argument("Expected one output Tensor.")
    if EXAMPLES_INPUT not in signature.inputs:
        raise errors.invalid_argument(
            "No regression inputs found in SignatureDef: " + _signature_text(servable, signature)
        )
    if REGRESSION_OUTPUT not in signature.outputs:
        raise errors.invalid_argument(
            "No regression outputs found in SignatureDef: " + _signature_text(servable, signature)
        )


def _classify(
    servable: Servable,
    signature: Signature,
    wanted: list[str],
    examples: Examples,
    limits: RequestLimits,
) -> Plan[Classification]:
    """Feed the serialized examples, check the outputs as PostProcessClassificationResult."""
    examples.check(limits)
    batch = examples.tensor()
    outputs = yield ModelCall(servable, signature, {EXAMPLES_INPUT: batch}, wanted)
    limits.check_response(outputs)
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    if classes is not None:
        _check_classification_output("classes", classes, np.object_, len(batch))
    if scores is not None:
        _check_classification_output("scores", scores, np.float32, len(batch))
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise errors.invalid_argument(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    resolved = Resolved(servable.name, servable.version, signature.key)
    return Classification(resolved, classes, scores)


def _regress(
    servable: Servable, signature: Signature, examples: Examples, limits: RequestLimits
) -> Plan[Regression]:
    """Feed the serialized examples, check the output as PostProcessRegressionResult."""
    examples.check(limits)
    batch = examples.tensor()
    outputs = yield ModelCall(servable, signature, {EXAMPLES_INPUT: batch}, [REGRESSION_OUTPUT])
    limits.check_response(outputs)
    values = outputs[REGRESSION_OUTPUT]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise errors.invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got {_shape_text(values)}"
        )
    if values.shape[0] != len(batch):
        raise errors.invalid_argument(
            f"Input batch size did not match output batch size: {len(batch)} vs. {values.shape[0]}"
        )
    if values.dtype != np.float32:
        raise errors.invalid_argument(
            f"Expected output Tensor of DT_FLOAT.  Got: {datatype_of(values.dtype)}"
        )
    resolved = Resolved(servable.name, servable.version, signature.key)
    return Regression(resolved, values.reshape(-1))


def _check_classification_output(
    name: str, value: np.ndarray, dtype: type, batch_size: int
) -> None:
    if value.ndim != 2:
        raise errors.invalid_argument(
            f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(value)}"
        )
    if value.dtype != dtype:
        expected = "DT_STRING" if dtype is np.object_ else "DT_FLOAT"
        raise errors.invalid_argument(
            f"Expected {name} Tensor of {expected}. Got: {datatype_of(value.dtype)}"
        )
    if value.shape[0] != batch_size:
        raise errors.invalid_argument(
            f"Expected {name} output batch size of {batch_size}. Got: {value.shape[0]}"
        )


def _shape_text(value: np.ndarray) -> str:
    """A shape as TensorFlow's TensorShape::DebugString prints it: [2,3]."""
    return f"[{','.join(map(str, value.shape))}]"


def _first_ref(tasks: Sequence[InferenceTask]) -> ModelRef:
    """The version every task runs on: the first task's (TF Serving leases that one and
    never compares the others' versions); no task at all names no model."""
    if not tasks or not tasks[0].ref.name:
        raise errors.invalid_argument("ModelSpec has no name specified.")
    return tasks[0].ref


def _task_signature(task: InferenceTask, model: str, seen: set[str]) -> str:
    """The task's signature key, once it is known to name `model` and a signature no
    earlier task named (added to `seen`)."""
    if not task.ref.name:
        raise errors.invalid_argument("Found ModelSpec with an empty model name.")
    if task.ref.name != model:
        raise errors.invalid_argument(
            "All ModelSpecs in a MultiInferenceRequest must access the same model name."
        )
    key = task.signature_name or DEFAULT_SIGNATURE
    if key in seen:
        raise errors.invalid_argument(f"Duplicate evaluation of signature: {key}")
    seen.add(key)
    return key
