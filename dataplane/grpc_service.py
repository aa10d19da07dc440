"""gRPC translation: TensorFlow Serving's PredictionService and ModelService, plus our own.

Each handler takes the official request message, calls the protocol-free core and builds the
official response; `ServingError`s become the status codes TF Serving returns (grpc_server.py
writes them). Inference handlers never block the dispatcher: they hand their plan to the core's
`submit` and return the Future of the response, which is ready at once for a fast direct call.
`serving_routes` binds every handler to its method path.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np
from grpc_health.v1 import health_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2,
    predict_pb2,
    prediction_service_pb2,
    regression_pb2,
)

from dataplane import errors, tensors
from dataplane.batching import split_outputs
from dataplane.config import ModelServerConfig
from dataplane.errors import Code, ServingError
from dataplane.grpc_server import Joint, Routes, service_routes
from dataplane.health import HealthService
from dataplane.inference import (
    Classification,
    Examples,
    InferenceResult,
    InferenceService,
    InferenceTask,
    ModelRef,
    Prediction,
    Regression,
    Resolved,
)
from dataplane.info_service import InfoService
from dataplane.limits import RequestLimits
from dataplane.manager import ModelManager
from dataplane.reload_queue import ReloadQueue
from dataplane.request_log import RequestLogger, logging_answer, logging_group_answer
from dataplane.tracing import Tracing
from modelplane import info_pb2

SIGNATURE_DEF_FIELD = "signature_def"
Value = TypeVar("Value")

log = logging.getLogger(__name__)


def serving_routes(
    prediction: PredictionHandlers,
    models: ModelHandlers,
    info: InfoService,
    health: HealthService | None,
) -> Routes:
    """Every method the data plane serves; health only with --enable_grpc_healthcheck_service."""
    routes = {
        **service_routes(
            prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"],
            {
                "Predict": prediction.predict,
                "Classify": prediction.classify,
                "Regress": prediction.regress,
                "MultiInference": prediction.multi_inference,
                "GetModelMetadata": prediction.get_model_metadata,
            },
            coalescers={"Predict": prediction.coalesce_predicts} if prediction.coalesces else {},
        ),
        **service_routes(
            model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
            {
                "GetModelStatus": models.get_model_status,
                "HandleReloadConfigRequest": models.handle_reload_config_request,
            },
            admin={"HandleReloadConfigRequest"},
        ),
        **service_routes(
            info_pb2.DESCRIPTOR.services_by_name["DataPlaneInfo"],
            {"GetInfo": info.get_info},
            admin={"GetInfo"},  # every modelplane.* method is an admin call
        ),
    }
    if health is not None:
        routes.update(health_routes(health))
    return routes


def health_routes(health: HealthService) -> Routes:
    return service_routes(
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        {"Check": health.check, "Watch": health.watch},
    )


def model_ref(request: Any) -> ModelRef:
    """A request's ModelSpec as the core's ModelRef, refused as TF Serving refuses it: no
    ModelSpec at all (the *_impl.cc services), or one without a name (server_core.cc)."""
    if not request.HasField("model_spec"):
        raise errors.invalid_argument("Missing ModelSpec")
    if not request.model_spec.name:
        raise errors.invalid_argument("ModelSpec has no name specified.")
    return spec_ref(request.model_spec)


def spec_ref(spec: model_pb2.ModelSpec) -> ModelRef:
    """A ModelSpec as the core's ModelRef (version and version_label are a oneof)."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return ModelRef(spec.name, version=spec.version.value)
    if choice == "version_label":
        return ModelRef(spec.name, label=spec.version_label)
    return ModelRef(spec.name)


def fill_model_spec(spec: model_pb2.ModelSpec, resolved: Resolved) -> None:
    spec.name = resolved.name
    spec.version.value = resolved.version
    if resolved.signature_name:
        spec.signature_name = resolved.signature_name


