"""Wires the data plane together: manager, inference core, gRPC and REST front ends.

Startup order matters: the initial config is applied (models loaded) before the ports open,
as tensorflow_model_server does, so the first request after start can already be served.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from dataplane import config as model_config
from dataplane import last_config, metrics, supervision
from dataplane.admin_auth import OPEN_WARNING, AdminTokenError, read_admin_auth
from dataplane.batching import BatchingConfig, BatchingRunner, read_batching_config
from dataplane.config import ModelServerConfig
from dataplane.errors import Code, ServingError
from dataplane.grpc_server import GrpcServer
from dataplane.grpc_service import ModelHandlers, PredictionHandlers, serving_routes
from dataplane.health import HealthService
from dataplane.inference import InferenceService, run_direct
from dataplane.info_service import InfoService
from dataplane.limits import RequestLimits
from dataplane.manager import LoadFn, ModelManager
from dataplane.offload import Offload, usable_cores
from dataplane.options import ServerOptions
from dataplane.reload_queue import ReloadQueue
from dataplane.request_log import LogSettings, RequestLogger
from dataplane.rest import ExtraRoute, RestServer
from dataplane.servable import SessionOptions, load_servable
from dataplane.tracing import Tracing
from dataplane.transport import Transport, select_transport
from dataplane.transport.tls import TlsConfig, TlsConfigError, read_ssl_config
from dataplane.warmup import PreparedLoader

log = logging.getLogger(__name__)

# TF Serving accepts messages of any size on gRPC; so do we unless told otherwise.
_DEFAULT_CHANNEL_ARGS: dict[str, int | str] = {
    "grpc.max_receive_message_length": -1,
    "grpc.max_send_message_length": -1,
}


class StartupError(Exception):
    """The server cannot start as configured (bad config file, port in use, ...).

    Printed as TF Serving's main prints a failed BuildAndStart: "<CODE>: <message>"."""

    def __init__(self, message: str, code: Code = Code.INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """--grpc_channel_arguments: comma-separated key=value pairs; ints stay ints."""
    merged: dict[str, int | str] = dict(_DEFAULT_CHANNEL_ARGS)
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise StartupError(f"--grpc_channel_arguments: expected key=value, got {pair!r}")
        merged[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return list(merged.items())


def batching_runner(
    options: ServerOptions, serving_metrics: metrics.ServingMetrics
) -> BatchingRunner | None:
    """--enable_batching with --batching_parameters_file (TF Serving's defaults without one)."""
    if not options.enable_batching:
        return None
    try:
        path = options.batching_parameters_file
        config = read_batching_config(path) if path else BatchingConfig()
    except ServingError as exc:
        raise StartupError(exc.message, exc.code) from None
    return BatchingRunner(config, serving_metrics)


def tls_config(options: ServerOptions) -> TlsConfig | None:
    """--ssl_config_file: TLS on both ports (checked before any model loads)."""
    if not options.ssl_config_file:
        return None
    try:
        return read_ssl_config(options.ssl_config_file)
    except TlsConfigError as exc:
        raise StartupError(str(exc)) from None


def grpc_transport(options: ServerOptions, tls: TlsConfig | None) -> Transport:
    """--grpc_transport with the TLS config and --grpc_max_pending_calls it gets."""
    return select_transport(
        options.grpc_transport,
        tls.transport_tuple() if tls is not None else None,
        options.grpc_max_pending_calls,
    )


def metrics_routes(
    options: ServerOptions, serving_metrics: metrics.ServingMetrics
) -> dict[str, ExtraRoute]:
    """The Prometheus path on the REST port when --monitoring_config_file enables it."""
    if not options.monitoring_config_file:
        return {}
    try:
        path = metrics.prometheus_path(
            metrics.read_monitoring_config(options.monitoring_config_file)
        )
    except ServingError as exc:
        raise StartupError(exc.message, exc.code) from None
    if path is None:
        return {}
    if not options.rest_api_port:
        log.warning("Prometheus metrics need the REST port; --rest_api_port is 0")
    return {path: lambda: (200, serving_metrics.exposition(), metrics.CONTENT_TYPE)}


def wide_loader(session_options: SessionOptions) -> LoadFn | None:
    """Loads a version with intra-op threads up to the cores, for models whose warmup calls
    are long; None when an intra-op flag decides or there is only one core."""
    cores = usable_cores()
    if not session_options.fitted_intra_op or cores == 1:
        return None
    wide = dataclasses.replace(session_options, intra_op_parallelism=cores)
    return functools.partial(load_servable, options=wide)


class DataPlane:
    """One data-plane process: owns the manager and both protocol servers."""

    def __init__(self, options: ServerOptions, tracing: Tracing | None = None) -> None:
        """`tracing`: where spans go (default: --tracing_otlp_endpoint's collector, or none)."""
        self.options = options
        self.metrics = metrics.ServingMetrics()
        self.tls = tls_config(options)
        self.batching = batching_runner(options, self.metrics)
        runner = self.batching or run_direct
        session_options = SessionOptions.from_server_options(options)
        load = PreparedLoader(
            functools.partial(load_servable, options=session_options),
            runner=runner,
            warmup=options.enable_model_warmup,
            warmup_iterations=options.num_request_iterations_for_warmup,
            per_model_batching=options.enable_per_model_batching_parameters,
            metrics=self.metrics,
            load_wide=wide_loader(session_options),
        )
        self.request_logs = RequestLogger(
            LogSettings(
                options.request_log_queue_size,
                options.request_log_max_file_bytes,
                options.request_log_max_file_seconds,
            ),
            self.metrics.registry,
        )
        self.manager = ModelManager(options, load, observers=(self.request_logs,))
        self.tracing = tracing or (
            Tracing.to_otlp(options.tracing_otlp_endpoint, options.tracing_sample_ratio)
            if options.tracing_otlp_endpoint
            else Tracing.off()
        )
        # Each front end runs short calls on its one dispatcher thread (gRPC's dispatcher, the
        # REST loop); longer ones use these threads as offload.py decides.
        self._offload = ThreadPoolExecutor(
            max_workers=options.offload_threads, thread_name_prefix="inference"
        )
        offload = Offload(self._offload, inline_seconds=options.inline_model_call_micros / 1e6)
        self.service = InferenceService(
            self.manager,
            runner=runner,
            check_method_names=options.enable_signature_method_name_check,
            metrics=self.metrics,
            offload=offload,
            limits=RequestLimits(options.max_request_elements, options.max_response_elements),
        )
        self.health = HealthService(self.manager)
        self._reloads: ReloadQueue = ReloadQueue(options.max_queued_reloads)
        # A core thread that dies makes the server NOT_SERVING before the process exits.
        self._unhook_fatal = supervision.SUPERVISOR.on_fatal(self.health.shut_down)
        self._grpc = self._build_grpc_server()
        routes = metrics_routes(options, self.metrics)
        rest_service = self.service.via("REST")
        self.rest = None
        if options.rest_api_port:
            self.rest = RestServer(
                options, rest_service, routes, self.tls, self.request_logs, self.tracing
            )
        self.grpc_port = 0

    def _build_grpc_server(self) -> GrpcServer:
        """Short inference runs on the dispatcher thread (batches too, when they need not
        wait), other batched calls complete by callback, longer model calls use the shared
        offload threads; reloads queue on their own thread."""
        tensor_content = self.options.enable_serialization_as_tensor_content
        try:
            admin_auth = read_admin_auth(self.options.admin_token_file)
        except AdminTokenError as exc:
            raise StartupError(str(exc)) from None
        if admin_auth.open:
            log.warning(OPEN_WARNING)
        routes = serving_routes(
            PredictionHandlers(
                self.service.via("GRPC", runs_ready_batches=True),
                tensor_content,
                coalesce=self.batching is not None,
                request_logs=self.request_logs,
                tracing=self.tracing,
            ),
            ModelHandlers(self.manager, self._reloads, self._remember_config()),
            InfoService(self.manager),
            self.health if self.options.enable_grpc_healthcheck_service else None,
        )
        return GrpcServer(
            routes,
            channel_arguments(self.options.grpc_channel_arguments),
            spin_microseconds=self.options.grpc_dispatcher_spin_micros,
            transport=grpc_transport(self.options, self.tls),
            admin_auth=admin_auth,
        )

    def _remember_config(self) -> Callable[[ModelServerConfig], None] | None:
        path = self.options.last_config_file
        return functools.partial(last_config.save, path) if path else None

    def start(self) -> None:
        """Apply the initial config (else the last one a reload applied), then open the ports."""
        try:
            initial = model_config.initial_config(self.options)
        except model_config.ConfigError as exc:
            raise StartupError(exc.message, exc.code) from None
        if initial is not None:
            report = self.manager.apply_config(initial)
            if report.code:
                raise StartupError(report.message, report.code)
        elif self.options.last_config_file:
            self._apply_last_config(self.options.last_config_file)
        self.manager.start()
        self._start_grpc()
        self._start_rest()
        # Everything allocated so far lives for the whole process; keep the collector off it.
        gc.collect()
        gc.freeze()
        log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", self.grpc_port)
        if self.rest is not None:
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest.port)

    def _apply_last_config(self, path: str) -> None:
        """Serve what a reload last applied; if that fails now (a model gone from disk),
        start empty and let the control plane push: a stale file must not keep the plane
        down."""
        saved = last_config.load(path)
        if saved is None:
            return
        report = self.manager.apply_config(saved)
        if report.code:
            log.warning(
                "--last_config_file %s not applied, starting empty: %s", path, report.message
            )
        else:
            log.info("serving --last_config_file %s until the control plane pushes", path)

    def _start_grpc(self) -> None:
        addresses = [f"0.0.0.0:{self.options.port}"]
        if self.options.grpc_socket_path:
            addresses.insert(0, f"unix:{self.options.grpc_socket_path}")
        try:
            self.grpc_port = self._grpc.start(addresses)
        except RuntimeError as exc:
            raise StartupError(
                f"cannot listen on gRPC port {self.options.port}: {exc}", Code.UNAVAILABLE
            ) from None

    def _start_rest(self) -> None:
        if self.rest is None:
            return
        try:
            self.rest.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on REST port {self.options.rest_api_port}: {exc.strerror}",
                Code.UNAVAILABLE,
            ) from None

    def _stop_rest(self, grace_seconds: float) -> None:
        if self.rest is not None:
            self.rest.stop(grace_seconds)

    def wait(self) -> None:
        self._grpc.wait()

    def stop(self, grace_seconds: float) -> None:
        """Drain: report NOT_SERVING, refuse new requests on both ports while in-flight ones
        finish (both drain at once, within one grace period), then unload everything."""
        self.health.shut_down()
        rest_stopped = threading.Thread(target=self._stop_rest, args=(grace_seconds,))
        rest_stopped.start()
        self._grpc.stop(grace_seconds)
        rest_stopped.join()
        self._reloads.close()
        self._offload.shutdown(wait=True)
        if self.batching is not None:
            self.batching.close()
        self.request_logs.close(grace_seconds)
        self.tracing.shutdown()
        self.manager.shutdown()
        self._unhook_fatal()
