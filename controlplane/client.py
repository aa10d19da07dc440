"""The three calls the control plane makes to a data plane, with errors sorted into two kinds.

`PlaneUnreachable` (transport trouble: worth retrying) and `PlaneRejected` (the plane answered
and said no: retrying the same config will not help) drive the push state machine in fleet.py.

Every call carries the fleet's credentials (credentials.py): a bearer token, TLS or both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
)
from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from dataplane.json_logs import HEADER
from modelplane import info_pb2, info_pb2_grpc

from . import request_ids
from .credentials import PlaneCredentials

RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}
STATE_NAMES = dict(get_model_status_pb2.ModelVersionStatus.State.items())
STATE_BY_NUMBER = {number: name for name, number in STATE_NAMES.items()}


class PlaneUnreachable(Exception):
    """The call did not get an answer (connection refused, deadline...): retry later.

    `str(err)` has gRPC's detail (addresses, socket errors) for the log; `public` only the
    status code, for the API and the UI: whoever may register an address must not get a
    port scanner that explains each closed port (docs/security.md).
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.public = f"no answer ({code})"


class PlaneRejected(Exception):
    """The plane answered with an error, e.g. a config it refuses."""


@dataclass(frozen=True)
class PlaneInfo:
    incarnation_id: str
    config_fingerprint: str


class PlaneClient:
    """One data plane at `address`; keeps a channel open across calls."""

    def __init__(
        self, address: str, deadline_s: float, credentials: PlaneCredentials | None = None
    ) -> None:
        self.address = address
        self.deadline_s = deadline_s
        self._credentials = credentials or PlaneCredentials()
        self._metadata = self._credentials.metadata
        self._open()

    def _open(self) -> None:
        self._channel = self._credentials.channel(self.address)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._info = info_pb2_grpc.DataPlaneInfoStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def reload(self, config: ModelServerConfig) -> None:
        """HandleReloadConfigRequest with the whole config; raises unless the plane says OK."""
        request = model_management_pb2.ReloadConfigRequest(config=config)
        try:
            response = self._call(self._models.HandleReloadConfigRequest, request)
        except PlaneUnreachable as err:
            if _code(err) != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            # The plane got the config and is still loading (a failing version retries for
            # minutes): resending would queue the same reload again, so this is not retried.
            raise PlaneRejected(
                f"reload did not answer within {self.deadline_s:g}s{self._load_errors(config)}"
            ) from err
        if response.status.error_code != 0:
            raise PlaneRejected(
                f"reload refused (code {response.status.error_code}): "
                f"{response.status.error_message}"
            )

    def model_states(self, name: str) -> dict[int, str] | None:
        """Version -> state name ("AVAILABLE", ...) of one model; None if the plane lacks it."""
        statuses = self._statuses(name)
        if statuses is None:
            return None
        return {s.version: STATE_BY_NUMBER.get(s.state, "UNKNOWN") for s in statuses}

    def _statuses(self, name: str) -> list[Any] | None:
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_pb2.ModelSpec(name=name)
        )
        try:
            response = self._call(self._models.GetModelStatus, request)
        except PlaneRejected as err:
            if _code(err) == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return list(response.model_version_status)

    def _load_errors(self, config: ModelServerConfig) -> str:
        """ "; m/3: <why it failed>" for each version the plane reports a load error for: the
        real reason a reload is slow or failed, instead of a bare timeout."""
        errors = []
        for model in config.model_config_list.config:
            try:
                statuses = self._statuses(model.name) or []
            except (PlaneUnreachable, PlaneRejected):
                continue
            errors += [
                f"{model.name}/{s.version}: {s.status.error_message}"
                for s in statuses
                if s.status.error_code != 0
            ]
        return "".join(f"; {e}" for e in errors)

    def info(self) -> PlaneInfo | None:
        """Our GetInfo; None when the plane does not implement it (a stock model server)."""
        try:
            response = self._call(self._info.GetInfo, info_pb2.GetInfoRequest())
        except PlaneRejected as err:
            if _code(err) == grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise
        return PlaneInfo(response.incarnation_id, response.config_fingerprint)

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            metadata = (*self._metadata, (HEADER, request_ids.current()))
            return method(request, timeout=self.deadline_s, metadata=metadata)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                # The connection may be dead without knowing it (a plane cut off the network:
                # TCP keeps retransmitting, and after the link is back its backed-off retries
                # can take half a minute to get through). A new channel resolves and connects
                # anew at the next call.
                self.close()
                self._open()
            if err.code() in RETRYABLE:
                raise PlaneUnreachable(err.code().name, err.details() or "") from err
            raise PlaneRejected(f"{err.code().name}: {err.details()}") from err


def _code(err: Exception) -> grpc.StatusCode | None:
    """The gRPC status code behind one of our errors, if a call failed with one."""
    cause = err.__cause__
    return cause.code() if isinstance(cause, grpc.RpcError) else None
