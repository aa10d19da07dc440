"""What should be loaded: version directories on disk filtered by each model's version policy.

TensorFlow Serving's FileSystemStoragePathSource in two pure functions (`list_versions`,
`aspired_versions`) and a `Poller` thread that re-runs them. Only numeric child directories
are versions, so an exporter can stage a version under any other name and rename it into
place atomically; a half-written `.tmp` directory is never picked up.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping

from tensorflow_serving.config import model_server_config_pb2 as msc_pb2

from dataplane.supervision import guarded_thread

log = logging.getLogger(__name__)

VersionPaths = dict[int, str]  # version number -> version directory


def list_versions(base_path: str) -> VersionPaths | None:
    """Numeric child directories of `base_path`; None when the path cannot be read.

    None and "no versions" differ on purpose: an empty base path unloads the model (the
    operator removed every version), an unreadable one (an unmounted volume) changes nothing.
    """
    try:
        entries = list(os.scandir(base_path))
    except OSError:
        return None
    versions: VersionPaths = {}
    for entry in entries:
        if entry.name.isascii() and entry.name.isdigit() and entry.is_dir():
            versions[int(entry.name)] = entry.path
    return versions


def aspired_versions(model: msc_pb2.ModelConfig, on_disk: Mapping[int, str]) -> VersionPaths:
    """The versions `model`'s policy wants served, out of those found on disk.

    latest{n} keeps the n highest (n=0 means 1, as upstream), all{} keeps every version,
    specific{versions} keeps the listed ones that exist.
    """
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        wanted = set(on_disk)
    elif choice == "specific":
        wanted = set(policy.specific.versions) & set(on_disk)
    else:
        count = max(policy.latest.num_versions, 1) if choice == "latest" else 1
        wanted = set(sorted(on_disk)[-count:])
    return {version: on_disk[version] for version in sorted(wanted)}


def scan_model(model: msc_pb2.ModelConfig) -> VersionPaths | None:
    """One poll of one model: its aspired versions on disk, None if the path is unreadable."""
    on_disk = list_versions(model.base_path)
    return None if on_disk is None else aspired_versions(model, on_disk)


class Poller:
    """Runs `poll` every `interval_s` seconds on a daemon thread until `stop()`.

    An exception in `poll` is logged and the next round still runs: one bad round (an
    unreadable file, a transient error) must never end polling for the server's life.
    """

    def __init__(self, name: str, interval_s: float, poll: Callable[[], None]) -> None:
        self._poll = poll
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = guarded_thread(
            name, self._run, should_run=lambda: not self._stopped.is_set(), daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait for a round in progress to finish."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                self._poll()
            except Exception:
                log.exception("%s: poll failed; retrying next round", self._thread.name)
