"""grpc.health.v1.Health for the server ("") and for each model name.

Load balancers and Kubernetes probe this before sending traffic, so the answer must follow
the manager exactly: it is computed on demand from the manager's states rather than pushed
into grpcio-health-checking's stored map (which would go stale on every load, unload or
failed reload). A model is SERVING while one of its versions is AVAILABLE; the server is
SERVING while any model is, and NOT_SERVING from the moment shutdown starts (so a balancer
stops routing here while in-flight requests drain).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from grpc_health.v1 import health_pb2

from dataplane import errors
from dataplane.errors import ServingError
from dataplane.grpc_server import ResponseStream
from dataplane.manager import ModelManager, VersionState
from dataplane.supervision import guarded_thread

Status = health_pb2.HealthCheckResponse.ServingStatus
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SERVER = ""  # the health service name of the whole server


@dataclass(slots=True)
class _Watch:
    """One Watch stream and the last status it was sent."""

    service: str
    stream: ResponseStream
    last: int | None = None

    def update(self, status: Status | None) -> bool:
        """Send the status if it changed; False once the client has gone."""
        current = SERVICE_UNKNOWN if status is None else status
        if current != self.last:
            self.last = current
            return self.stream.send(health_pb2.HealthCheckResponse(status=current))
        return self.stream.active


class HealthService:
    """Answers Check from the manager's current model states, and keeps Watch streams current.

    Watch streams are refreshed by one thread every `watch_interval_seconds` (and at once on
    shutdown, when each gets its final NOT_SERVING and is closed, so none holds up the drain).
    """

    def __init__(self, manager: ModelManager, watch_interval_seconds: float = 1.0) -> None:
        self._manager = manager
        self._interval = watch_interval_seconds
        self._shutting_down = threading.Event()
        self._lock = threading.Lock()
        self._watches: list[_Watch] = []
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None

    def shut_down(self) -> None:
        """From now on everything is NOT_SERVING; Watch streams see it at once and end."""
        self._shutting_down.set()
        self._wake.set()

    def status(self, service: str) -> Status | None:
        """The service's status, or None when no model of that name was ever configured."""
        if service == SERVER:
            if self._shutting_down.is_set():
                return NOT_SERVING
            return (
                SERVING if any(map(self._available, self._manager.model_names())) else NOT_SERVING
            )
        if service not in self._manager.model_names():
            return None
        if self._shutting_down.is_set():
            return NOT_SERVING
        return SERVING if self._available(service) else NOT_SERVING

    def _available(self, name: str) -> bool:
        try:
            versions = self._manager.model_status(name)
        except ServingError:  # removed between model_names() and here
            return False
        return any(v.state is VersionState.AVAILABLE for v in versions)

    def check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:  # the gRPC health protocol's answer for an unknown service
            raise errors.not_found(f"unknown service: {request.service}")
        return health_pb2.HealthCheckResponse(status=status)

    def watch(self, request: health_pb2.HealthCheckRequest, stream: ResponseStream) -> None:
        """Send the status now and again whenever it changes, until the client goes away."""
        watch = _Watch(request.service, stream)
        watch.update(self.status(request.service))
        with self._lock:
            if self._shutting_down.is_set():
                stream.close()
                return
            self._watches.append(watch)
            if self._watcher is None:
                self._watcher = guarded_thread("health-watch", self._refresh_forever, daemon=True)
                self._watcher.start()

    def _refresh_forever(self) -> None:
        while True:
            self._wake.wait(self._interval)
            final = self._shutting_down.is_set()
            with self._lock:
                watches = list(self._watches)
            gone = [w for w in watches if not w.update(self.status(w.service)) or final]
            with self._lock:
                for watch in gone:
                    self._watches.remove(watch)
                    watch.stream.close()
            if final:
                return
