"""modelplane.DataPlaneInfo: lets the control plane notice a restart or a drifted config."""

from __future__ import annotations

import hashlib
import time
import uuid

from tensorflow_serving.config import model_server_config_pb2

from dataplane import __version__
from dataplane.manager import ModelManager
from modelplane import info_pb2


def config_fingerprint(config: model_server_config_pb2.ModelServerConfig | None) -> str:
    """Hex SHA-256 of the deterministic serialization; both planes compute it the same way."""
    if config is None:
        return ""
    return hashlib.sha256(config.SerializeToString(deterministic=True)).hexdigest()


class InfoService:
    """Answers with this process's incarnation and the fingerprint of the config in force."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager
        self._incarnation = uuid.uuid4().hex
        self._started_ms = int(time.time() * 1000)

    def get_info(self, request: info_pb2.GetInfoRequest) -> info_pb2.GetInfoResponse:
        config, applied_ms = self._manager.current_config()
        return info_pb2.GetInfoResponse(
            incarnation_id=self._incarnation,
            config_fingerprint=config_fingerprint(config),
            config_applied_unix_ms=applied_ms,
            started_unix_ms=self._started_ms,
            server_version=__version__,
        )
