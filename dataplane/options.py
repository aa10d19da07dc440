"""tensorflow_model_server's command-line flags, parsed into one typed options object.

Flag names, defaults and the `--flag=value` / bare `--bool_flag` forms match
tensorflow_model_server so existing launch scripts and manifests work unchanged. Everything
past `__main__` takes a `ServerOptions`, never raw flags.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NoReturn

from dataplane.json_logs import chosen_format
from dataplane.limits import DEFAULT_MAX_ELEMENTS
from dataplane.transport import TRANSPORTS

REST_TRANSPORTS = ("python", "native")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "t"):
        return True
    if lowered in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclass(frozen=True)
class ServerOptions:
    """Every flag the data plane understands (tensorflow_model_server's names and defaults)."""

    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    rest_api_max_body_bytes: int = 32 * 1024 * 1024
    rest_api_max_json_depth: int = 100
    rest_api_idle_timeout_in_ms: int = 60_000
    rest_api_max_connections: int = 1024
    rest_api_max_pending_requests: int = 256
    max_request_elements: int = DEFAULT_MAX_ELEMENTS
    max_response_elements: int = DEFAULT_MAX_ELEMENTS
    grpc_max_threads: int = 0
    grpc_channel_arguments: str = ""
    grpc_dispatcher_spin_micros: int = 300
    inline_model_call_micros: int = 100
    grpc_transport: str = "native"
    rest_transport: str = "python"
    grpc_max_pending_calls: int = 4096
    ssl_config_file: str = ""
    enable_grpc_healthcheck_service: bool = True
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    flush_filesystem_caches: bool = True
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    num_load_threads: int = 0
    num_unload_threads: int = 0
    allow_version_labels: bool = True
    allow_version_labels_for_unavailable_models: bool = False
    saved_model_tags: str = "serve"
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    monitoring_config_file: str = ""
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    per_process_gpu_memory_fraction: float = 0.0
    enable_signature_method_name_check: bool = False
    enable_serialization_as_tensor_content: bool = False
    resource_preserving_transitions: bool = False
    grace_period_seconds: float = 30.0
    request_log_queue_size: int = 10_000
    request_log_max_file_bytes: int = 64 * 1024 * 1024
    request_log_max_file_seconds: int = 3600
    tracing_otlp_endpoint: str = ""
    tracing_sample_ratio: float = 1.0
    admin_token_file: str = ""
    last_config_file: str = ""
    model_base_path_prefixes: str = ""
    max_queued_reloads: int = 2
    log_format: str = ""  # empty: $MODELPLANE_LOG_FORMAT (see logs_format)
    version: bool = False

    @property
    def logs_format(self) -> str:
        """`text` or `json`: the flag, else the environment (json_logs.chosen_format)."""
        return chosen_format(self.log_format)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.saved_model_tags.split(",") if t.strip())

    @property
    def base_path_prefixes(self) -> tuple[str, ...]:
        """--model_base_path_prefixes as a tuple; empty: base paths are not confined."""
        return tuple(p.strip() for p in self.model_base_path_prefixes.split(",") if p.strip())

    @property
    def offload_threads(self) -> int:
        """Threads for the model calls a front end's one dispatcher thread does not run itself
        (offload.py says which).

        Both front ends share them, so the pool gets the larger of TF Serving's two thread
        flags (--grpc_max_threads, --rest_api_num_threads), each 4 per core when 0.
        """
        per_core = 4 * (os.cpu_count() or 1)
        return max(self.grpc_max_threads or per_core, self.rest_api_num_threads or per_core)