def fill_classification(
    result: classification_pb2.ClassificationResult, classification: Classification
) -> None:
    classes, scores = classification.classes, classification.scores
    rows = len(classes) if classes is not None else len(scores)  # type: ignore[arg-type]
    for i in range(rows):
        out = result.classifications.add()
        width = classes.shape[1] if classes is not None else scores.shape[1]  # type: ignore[union-attr]
        for j in range(width):
            item = out.classes.add()
            if classes is not None:
                item.label = _as_text(classes[i, j])
            if scores is not None:
                item.score = float(scores[i, j])


def fill_regression(result: regression_pb2.RegressionResult, regression: Regression) -> None:
    for value in regression.values.tolist():
        result.regressions.add().value = value


def _as_text(label: object) -> str:
    return label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)


def _classification_response(
    classification: Classification,
) -> classification_pb2.ClassificationResponse:
    response = classification_pb2.ClassificationResponse()
    fill_model_spec(response.model_spec, classification.resolved)
    fill_classification(response.result, classification)
    return response


def _regression_response(regression: Regression) -> regression_pb2.RegressionResponse:
    response = regression_pb2.RegressionResponse()
    fill_model_spec(response.model_spec, regression.resolved)
    fill_regression(response.result, regression)
    return response


def _multi_inference_response(
    results: Sequence[InferenceResult],
) -> inference_pb2.MultiInferenceResponse:
    response = inference_pb2.MultiInferenceResponse()
    for result in results:
        out = response.results.add()
        fill_model_spec(out.model_spec, result.resolved)
        if isinstance(result, Classification):
            fill_classification(out.classification_result, result)
        else:
            fill_regression(out.regression_result, result)
    return response


