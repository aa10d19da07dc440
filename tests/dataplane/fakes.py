"""Fakes and helpers for tests that drive a ModelManager: no TensorFlow, milliseconds.

Version directories are real (empty) directories under tmp_path, because the file-system
source is part of what a reload does; the loader is fake and can block or fail on demand.
`OneModel` goes the other way, for tests of the request path: a real servable, no manager.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from google.protobuf import text_format

from dataplane.config import ModelServerConfig
from dataplane.errors import Code, ServingError
from dataplane.manager import ModelManager, VersionState
from dataplane.servable import Servable

WAIT_S = 5.0


class OneModel:
    """A manager that leases one loaded servable, whatever the request names."""

    def __init__(self, servable: Servable) -> None:
        self.servable = servable
        self.active = 0

    @contextmanager
    def lease(self, name: str, version: int | None = None, label: str | None = None) -> Iterator:
        self.active += 1
        try:
            yield self.servable
        finally:
            self.active -= 1


class FakeServable:
    def __init__(self, name: str, version: int, path: str) -> None:
        self.name, self.version, self.path = name, version, path
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """Loads instantly unless told to fail (`failures[path]` times) or to wait on a gate."""

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.gates: dict[str, threading.Event] = {}
        self.loaded: list[FakeServable] = []
        self.calls: list[tuple[str, int]] = []
        self.before_load: Callable[[str, int], None] = lambda name, version: None

    def fail(self, path: str | Path, times: int = 1_000_000) -> None:
        self.failures[str(path)] = times

    def gate(self, path: str | Path) -> threading.Event:
        return self.gates.setdefault(str(path), threading.Event())

    def __call__(self, name: str, version: int, path: str) -> FakeServable:
        self.calls.append((name, version))
        self.before_load(name, version)
        if path in self.gates:
            assert self.gates[path].wait(WAIT_S), f"gate for {path} never opened"
        if self.failures.get(path, 0) > 0:
            self.failures[path] -= 1
            raise ServingError(Code.DATA_LOSS, f"corrupt SavedModel at {path}")
        servable = FakeServable(name, version, path)
        self.loaded.append(servable)
        return servable


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_versions(base: Path, *versions: int) -> str:
    for version in versions:
        (base / str(version)).mkdir(parents=True, exist_ok=True)
    return str(base)


def config_of(text: str) -> ModelServerConfig:
    return text_format.Parse(text, ModelServerConfig())


def model_entry(name: str, base: str, extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}'


def config_list(*entries: str) -> ModelServerConfig:
    return config_of("model_config_list { " + " ".join(entries) + " }")


def states(manager: ModelManager, name: str) -> dict[int, VersionState]:
    return {s.version: s.state for s in manager.model_status(name)}


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def served_version(manager: ModelManager, name: str, **kwargs: object) -> int:
    with manager.lease(name, **kwargs) as servable:  # type: ignore[arg-type]
        return servable.version
