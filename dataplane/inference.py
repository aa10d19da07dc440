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
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, InvalidStateError
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from dataplane import errors
from dataplane.errors import Code, ServingError
from dataplane.manager import ModelManager
from dataplane.metrics import UNKNOWN_MODEL
from dataplane.servable import Servable, Signature
from dataplane.signatures import TensorSpec, dtype_name

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# A direct model call this fast runs on the front end's dispatcher; slower ones go to the
# offload pool.
INLINE_CALL_SECONDS = 0.002

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
    """

    serialized: Sequence[bytes]
    context: bytes = b""

    def tensor(self) -> np.ndarray:
        if not self.serialized:
            raise errors.invalid_argument("Input is empty.")
        items = [self.context + e for e in self.serialized] if self.context else self.serialized
        return np.array(items, dtype=object)


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
        check_predict_method: bool = False,
        metrics: RequestMetrics | None = None,
        offload: Executor | None = None,
        entrypoint: str = "",
        runs_ready_batches: bool = False,
    ) -> None:
        self.manager = manager
        self._offload = offload
        self._run = runner
        # A runner with `submit` (the batcher) can hand back a future instead of blocking.
        self._submit: Callable[..., Future[Outputs]] | None = getattr(runner, "submit", None)
        self._check_predict_method = check_predict_method
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
            self._check_predict_method,
            self._metrics,
            self._offload,
            entrypoint,
            runs_ready_batches,
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

        A direct call runs inline when the signature is typically fast (a thread hop would
        cost more than the call); a batched call, or a slow one (on the offload pool), is
        waited for by callback, and the plan resumes in the thread that finished it. `answer`
        turns the plan's result into the reply in that same thread. Cancelling the returned
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
            while self._runs_inline(call):
                call = self._call_now(plan, call)
            pending.step = self._start(call)
            pending.step.add_done_callback(lambda done: self._advance(plan, answer, pending, done))
        except StopIteration as done:
            pending.settle(answer, done.value)
        except BaseException as exc:
            pending.fail(exc)

    def _call_now(self, plan: Plan[Result], call: ModelCall) -> ModelCall:
        """Run one model call in this thread and feed its outputs (or error) to the plan."""
        try:
            outputs = self._run(call.servable, call.signature, call.feeds, call.output_keys)
        except Exception as exc:
            return plan.throw(exc)
        return plan.send(outputs)

    def _start(self, call: ModelCall) -> Future[Outputs]:
        args = (call.servable, call.signature, call.feeds, call.output_keys)
        if self._submit is not None:
            # A fast batch that need not wait may run in this thread (the batcher decides).
            fast = call.signature.typical_seconds < INLINE_CALL_SECONDS
            run_here = self._runs_ready_batches and fast
            return self._submit(*args, requests=call.requests, run_here=run_here)
        assert self._offload is not None, "only calls _runs_inline refused come here"
        return self._offload.submit(self._run, *args)

    def _runs_inline(self, call: ModelCall) -> bool:
        if self._submit is not None:
            return False
        return self._offload is None or call.signature.typical_seconds < INLINE_CALL_SECONDS

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
            if self._check_predict_method:
                _require_method(signature, PREDICT_METHOD, "prediction")
            feeds = decode_inputs(signature.inputs)
            outputs = yield ModelCall(servable, signature, feeds, output_filter, requests)
            return Prediction(Resolved(servable.name, servable.version, key), outputs)

    def classify_plan(
        self, ref: ModelRef, signature_name: str, examples: Examples
    ) -> Plan[Classification]:
        key = signature_name or DEFAULT_SIGNATURE
        with self._leased("Classify", ref) as servable:
            return (yield from _classify(servable, servable.signature(key), examples))

    def regress_plan(
        self, ref: ModelRef, signature_name: str, examples: Examples
    ) -> Plan[Regression]:
        key = signature_name or DEFAULT_SIGNATURE
        with self._leased("Regress", ref) as servable:
            return (yield from _regress(servable, servable.signature(key), examples))

    def multi_inference_plan(
        self, tasks: Sequence[InferenceTask], examples: Examples
    ) -> Plan[list[InferenceResult]]:
        """Run several classify/regress signatures of ONE model version on the same examples."""
        ref = _common_ref(tasks)
        with self._leased("MultiInference", ref) as servable:
            results: list[InferenceResult] = []
            for task in tasks:
                signature = servable.signature(task.signature_name or DEFAULT_SIGNATURE)
                if task.method_name == CLASSIFY_METHOD:
                    results.append((yield from _classify(servable, signature, examples)))
                elif task.method_name == REGRESS_METHOD:
                    results.append((yield from _regress(servable, signature, examples)))
                else:
                    raise errors.invalid_argument(
                        f"Unsupported signature method_name: {task.method_name}"
                    )
            return results

    def metadata(self, ref: ModelRef) -> tuple[Resolved, Mapping[str, meta_graph_pb2.SignatureDef]]:
        """The resolved version and its SignatureDefs, for GetModelMetadata."""
        with self._leased("GetModelMetadata", ref) as servable:
            return Resolved(servable.name, servable.version, ""), servable.signature_defs


def _classify(servable: Servable, signature: Signature, examples: Examples) -> Plan[Classification]:
    _require_method(signature, CLASSIFY_METHOD, "classification")
    input_alias = _single_input(signature)
    wanted = [k for k in ("classes", "scores") if k in signature.outputs]
    if not wanted:
        raise errors.invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes"'
            ' or "scores".'
        )
    batch = examples.tensor()
    outputs = yield ModelCall(servable, signature, {input_alias: batch}, wanted)
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    if classes is not None:
        _check_output(signature.outputs["classes"], classes, types_pb2.DT_STRING, len(batch))
    if scores is not None:
        _check_output(signature.outputs["scores"], scores, types_pb2.DT_FLOAT, len(batch))
    resolved = Resolved(servable.name, servable.version, signature.key)
    return Classification(resolved, _as_matrix(classes), _as_matrix(scores))


def _regress(servable: Servable, signature: Signature, examples: Examples) -> Plan[Regression]:
    _require_method(signature, REGRESS_METHOD, "regression")
    input_alias = _single_input(signature)
    if "outputs" not in signature.outputs:
        raise errors.invalid_argument('Expected regression signature outputs to contain "outputs".')
    batch = examples.tensor()
    values = (yield ModelCall(servable, signature, {input_alias: batch}, ["outputs"]))["outputs"]
    _check_output(signature.outputs["outputs"], values, types_pb2.DT_FLOAT, len(batch))
    if (values.ndim == 2 and values.shape[1] != 1) or values.ndim > 2:
        raise errors.invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got [{','.join(map(str, values.shape))}]"
        )
    resolved = Resolved(servable.name, servable.version, signature.key)
    return Regression(resolved, values.reshape(-1))


def _require_method(signature: Signature, method: str, kind: str) -> None:
    if signature.method_name != method:
        raise errors.invalid_argument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )


def _single_input(signature: Signature) -> str:
    if len(signature.inputs) != 1:
        raise errors.invalid_argument("Expected one input Tensor.")
    return next(iter(signature.inputs))


def _check_output(spec: TensorSpec, value: np.ndarray, dtype: int, batch_size: int) -> None:
    if spec.dtype != dtype:
        raise errors.invalid_argument(
            f"Expected {spec.alias} Tensor of DT_{dtype_name(dtype).upper()}. "
            f"Got: DT_{dtype_name(spec.dtype).upper()}"
        )
    if value.ndim == 0 or value.shape[0] != batch_size:
        got = value.shape[0] if value.ndim else 0
        raise errors.invalid_argument(
            f"Input batch size did not match output batch size: {batch_size} vs. {got}"
        )


def _as_matrix(value: np.ndarray | None) -> np.ndarray | None:
    """Classes/scores as [batch, num_classes]; a [batch] output is one class per example."""
    if value is None or value.ndim == 2:
        return value
    if value.ndim == 1:
        return value.reshape(-1, 1)
    raise errors.invalid_argument(
        "Expected Tensor shape: [batch_size num_classes] but got "
        f"[{','.join(map(str, value.shape))}]"
    )


def _common_ref(tasks: Sequence[InferenceTask]) -> ModelRef:
    if not tasks:
        raise errors.invalid_argument("MultiInferenceRequest must have at least one task")
    first = tasks[0].ref
    seen: set[str] = set()
    for task in tasks:
        if task.ref.name != first.name:
            raise errors.invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        if task.ref != first:
            raise errors.invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model version."
            )
        key = task.signature_name or DEFAULT_SIGNATURE
        if key in seen:
            raise errors.invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
    return first
