"""The TensorFlow Serving protos a REST call stands for, for the request log.

A REST call is logged as the PredictionLog a gRPC client sending the same request would have
produced, so logs from both APIs read, and replay as warmup, alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from dataplane import tensors
from dataplane.grpc_service import fill_classification, fill_model_spec, fill_regression
from dataplane.inference import Classification, Examples, ModelRef, Prediction, Regression


def fill_spec(spec: model_pb2.ModelSpec, ref: ModelRef, signature_name: str) -> None:
    """The ModelSpec the REST path and body named."""
    spec.name = ref.name
    if ref.version is not None:
        spec.version.value = ref.version
    elif ref.label is not None:
        spec.version_label = ref.label
    if signature_name:
        spec.signature_name = signature_name


def predict_pair(
    ref: ModelRef, signature_name: str, inputs: Mapping[str, np.ndarray], prediction: Prediction
) -> tuple[predict_pb2.PredictRequest, predict_pb2.PredictResponse]:
    request = predict_pb2.PredictRequest()
    fill_spec(request.model_spec, ref, signature_name)
    for alias, array in inputs.items():
        tensors.fill_tensor_proto(request.inputs[alias], array, as_tensor_content=True)
    response = predict_pb2.PredictResponse()
    fill_model_spec(response.model_spec, prediction.resolved)
    for alias, array in prediction.outputs.items():
        tensors.fill_tensor_proto(response.outputs[alias], array, as_tensor_content=True)
    return request, response


def fill_input(target: input_pb2.Input, examples: Examples) -> None:
    """The Input an Examples came from (the REST body's examples and optional context)."""
    if examples.context_proto is not None:
        with_context = target.example_list_with_context
        with_context.examples.extend(examples.protos)
        with_context.context.CopyFrom(examples.context_proto)
    else:
        target.example_list.examples.extend(examples.protos)


@dataclass(frozen=True)
class ExamplesProtos:
    """The request and response of one examples API (Classify or Regress) and how its result
    fills the response: all that tells the two apart in a log record."""

    request: Callable[[], Any]
    response: Callable[[], Any]
    fill_result: Callable[[Any, Any], None]


CLASSIFY = ExamplesProtos(
    classification_pb2.ClassificationRequest,
    classification_pb2.ClassificationResponse,
    fill_classification,
)
REGRESS = ExamplesProtos(
    regression_pb2.RegressionRequest, regression_pb2.RegressionResponse, fill_regression
)


def examples_pair(
    protos: ExamplesProtos,
    ref: ModelRef,
    signature_name: str,
    examples: Examples,
    result: Classification | Regression,
) -> tuple[Any, Any]:
    """The ClassificationRequest/Response or RegressionRequest/Response pair of a call."""
    request = protos.request()
    fill_spec(request.model_spec, ref, signature_name)
    fill_input(request.input, examples)
    response = protos.response()
    fill_model_spec(response.model_spec, result.resolved)
    protos.fill_result(response.result, result)
    return request, response