_HELP: dict[str, str] = {
    "port": "Port to listen on for gRPC API",
    "grpc_socket_path": "If non-empty, listen to a UNIX socket for gRPC API on the given path",
    "rest_api_port": "Port to listen on for HTTP/REST API. If 0, the REST API is not exported",
    "rest_api_num_threads": "Threads for REST model calls too slow for the HTTP loop; "
    "shared with gRPC's, the pool has the larger of the two (0: 4 per core)",
    "rest_api_timeout_in_ms": "Timeout for HTTP/REST API calls: reading a request, and "
    "answering it (past it: 504); 0: a day",
    "rest_api_max_body_bytes": "Largest HTTP request body accepted, else 413 (modelplane; "
    "--rest_api_max_request_bytes is an alias)",
    "rest_api_max_json_depth": "Deepest nesting of JSON arrays/objects accepted, else 400 "
    "(modelplane)",
    "rest_api_idle_timeout_in_ms": "Close a keep-alive connection idle this long; 0: a day "
    "(modelplane)",
    "rest_api_max_connections": "Open REST connections at most; more get 503 (modelplane)",
    "rest_api_max_pending_requests": "REST requests waiting for a model at most; more get 503 "
    "at once (modelplane)",
    "max_request_elements": "Most tensor elements one request may declare in total, else "
    "INVALID_ARGUMENT before anything is allocated; 0: no bound (modelplane)",
    "max_response_elements": "Most tensor elements one answer may hold, else RESOURCE_EXHAUSTED "
    "before it is encoded; 0: no bound (modelplane)",
    "model_config_file": "ModelServerConfig text proto; overrides --model_name/--model_base_path",
    "model_config_file_poll_wait_seconds": "Re-read --model_config_file this often (0: never)",
    "file_system_poll_wait_seconds": "Poll model base paths for new versions this often",
    "saved_model_tags": "Comma-separated MetaGraphDef tags to load",
    "resource_preserving_transitions": "Unload the old version before loading the new one "
    "(modelplane extension; default keeps the old version until the new one is available)",
    "grpc_dispatcher_spin_micros": "Under light load the gRPC dispatcher (and, with "
    "--rest_transport=native, the REST one) polls this long for the next call before it "
    "sleeps: lower latency for up to one core of polling; 0 turns it off (modelplane extension)",
    "inline_model_call_micros": "Model calls typically shorter than this run on the front "
    "end's dispatcher thread; longer ones run on a thread while a core is idle, and those of "
    "2 ms or more always do. 2000: every call under 2 ms inline, the single-thread design "
    "(modelplane extension)",
    "grpc_transport": "gRPC transport: native (the built extension; grpcio, with a warning, "
    "where it is not built) or grpcio (modelplane extension)",
    "rest_transport": "REST's HTTP/1.1 server: python (the uvloop server, http_server.py) "
    "or native (hyper in the built extension; python, with a warning, where it is not built) "
    "(modelplane extension)",
    "grpc_max_pending_calls": "gRPC calls held for the Python side at once beyond which new "
    "calls get UNAVAILABLE at once; 0: no bound (modelplane extension)",
    "ssl_config_file": "SSLConfig text proto: TLS for gRPC and, beyond TF Serving, HTTPS on the "
    "REST port (client_verify: mutual TLS against custom_ca)",
    "grace_period_seconds": "On SIGTERM, wait this long for in-flight requests (modelplane)",
    "request_log_queue_size": "Request logs (logging_config) waiting for the writer at most; "
    "more are dropped and counted (modelplane)",
    "request_log_max_file_bytes": "Start a new request log file past this size (modelplane)",
    "request_log_max_file_seconds": "Start a new request log file after this long (modelplane)",
    "tracing_otlp_endpoint": "Send OpenTelemetry traces of inference requests to this OTLP/gRPC "
    "collector, e.g. http://otel-collector:4317; empty: no tracing (modelplane)",
    "tracing_sample_ratio": "Share of requests without a traceparent that are traced; a "
    "request with one follows its sampled flag (modelplane)",
    "log_format": "Logs on stderr as text or json (one JSON object per line, with request ids); "
    "empty: $MODELPLANE_LOG_FORMAT, else text (modelplane; docs/operations.md)",
    "admin_token_file": "File holding the token admin calls (HandleReloadConfigRequest, "
    "modelplane.*) must send as 'authorization: Bearer <token>'; empty: admin calls are open, "
    "as in TF Serving (modelplane extension; docs/security.md)",
    "last_config_file": "Keep the config the last reload applied in this file and serve it at "
    "the next start before the ports open, so a restarted plane answers no NOT_FOUND while it "
    "waits for its control plane; unused with --model_config_file or --model_base_path "
    "(modelplane extension)",
    "model_base_path_prefixes": "Comma-separated directories every model base_path must lie "
    "under (after resolving '..' and symlinks); empty: any path (modelplane extension)",
    "max_queued_reloads": "HandleReloadConfigRequest calls that may wait behind the one being "
    "applied; more are refused with UNAVAILABLE at once (modelplane extension)",
    "version": "Display version and exit",
}


# Old names still accepted (launch scripts written for earlier releases keep working).
_ALIASES: dict[str, tuple[str, ...]] = {
    "rest_api_max_body_bytes": ("--rest_api_max_request_bytes",),
}
# Bounds and sizes that make no sense below zero (0 has its documented meaning).
_NON_NEGATIVE = (
    "grpc_dispatcher_spin_micros",
    "grpc_max_pending_calls",
    "inline_model_call_micros",
    "max_queued_reloads",
    "rest_api_timeout_in_ms",
    "rest_api_max_body_bytes",
    "rest_api_max_json_depth",
    "rest_api_idle_timeout_in_ms",
    "rest_api_max_connections",
    "rest_api_max_pending_requests",
    "max_request_elements",
    "max_response_elements",
    "request_log_queue_size",
    "request_log_max_file_bytes",
    "request_log_max_file_seconds",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (a supervisor's log keeps the last line;
    argparse's multi-line usage of every flag would bury the error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """One argparse option per ServerOptions field, typed from the field's default."""
    parser = _Parser(
        prog="python -m dataplane",
        description="modelplane data plane: a drop-in for tensorflow_model_server.",
        allow_abbrev=False,
    )
    for field in fields(ServerOptions):
        default = field.default
        names = (f"--{field.name}", *_ALIASES.get(field.name, ()))
        if isinstance(default, bool):
            parser.add_argument(
                *names,
                type=_parse_bool,
                nargs="?",
                const=True,
                default=default,
                help=_HELP.get(field.name, ""),
            )
        else:
            parser.add_argument(
                *names,
                type=type(default),
                default=default,
                help=_HELP.get(field.name, ""),
            )
    return parser


def parse_options(argv: Sequence[str]) -> ServerOptions:
    """Parse tensorflow_model_server-style flags; an unknown flag exits with a clear error."""
    parser = build_parser()
    namespace, unknown = parser.parse_known_args(list(argv))
    if unknown:
        parser.error(f"unknown command line flag(s): {' '.join(unknown)}")
    for name in _NON_NEGATIVE:
        if getattr(namespace, name) < 0:
            parser.error(f"--{name} must be >= 0")
    if not 0.0 <= namespace.tracing_sample_ratio <= 1.0:
        parser.error("--tracing_sample_ratio must be in [0, 1]")
    try:
        chosen_format(namespace.log_format)  # a bad flag or variable stops the start here
    except ValueError as err:
        parser.error(f"--log_format: {err}")
    if namespace.grpc_transport not in TRANSPORTS:
        parser.error(f"--grpc_transport must be one of {', '.join(TRANSPORTS)}")
    if namespace.rest_transport not in REST_TRANSPORTS:
        parser.error(f"--rest_transport must be one of {', '.join(REST_TRANSPORTS)}")
    return ServerOptions(**vars(namespace))
