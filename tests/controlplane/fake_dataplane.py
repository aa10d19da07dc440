"""An in-process gRPC stand-in for a data plane, for unit tests of the push engine.

It speaks the real protocol (ModelService and, unless `stock`, modelplane.DataPlaneInfo) and
mimics the upstream rules that matter to the control plane: versions take `load_delay_s` to
become AVAILABLE, and a label may only name a version that is already AVAILABLE. The real
data plane is exercised by tests/e2e/test_controlplane_e2e.py.

Options make it a secured plane (`token`: admin calls need `authorization: Bearer <token>`, as
`--admin_token_file` does; `tls`: served over TLS, client certificates required when a client
CA is given) or a misbehaving one (garbage it reports, reloads that outlast the deadline).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
)
from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from modelplane import info_pb2, info_pb2_grpc

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
LOADING = get_model_status_pb2.ModelVersionStatus.LOADING
END = get_model_status_pb2.ModelVersionStatus.END
FAILED_PRECONDITION = 9


@dataclass
class Reload:
    at: float
    config: ModelServerConfig


@dataclass(frozen=True)
class ServerTls:
    """PEM key and certificate chain; with `client_ca`, client certificates are required."""

    key: bytes
    cert: bytes
    client_ca: bytes | None = None


@dataclass
class FakeDataPlane:
    load_delay_s: float = 0.05
    stock: bool = False
    reject: str = ""
    # Admin calls (reload, GetInfo) need this bearer token when set.
    token: str = ""
    tls: ServerTls | None = None
    # Misbehaviour: an incarnation id to report instead of a uuid, extra versions GetModelStatus
    # invents, a reload that takes this long, a load error every reported version carries.
    incarnation_text: str = ""
    extra_versions: int = 0
    reload_delay_s: float = 0.0
    load_error: str = ""
    reloads: list[Reload] = field(default_factory=list)
    available_at: dict[tuple[str, int], float] = field(default_factory=dict)
    # The `authorization` metadata of every admin call, in order ("" when absent).
    authorizations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_Models(self), self._server)
        if not self.stock:
            info_pb2_grpc.add_DataPlaneInfoServicer_to_server(_Info(self), self._server)
        if self.tls is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            credentials = grpc.ssl_server_credentials(
                [(self.tls.key, self.tls.cert)],
                root_certificates=self.tls.client_ca,
                require_client_auth=self.tls.client_ca is not None,
            )
            self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self._server.start()

    def authorize(self, context: grpc.ServicerContext) -> None:
        """What --admin_token_file does: UNAUTHENTICATED unless the bearer token matches."""
        sent = dict(context.invocation_metadata()).get("authorization", "")
        self.authorizations.append(sent)
        if self.token and sent != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong admin token")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        """What a restart looks like: new incarnation, nothing loaded, no config."""
        with self._lock:
            self.incarnation = self.incarnation_text or uuid.uuid4().hex
            self.config: ModelServerConfig | None = None
            self.loaded: dict[str, dict[int, float]] = {}  # model -> version -> ready time

    def stop(self) -> None:
        self._server.stop(grace=None)

    def states(self, name: str) -> dict[int, int] | None:
        with self._lock:
            versions = self.loaded.get(name)
            if versions is None:
                return None
            now = time.monotonic()
            return {v: AVAILABLE if ready <= now else LOADING for v, ready in versions.items()}

    def apply(self, config: ModelServerConfig) -> tuple[int, str]:
        self.reloads.append(Reload(time.monotonic(), config))
        if self.reject:
            return 3, self.reject
        for model in config.model_config_list.config:
            states = self.states(model.name) or {}
            for label, version in model.version_labels.items():
                if states.get(version) != AVAILABLE:
                    return FAILED_PRECONDITION, f"label {label}: version {version} not available"
        with self._lock:
            self.config = config
            now = time.monotonic()
            wanted = {
                m.name: set(m.model_version_policy.specific.versions)
                for m in config.model_config_list.config
            }
            self.loaded = {
                name: {v: self.loaded.get(name, {}).get(v, now + self.load_delay_s) for v in vs}
                for name, vs in wanted.items()
            }
            for name, versions in self.loaded.items():
                for version, ready in versions.items():
                    self.available_at.setdefault((name, version), ready)
        return 0, ""


class _Models(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, plane: FakeDataPlane) -> None:
        self.plane = plane

    def HandleReloadConfigRequest(self, request, context):
        self.plane.authorize(context)
        code, message = self.plane.apply(request.config)
        time.sleep(self.plane.reload_delay_s)  # applied, still "loading" when it answers
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = code
        response.status.error_message = message
        return response

    def GetModelStatus(self, request, context):
        states = self.plane.states(request.model_spec.name)
        invented = {1000 + n: LOADING for n in range(self.plane.extra_versions)}
        if states is None and not invented:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such model")
        states = states or {}
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state in sorted({**states, **invented}.items()):
            status = response.model_version_status.add(version=version, state=state)
            if self.plane.load_error:
                status.state = END
                status.status.error_code = 3
                status.status.error_message = self.plane.load_error
        return response


class _Info(info_pb2_grpc.DataPlaneInfoServicer):
    def __init__(self, plane: FakeDataPlane) -> None:
        self.plane = plane

    def GetInfo(self, request, context):
        self.plane.authorize(context)
        config = self.plane.config
        digest = (
            hashlib.sha256(config.SerializeToString(deterministic=True)).hexdigest()
            if config is not None
            else ""
        )
        return info_pb2.GetInfoResponse(
            incarnation_id=self.plane.incarnation, config_fingerprint=digest
        )
