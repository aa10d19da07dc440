"""ServingMetrics exposition and the per-request recording inside InferenceService."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dataplane import errors
from dataplane.errors import Code, ServingError
from dataplane.inference import InferenceService, ModelRef
from dataplane.metrics import (
    DEFAULT_PATH,
    UNKNOWN_MODEL,
    RepeatableHistogram,
    ServingMetrics,
    prometheus_path,
    read_monitoring_config,
)
from tests.dataplane.test_batching import FakeSignature


class FakeServable:
    def __init__(self, name: str, version: int) -> None:
        self.name = name
        self.version = version
        self.signature_defs: dict = {}
        self._signature = FakeSignature()

    def signature(self, key: str) -> FakeSignature:
        if key != "serving_default":
            raise errors.failed_precondition(f'Serving signature key "{key}" not found.')
        return self._signature


class FakeManager:
    """Serves model "m" version 7 only; "loading" is configured too but not available yet."""

    def __init__(self) -> None:
        self.servable = FakeServable("m", 7)

    @contextmanager
    def lease(self, name: str, version: int | None = None, label: str | None = None) -> Iterator:
        if name != "m":
            raise errors.not_found(f"Servable not found for request: Latest({name})")
        yield self.servable

    def is_configured(self, name: str) -> bool:
        return name in ("m", "loading")


Samples = dict[tuple[str, frozenset], float]


def samples(metrics: ServingMetrics) -> Samples:
    """Every sample of the exposition, parsed back with prometheus-client's own parser.

    That parser renames counter samples to `<name>_total`; we key them by the name actually
    exported (checked verbatim in `test_counters_keep_tf_serving_names_without_total_suffix`).
    """
    parsed = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            name = family.name if family.type == "counter" else sample.name
            parsed[(name, frozenset(sample.labels.items()))] = sample.value
    return parsed


def value(got: Samples, name: str, **labels: str) -> float:
    return got[(name, frozenset(labels.items()))]


def test_requests_are_counted_per_model_version_api_and_status() -> None:
    metrics = ServingMetrics()
    service = InferenceService(FakeManager(), metrics=metrics)  # type: ignore[arg-type]
    x = {"x": np.ones((1, 2), np.float32)}
    for _ in range(3):
        service.predict(ModelRef("m"), "", lambda specs: x)
    with pytest.raises(ServingError):
        service.predict(ModelRef("m"), "nope", lambda specs: x)
    for name in ("absent", "also-absent", "loading"):
        with pytest.raises(ServingError):
            service.predict(ModelRef(name), "", lambda specs: x)
    service.metadata(ModelRef("m"))
    got = samples(metrics)
    tf_count = ":tensorflow:serving:request_count"
    assert value(got, tf_count, model_name="m", status="OK") == 4
    assert value(got, tf_count, model_name="m", status="FAILED_PRECONDITION") == 1
    assert value(got, tf_count, model_name="loading", status="NOT_FOUND") == 1
    # names no config lists share one label value, so clients cannot grow the page
    assert value(got, tf_count, model_name=UNKNOWN_MODEL, status="NOT_FOUND") == 2
    assert not any("absent" in dict(labels).values() for _, labels in got)
    count = ":modelplane:request_count"
    assert value(got, count, model_name="m", model_version="7", API="Predict", status="OK") == 3
    assert (
        value(got, count, model_name="m", model_version="7", API="GetModelMetadata", status="OK")
        == 1
    )
    unknown = {"model_name": UNKNOWN_MODEL, "model_version": "", "API": "Predict"}
    assert value(got, count, **unknown, status="NOT_FOUND") == 2
    latency = ":tensorflow:serving:request_latency_count"
    assert value(got, latency, model_name="m", API="Predict", entrypoint="") == 4
    seconds = ":modelplane:request_latency_seconds_count"
    assert value(got, seconds, model_name="m", model_version="7", API="Predict", status="OK") == 3


def test_request_latency_is_in_microseconds() -> None:
    metrics = ServingMetrics()
    metrics.record_request("m", 1, "Predict", Code.OK, 0.25)
    got = samples(metrics)
    assert value(
        got, ":tensorflow:serving:request_latency_sum", model_name="m", API="Predict", entrypoint=""
    ) == pytest.approx(250_000)
    rich = {"model_name": "m", "model_version": "1", "API": "Predict", "status": "OK"}
    assert value(got, ":modelplane:request_latency_seconds_sum", **rich) == pytest.approx(0.25)


def test_coalesced_requests_count_one_each_with_their_shared_latency() -> None:
    metrics = ServingMetrics()
    metrics.record_request("m", 1, "Predict", Code.OK, 0.002, "GRPC", requests=3)
    got = samples(metrics)
    assert value(got, ":tensorflow:serving:request_count", model_name="m", status="OK") == 3
    latency = {"model_name": "m", "API": "Predict", "entrypoint": "GRPC"}
    assert value(got, ":tensorflow:serving:request_latency_count", **latency) == 3
    assert value(got, ":tensorflow:serving:request_latency_sum", **latency) == pytest.approx(6000)
    rich = {"model_name": "m", "model_version": "1", "API": "Predict", "status": "OK"}
    assert value(got, ":modelplane:request_count", **rich) == 3


@pytest.mark.parametrize("amount", [0.0, 3.0, 10.0, 10.5, 18.0, 1e9])  # on, between, past bounds
def test_a_repeated_observation_is_the_same_as_observing_each_time(amount: float) -> None:
    def exposition(record) -> str:
        registry = CollectorRegistry()
        histogram = RepeatableHistogram("h", "doc", ["k"], buckets=(10, 18), registry=registry)
        record(histogram.labels("v"))
        return generate_latest(registry).decode()

    def one_by_one(child: RepeatableHistogram) -> None:
        for _ in range(5):
            child.observe(amount)

    repeated = exposition(lambda child: child.observe_repeated(amount, 5))
    assert repeated == exposition(one_by_one)
    assert 'h_count{k="v"} 5.0' in repeated


def test_counters_keep_tf_serving_names_without_total_suffix() -> None:
    metrics = ServingMetrics()
    metrics.record_request("m", 1, "Predict", Code.OK, 0.001)
    text = metrics.exposition().decode()
    assert "# TYPE :tensorflow:serving:request_count counter\n" in text
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 1.0\n' in text
    assert "request_count_total" not in text


def test_label_values_are_escaped() -> None:
    metrics = ServingMetrics()
    metrics.record_unload('we"ird\\name')
    text = metrics.exposition().decode()
    assert ':modelplane:model_unload_count{model_name="we\\"ird\\\\name"} 1.0' in text
    unloads = value(samples(metrics), ":modelplane:model_unload_count", model_name='we"ird\\name')
    assert unloads == 1


def test_load_warmup_and_unload_are_recorded() -> None:
    metrics = ServingMetrics()
    metrics.record_load("m", Code.OK, 1.5)
    metrics.record_load("m", Code.INVALID_ARGUMENT, 0.5)
    metrics.record_warmup("/models/m/1", Code.OK, 0.002)
    metrics.record_unload("m")
    got = samples(metrics)
    loads = ":modelplane:model_load_count"
    assert value(got, loads, model_name="m", status="OK") == 1
    assert value(got, loads, model_name="m", status="INVALID_ARGUMENT") == 1
    assert (
        value(got, ":modelplane:model_load_latency_seconds_sum", model_name="m", status="OK") == 1.5
    )
    warmup = ":tensorflow:serving:model_warmup_latency_sum"
    assert value(got, warmup, model_path="/models/m/1", status="OK") == pytest.approx(2000)
    assert value(got, ":modelplane:model_unload_count", model_name="m") == 1


def test_monitoring_config_in_tf_serving_format(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.config"
    path.write_text('prometheus_config { enable: true, path: "/metrics" }')
    assert prometheus_path(read_monitoring_config(str(path))) == "/metrics"
    path.write_text("prometheus_config { enable: true }")
    assert prometheus_path(read_monitoring_config(str(path))) == DEFAULT_PATH
    path.write_text('prometheus_config { enable: false, path: "/metrics" }')
    assert prometheus_path(read_monitoring_config(str(path))) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prometheus_config { enabled: true }", "Invalid monitoring config file {path}: "),
        (
            'prometheus_config { enable: true, path: "metrics" }',
            "prometheus_config.path must start with '/': 'metrics'",
        ),
    ],
)
def test_bad_monitoring_config_is_invalid_argument(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    with pytest.raises(ServingError) as caught:
        prometheus_path(read_monitoring_config(str(path)))
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert caught.value.message.startswith(message.format(path=path))
