"""ModelManager: loads and unloads on the pools, retries, leases, pollers, shutdown.

With the fake loader (tests/dataplane/fakes.py): no TensorFlow, milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dataplane.errors import Code
from dataplane.manager import ModelManager, VersionState
from tests.dataplane.fakes import (
    FakeLoader,
    config_list,
    make_versions,
    model_entry,
    served_version,
    states,
    wait_until,
)

S = VersionState


# ------------------------------------------------------------------------ loads and retries


def test_failed_new_version_of_existing_model_keeps_the_old_one_serving(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    base = make_versions(tmp_path / "a", 1)
    manager.apply_config(config_list(model_entry("a", base)))
    loader.fail(tmp_path / "a" / "2")

    make_versions(tmp_path / "a", 2)
    manager.poll_file_system()

    wait_until(lambda: states(manager, "a") == {2: S.END, 1: S.AVAILABLE})
    assert manager.model_status("a", 2)[0].error.message == f"corrupt SavedModel at {base}/2"  # type: ignore[union-attr]
    assert served_version(manager, "a") == 1
    manager.poll_file_system()  # a corrupt version is not reloaded by every poll
    assert loader.calls == [("a", 1), ("a", 2)]


@pytest.mark.parametrize(
    ("retries", "failures", "state", "attempts"),
    [(2, 2, S.AVAILABLE, 3), (1, 5, S.END, 2)],
    ids=["until_success", "give_up_after_max_num_load_retries"],
)
def test_a_polled_version_retries_its_load(
    tmp_path: Path,
    make_manager: Callable[..., ModelManager],
    loader: FakeLoader,
    retries: int,
    failures: int,
    state: VersionState,
    attempts: int,
) -> None:
    manager = make_manager(max_num_load_retries=retries, load_retry_interval_micros=1000)
    manager.apply_config(config_list(model_entry("a", make_versions(tmp_path / "a", 1))))
    loader.fail(tmp_path / "a" / "2", times=failures)

    make_versions(tmp_path / "a", 2)
    manager.poll_file_system()

    wait_until(lambda: states(manager, "a").get(2) is state)
    assert loader.calls == [("a", 1)] + [("a", 2)] * attempts


def test_a_reload_tries_each_new_version_once_and_answers_at_once(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    """Retries would hold the reload (and every one queued behind it) for minutes."""
    manager = make_manager(max_num_load_retries=5, load_retry_interval_micros=60_000_000)
    loader.fail(tmp_path / "a" / "1", times=1)
    config = config_list(model_entry("a", make_versions(tmp_path / "a", 1)))

    started = time.monotonic()
    report = manager.apply_config(config)

    assert time.monotonic() - started < 10
    assert report.code is Code.UNKNOWN
    assert "corrupt SavedModel" in report.message
    assert loader.calls == [("a", 1)]
    assert manager.apply_config(config).code is Code.OK  # the caller's retry


def test_removed_version_stops_its_load_retries(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager(max_num_load_retries=1000, load_retry_interval_micros=5000)
    base = make_versions(tmp_path / "a", 1)
    manager.apply_config(config_list(model_entry("a", base)))
    loader.fail(tmp_path / "a" / "2")
    make_versions(tmp_path / "a", 2)
    manager.poll_file_system()
    wait_until(lambda: len(loader.calls) >= 3)

    (tmp_path / "a" / "2").rmdir()
    manager.poll_file_system()

    wait_until(lambda: states(manager, "a")[2] is S.END)
    tries = len(loader.calls)
    time.sleep(0.03)
    assert len(loader.calls) == tries
    assert served_version(manager, "a") == 1


def test_a_loader_bug_costs_its_version_as_unknown(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    def bug(name: str, version: int) -> None:
        raise KeyError("no such thing")

    loader.before_load = bug
    manager = make_manager()
    report = manager.apply_config(config_list(model_entry("a", make_versions(tmp_path / "a", 1))))

    (status,) = manager.model_status("a", 1)
    assert status.state is S.END and status.error is not None
    assert (status.error.code, status.error.message) == (Code.UNKNOWN, "KeyError: 'no such thing'")
    assert report.code is Code.UNKNOWN


def test_a_version_removed_before_its_load_starts_is_cancelled_unloaded(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    """One load thread, newest first: version 2 waits behind 3 and is gone before its turn."""
    manager = make_manager(num_load_threads=1)
    base = make_versions(tmp_path / "a", 1)
    manager.apply_config(config_list(model_entry("a", base, "model_version_policy { all {} }")))
    gate = loader.gate(tmp_path / "a" / "3")
    make_versions(tmp_path / "a", 2, 3)
    manager.poll_file_system()
    wait_until(lambda: loader.calls == [("a", 1), ("a", 3)])

    (tmp_path / "a" / "2").rmdir()
    manager.poll_file_system()
    gate.set()

    wait_until(lambda: states(manager, "a").get(2) is S.END)
    (status,) = manager.model_status("a", 2)
    assert status.error is not None
    assert (status.error.code, status.error.message) == (Code.CANCELLED, "Load cancelled")
    assert loader.calls == [("a", 1), ("a", 3)]  # version 2 never reached the loader
    wait_until(lambda: states(manager, "a").get(3) is S.AVAILABLE)


def test_a_reload_that_waits_for_a_version_the_poll_is_retrying_ends_its_retries(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager(max_num_load_retries=1, load_retry_interval_micros=60_000_000)
    base = make_versions(tmp_path / "a", 1)
    manager.apply_config(config_list(model_entry("a", base)))
    loader.fail(tmp_path / "a" / "2")
    make_versions(tmp_path / "a", 2)
    manager.poll_file_system()
    wait_until(lambda: loader.calls == [("a", 1), ("a", 2)])  # the retry would come in a minute

    started = time.monotonic()
    report = manager.apply_config(  # a changed policy: the reload waits for version 2
        config_list(model_entry("a", base, "model_version_policy { all {} }"))
    )

    assert time.monotonic() - started < 10
    assert report.code is Code.UNKNOWN
    assert f"version: 2}} due to error: DATA_LOSS: corrupt SavedModel at {base}/2" in report.message
    assert loader.calls == [("a", 1), ("a", 2)]
    assert served_version(manager, "a") == 1


def test_a_reload_naming_a_path_outside_the_prefixes_changes_nothing(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    models = tmp_path / "models"
    manager = make_manager(model_base_path_prefixes=f"{models},/data")
    assert (
        manager.apply_config(config_list(model_entry("a", make_versions(models / "a", 1)))).code
        is Code.OK
    )
    outside = make_versions(tmp_path / "etc", 1)

    report = manager.apply_config(
        config_list(model_entry("a", make_versions(models / "a", 1)), model_entry("b", outside))
    )

    assert report.code is Code.INVALID_ARGUMENT
    assert f"Model b has base_path {outside} (resolved: {outside})" in report.message
    assert f"outside the allowed prefixes {models},/data" in report.message
    assert manager.model_names() == ["a"] and served_version(manager, "a") == 1
    assert loader.calls == [("a", 1)]  # nothing of b was touched


# ------------------------------------------------------------------------ swaps and leases


def test_poll_swaps_to_new_version_then_rolls_back_when_it_disappears(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    base = make_versions(tmp_path / "a", 1)
    manager.apply_config(config_list(model_entry("a", base)))

    make_versions(tmp_path / "a", 2)
    manager.poll_file_system()
    wait_until(lambda: states(manager, "a") == {2: S.AVAILABLE, 1: S.END})
    assert served_version(manager, "a") == 2

    (tmp_path / "a" / "2").rmdir()
    manager.poll_file_system()
    wait_until(lambda: states(manager, "a") == {2: S.END, 1: S.AVAILABLE})
    assert served_version(manager, "a") == 1
    assert [(s.version, s.closed) for s in loader.loaded] == [(1, True), (2, True), (1, False)]


def test_lease_delays_unload_and_new_requests_go_to_new_version(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    manager.apply_config(config_list(model_entry("a", make_versions(tmp_path / "a", 1))))

    with manager.lease("a") as old:
        make_versions(tmp_path / "a", 2)
        manager.poll_file_system()
        wait_until(lambda: states(manager, "a") == {2: S.AVAILABLE, 1: S.UNLOADING})
        assert served_version(manager, "a") == 2
        time.sleep(0.02)
        assert not old.closed and states(manager, "a")[1] is S.UNLOADING

    wait_until(lambda: states(manager, "a")[1] is S.END)
    assert old.closed


def test_resource_preserving_unloads_old_version_before_loading_new(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager(resource_preserving_transitions=True)
    manager.apply_config(config_list(model_entry("a", make_versions(tmp_path / "a", 1))))
    seen: list[dict[int, VersionState]] = []
    loader.before_load = lambda name, version: seen.append(states(manager, name))

    make_versions(tmp_path / "a", 2)
    manager.poll_file_system()

    wait_until(lambda: states(manager, "a") == {2: S.AVAILABLE, 1: S.END})
    assert seen == [{2: S.LOADING, 1: S.END}]
    assert loader.loaded[0].closed


# ------------------------------------------------------------------------ pollers, shutdown


def test_config_file_poll_applies_changes_and_keeps_config_on_bad_file(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    path = tmp_path / "models.config"
    a = make_versions(tmp_path / "a", 1)
    b = make_versions(tmp_path / "b", 1)
    path.write_text("model_config_list { " + model_entry("a", a) + " }")
    manager = make_manager(model_config_file=str(path), file_system_poll_wait_seconds=0)
    manager.poll_config_file()
    assert manager.model_names() == ["a"]

    path.write_text("model_config_list { " + model_entry("b", b) + " }")
    manager.poll_config_file()
    assert manager.model_names() == ["b"]

    path.write_text("model_config_list { config { nme: 'x' } }")
    manager.poll_config_file()
    assert manager.model_names() == ["b"]
    assert served_version(manager, "b") == 1


def test_a_config_file_that_failed_to_load_is_tried_again_at_the_next_poll(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    path = tmp_path / "models.config"
    path.write_text(
        "model_config_list { " + model_entry("a", make_versions(tmp_path / "a", 1)) + " }"
    )
    loader.fail(tmp_path / "a" / "1", times=1)
    manager = make_manager(model_config_file=str(path), file_system_poll_wait_seconds=0)

    manager.poll_config_file()
    assert manager.model_names() == []
    manager.poll_config_file()  # the same file: applied this time
    assert manager.model_names() == ["a"]
    assert served_version(manager, "a") == 1


def test_start_polls_the_file_system(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    manager = make_manager(file_system_poll_wait_seconds=1)
    manager.apply_config(config_list(model_entry("a", make_versions(tmp_path / "a", 1))))
    manager.start()

    make_versions(tmp_path / "a", 2)

    wait_until(lambda: states(manager, "a") == {2: S.AVAILABLE, 1: S.END}, timeout=3.0)


def test_shutdown_unloads_everything(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    manager.apply_config(
        config_list(
            model_entry("a", make_versions(tmp_path / "a", 1, 2), "model_version_policy { all {} }")
        )
    )

    manager.shutdown()

    assert states(manager, "a") == {2: S.END, 1: S.END}
    assert all(s.closed for s in loader.loaded) and len(loader.loaded) == 2
