"""Fixtures for the data plane's tests: a fake loader and managers shut down after each test,
and one real half_plus_two servable per module for tests of the request path."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from dataplane.manager import ModelManager
from dataplane.options import ServerOptions
from dataplane.servable import Servable, SessionOptions, load_servable
from tests.dataplane.fakes import FakeClock, FakeLoader


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
def make_manager(loader: FakeLoader) -> Iterator[Callable[..., ModelManager]]:
    managers: list[ModelManager] = []

    def make(**overrides: object) -> ModelManager:
        settings: dict[str, object] = {
            "max_num_load_retries": 0,
            "load_retry_interval_micros": 1000,
        }
        options = ServerOptions(**{**settings, **overrides})  # type: ignore[arg-type]
        manager = ModelManager(options, loader, clock=FakeClock())
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.shutdown()


@pytest.fixture(scope="module")
def half_plus_two(saved_models) -> Iterator[Servable]:
    servable = load_servable("h", 123, f"{saved_models.half_plus_two}/123", SessionOptions())
    yield servable
    servable.close()