class PredictionHandlers:
    """tensorflow.serving.PredictionService's calls: decode, run the core's plan, encode.

    With `coalesce` (server-side batching on), Predicts that arrive together and differ only
    in their tensor values are merged into one plan before they reach the batcher.
    """

    def __init__(
        self,
        service: InferenceService,
        tensor_content: bool,
        coalesce: bool = False,
        request_logs: RequestLogger | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._service = service
        self._tensor_content = tensor_content
        self.coalesces = coalesce
        self._logs = request_logs
        self._tracing = tracing or Tracing.off()

    def _logged(self, api: str, model: str, request: Any, answer: Callable) -> Callable:
        """`answer`, recording (request, response) when the request logger samples it."""
        return logging_answer(
            self._logs, model, api, answer, lambda _r, response: (request, response)
        )

    def predict(self, request: predict_pb2.PredictRequest) -> Future[predict_pb2.PredictResponse]:
        traced = self._tracing.begin_call("PredictionService/Predict")
        plan = self._service.predict_plan(
            model_ref(request),
            request.model_spec.signature_name,
            traced.timed(
                "decode", functools.partial(_decode_inputs, request.inputs, self._service.limits)
            ),
            request.output_filter,
        )
        answer = self._logged(
            "predict", request.model_spec.name, request, self._prediction_response
        )
        return traced.submit(lambda: self._service.submit(plan, traced.answer(answer)))

    def _prediction_response(self, prediction: Prediction) -> predict_pb2.PredictResponse:
        return self._response(prediction.resolved, prediction.outputs)

    def _response(
        self, resolved: Resolved, outputs: Mapping[str, np.ndarray]
    ) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse()
        fill_model_spec(response.model_spec, resolved)
        for alias, array in outputs.items():
            tensors.fill_tensor_proto(
                response.outputs[alias], array, as_tensor_content=self._tensor_content
            )
        return response

    def coalesce_predicts(self, requests: Sequence[predict_pb2.PredictRequest]) -> list[Joint]:
        """One plan per group of requests that differ only in their tensor values."""
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            key = coalescing_key(request)
            if key is not None:
                groups.setdefault(key, []).append(index)
        joints = []
        for members in groups.values():
            rows = batch_rows(requests[members[0]]) if len(members) > 1 else None
            if rows is not None:
                together = [requests[i] for i in members]
                joints.append(Joint(members, self._predict_together(together, rows)))
        return joints

    def _predict_together(
        self, requests: Sequence[predict_pb2.PredictRequest], rows: int
    ) -> Future[list[bytes]]:
        first = requests[0]
        plan = self._service.predict_plan(
            model_ref(first),
            first.model_spec.signature_name,
            functools.partial(_concatenated_inputs, requests, self._service.limits),
            first.output_filter,
            requests=len(requests),
        )
        answer = logging_group_answer(
            self._logs,
            first.model_spec.name,
            len(requests),
            functools.partial(self._split_responses, len(requests), rows),
            lambda index, serialized: (
                requests[index],
                predict_pb2.PredictResponse.FromString(serialized),
            ),
        )
        return self._service.submit(plan, answer)

    def _split_responses(self, count: int, rows: int, prediction: Prediction) -> list[bytes]:
        """Each coalesced request's own rows of every output, serialized. One response is
        built and then only its values are replaced per request: the model spec, names,
        dtypes and shapes are the same for all."""
        first, *others = split_outputs(prediction.outputs, [rows] * count, rows * count)
        response = self._response(prediction.resolved, first)
        serialized = [response.SerializeToString()]
        for outputs in others:
            for alias, array in outputs.items():
                tensors.replace_values(
                    response.outputs[alias], array, as_tensor_content=self._tensor_content
                )
            serialized.append(response.SerializeToString())
        return serialized

    def classify(
        self, request: classification_pb2.ClassificationRequest
    ) -> Future[classification_pb2.ClassificationResponse]:
        plan = self._service.classify_plan(
            model_ref(request),
            request.model_spec.signature_name,
            Examples.from_input(request.input),
        )
        answer = self._logged(
            "classify", request.model_spec.name, request, _classification_response
        )
        traced = self._tracing.begin_call("PredictionService/Classify")
        return traced.submit(lambda: self._service.submit(plan, traced.answer(answer)))

    def regress(
        self, request: regression_pb2.RegressionRequest
    ) -> Future[regression_pb2.RegressionResponse]:
        plan = self._service.regress_plan(
            model_ref(request),
            request.model_spec.signature_name,
            Examples.from_input(request.input),
        )
        answer = self._logged("regress", request.model_spec.name, request, _regression_response)
        traced = self._tracing.begin_call("PredictionService/Regress")
        return traced.submit(lambda: self._service.submit(plan, traced.answer(answer)))

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest
    ) -> Future[inference_pb2.MultiInferenceResponse]:
        tasks = [
            InferenceTask(spec_ref(t.model_spec), t.model_spec.signature_name, t.method_name)
            for t in request.tasks
        ]
        plan = self._service.multi_inference_plan(tasks, Examples.from_input(request.input))
        model = request.tasks[0].model_spec.name if request.tasks else ""
        answer = self._logged("multi_inference", model, request, _multi_inference_response)
        traced = self._tracing.begin_call("PredictionService/MultiInference")
        return traced.submit(lambda: self._service.submit(plan, traced.answer(answer)))

    def get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.metadata_field:
            raise errors.invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise errors.invalid_argument(f"Metadata field {field} is not supported")
        resolved, signature_defs = self._service.metadata(model_ref(request))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        fill_model_spec(response.model_spec, resolved)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


def coalescing_key(request: predict_pb2.PredictRequest) -> tuple | None:
    """What requests answered by one plan must share: model spec, output filter, and per
    input its dtype, shape and content size. None for a request whose values are not all in
    `tensor_content` (typed fields) or that names no model (its error is its own)."""
    inputs = request.inputs
    layout = []
    for alias in inputs:
        proto = inputs[alias]
        content = proto.tensor_content
        if not content:
            return None
        layout.append((alias, proto.dtype, proto.tensor_shape.SerializeToString(), len(content)))
    if not layout or not request.model_spec.name:
        return None
    layout.sort()
    return request.model_spec.SerializeToString(), tuple(request.output_filter), tuple(layout)


def batch_rows(request: predict_pb2.PredictRequest) -> int | None:
    """The dimension 0 all inputs share, or None when there is none to merge along (a rank-0
    input, an empty one, inputs that differ): such requests are served alone."""
    sizes = set()
    for proto in request.inputs.values():
        dims = proto.tensor_shape.dim
        sizes.add(dims[0].size if dims else 0)
    rows = sizes.pop()
    return rows if rows > 0 and not sizes else None


def _concatenated_inputs(
    requests: Sequence[predict_pb2.PredictRequest], limits: RequestLimits, _specs: Mapping
) -> dict[str, np.ndarray]:
    """The requests' inputs merged; they share shapes, so the first one's count is each one's
    (a refusal fails the group, whose requests are then served, and refused, one by one)."""
    first = requests[0].inputs
    limits.check_request(sum(_per_input(first, tensors.declared_elements).values()))
    return {
        alias: tensors.concatenated_ndarray([r.inputs[alias] for r in requests]) for alias in first
    }


def _decode_inputs(
    inputs: Mapping[str, tensor_pb2.TensorProto], limits: RequestLimits, _specs: Mapping
) -> dict[str, np.ndarray]:
    """Every input decoded, once their declared shapes together are known to be in bounds."""
    limits.check_request(sum(_per_input(inputs, tensors.declared_elements).values()))
    return _per_input(inputs, tensors.to_ndarray)


def _per_input(
    inputs: Mapping[str, tensor_pb2.TensorProto], read: Callable[[tensor_pb2.TensorProto], Value]
) -> dict[str, Value]:
    """`read` of each input; its error names the input, as TF Serving's do."""
    results = {}
    for alias, proto in inputs.items():
        try:
            results[alias] = read(proto)
        except ServingError as exc:
            raise ServingError(exc.code, f"tensor parsing error: {alias}: {exc.message}") from None
    return results


class ModelHandlers:
    """tensorflow.serving.ModelService's calls: status and whole-config reloads.

    Reloads go through a bounded queue (reload_queue.py): the dispatcher gets a Future at
    once, and a caller who leaves before its turn cancels it."""

    def __init__(
        self,
        manager: ModelManager,
        reloads: ReloadQueue[model_management_pb2.ReloadConfigResponse],
        on_applied: Callable[[ModelServerConfig], None] | None = None,
    ) -> None:
        """`on_applied` sees each config a reload applied (--last_config_file keeps it)."""
        self._manager = manager
        self._reloads = reloads
        self._on_applied = on_applied

    def get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise errors.invalid_argument("Missing ModelSpec")
        ref = spec_ref(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self._manager.model_status(ref.name, ref.version):
            out = response.model_version_status.add()
            out.version = status.version
            out.state = int(status.state)
            error = status.error
            out.status.error_code = int(error.code) if error else int(Code.OK)
            out.status.error_message = error.message if error else ""
        return response

    def handle_reload_config_request(
        self, request: model_management_pb2.ReloadConfigRequest
    ) -> Future[model_management_pb2.ReloadConfigResponse]:
        """A refused or failed reload is the call's own status, as model_service_impl.cc
        answers it (gRPC sends no response message with an error status, so a client sees
        the code and message on the RPC); a reload that worked answers an OK `status`.
        Reloads queue (bounded) behind the one being applied."""
        if request.config.WhichOneof("config") != "model_config_list":
            # An empty or custom config is no reload (a config file or the first config at
            # startup may be empty; a reload request may not).
            raise errors.invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported"
            )
        return self._reloads.submit(functools.partial(self._reload, request.config))

    def _reload(self, config: ModelServerConfig) -> model_management_pb2.ReloadConfigResponse:
        report = self._manager.apply_config(config)
        if report.code is not Code.OK:
            raise ServingError(report.code, report.message)
        log.info("Applied HandleReloadConfigRequest: %s", dict(report.models))
        if self._on_applied is not None:
            self._on_applied(config)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = int(Code.OK)
        return response
