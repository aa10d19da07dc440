"""apply_config carried out by the manager: stage, judge, commit or roll back, report.

Through a real ModelManager with the fake loader (tests/dataplane/fakes.py), because a
reload is only meaningful against versions that load, fail or block.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dataplane.config import ModelServerConfig
from dataplane.errors import Code, ServingError
from dataplane.manager import ModelManager, VersionState
from tests.dataplane.fakes import (
    WAIT_S,
    FakeLoader,
    config_list,
    make_versions,
    model_entry,
    served_version,
    states,
    wait_until,
)

S = VersionState


# ------------------------------------------------------------------------ apply_config


def test_apply_config_loads_latest_version_and_reports_it(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    base = make_versions(tmp_path / "a", 1, 2, 7)
    manager = make_manager()

    report = manager.apply_config(config_list(model_entry("a", base)))

    assert report.code is Code.OK and report.message == ""
    assert report.models == {"a": "added; serving versions [7]"}
    assert states(manager, "a") == {7: S.AVAILABLE}
    assert served_version(manager, "a") == 7
    assert manager.model_names() == ["a"]
    config, applied_ms = manager.current_config()
    assert config == config_list(model_entry("a", base))
    assert applied_ms == 1_700_000_000_000


def test_version_policies_all_and_specific(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    base = make_versions(tmp_path / "a", 1, 2, 3)
    manager = make_manager()

    manager.apply_config(config_list(model_entry("a", base, "model_version_policy { all {} }")))
    assert states(manager, "a") == {1: S.AVAILABLE, 2: S.AVAILABLE, 3: S.AVAILABLE}

    specific = "model_version_policy { specific { versions: 2 } }"
    report = manager.apply_config(config_list(model_entry("a", base, specific)))
    assert report.code is Code.OK
    assert report.models == {"a": "updated; serving versions [2]"}
    wait_until(lambda: states(manager, "a") == {1: S.END, 2: S.AVAILABLE, 3: S.END})
    assert served_version(manager, "a") == 2
    assert served_version(manager, "a", version=2) == 2


def test_remove_model_unloads_it_and_keeps_its_end_states(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    manager.apply_config(
        config_list(
            model_entry("a", make_versions(tmp_path / "a", 1)),
            model_entry("b", make_versions(tmp_path / "b", 5)),
        )
    )

    report = manager.apply_config(config_list(model_entry("a", str(tmp_path / "a"))))

    assert report.code is Code.OK
    assert report.models == {"a": "unchanged", "b": "removed"}
    assert manager.model_names() == ["a"]
    with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(b\)"):
        served_version(manager, "b")
    wait_until(lambda: states(manager, "b") == {5: S.END})
    assert [s.closed for s in loader.loaded if s.name == "b"] == [True]


def test_empty_config_takes_no_action(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    manager = make_manager()
    manager.apply_config(config_list(model_entry("a", make_versions(tmp_path / "a", 1))))

    report = manager.apply_config(ModelServerConfig())

    assert (report.code, report.message) == (Code.OK, "Taking no action for empty config")
    assert served_version(manager, "a") == 1


def test_invalid_config_is_rejected_before_anything_changes(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    base = make_versions(tmp_path / "a", 1)

    report = manager.apply_config(config_list(model_entry("a", base), model_entry("a", base)))

    assert report.code is Code.INVALID_ARGUMENT
    assert report.message == "Illegal to list model a multiple times in config list"
    assert loader.calls == []
    assert manager.current_config() == (None, 0)


def test_failed_new_model_rolls_back_whole_reload_and_names_the_model(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    good = make_versions(tmp_path / "good", 1)
    manager.apply_config(config_list(model_entry("good", good)))
    loader.fail(tmp_path / "bad" / "3")
    other = make_versions(tmp_path / "other", 4)

    report = manager.apply_config(
        config_list(
            model_entry("good", good),
            model_entry("bad", make_versions(tmp_path / "bad", 3)),
            model_entry("other", other),
        )
    )

    assert report.code is Code.UNKNOWN
    assert report.message == (
        "1 model(s) did not become available: {{{name: bad version: 3} due to error: "
        f"DATA_LOSS: corrupt SavedModel at {tmp_path}/bad/3}}, }}. "
        "The previous model config remains in force."
    )
    assert report.models["bad"] == (
        f"not added (reload rolled back); version 3 failed to load: DATA_LOSS: corrupt "
        f"SavedModel at {tmp_path}/bad/3"
    )
    assert report.models["other"] == "not added (reload rolled back)"
    assert report.models["good"] == "unchanged"
    assert manager.model_names() == ["good"]
    [bad_status] = manager.model_status("bad")
    assert (bad_status.state, bad_status.error.code) == (S.END, Code.DATA_LOSS)  # type: ignore[union-attr]
    with pytest.raises(ServingError, match=r"Latest\(other\)"):
        served_version(manager, "other")
    wait_until(lambda: states(manager, "other") == {4: S.END})

    # One bad model never blocks later reloads.
    later = manager.apply_config(
        config_list(model_entry("good", good), model_entry("other", other))
    )
    assert later.code is Code.OK
    assert served_version(manager, "other") == 4


def test_reload_that_stages_a_failed_version_again_retries_it(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    base = make_versions(tmp_path / "a", 1)
    loader.fail(tmp_path / "a" / "1", times=1)
    assert manager.apply_config(config_list(model_entry("a", base))).code is Code.UNKNOWN

    report = manager.apply_config(config_list(model_entry("a", base)))

    assert report.code is Code.OK
    assert served_version(manager, "a") == 1


def test_staged_versions_are_not_served_before_commit(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    base = make_versions(tmp_path / "a", 1, 2)
    manager.apply_config(
        config_list(model_entry("a", base, "model_version_policy { specific { versions: 1 } }"))
    )
    gate = loader.gate(tmp_path / "b" / "1")
    new = config_list(
        model_entry("a", base, "model_version_policy { all {} }"),
        model_entry("b", make_versions(tmp_path / "b", 1)),
    )
    reload = threading.Thread(target=manager.apply_config, args=(new,))
    reload.start()

    wait_until(lambda: states(manager, "a").get(2) is S.AVAILABLE)
    assert served_version(manager, "a") == 1  # version 2 is loaded but not yet committed
    with pytest.raises(ServingError, match="Latest"):
        served_version(manager, "b")
    gate.set()
    reload.join(WAIT_S)

    assert served_version(manager, "a") == 2
    assert served_version(manager, "b") == 1


def test_concurrent_reloads_are_serialised(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    gate = loader.gate(tmp_path / "slow" / "1")
    slow = config_list(model_entry("slow", make_versions(tmp_path / "slow", 1)))
    fast = config_list(model_entry("fast", make_versions(tmp_path / "fast", 1)))
    results: dict[str, Code] = {}
    first = threading.Thread(
        target=lambda: results.setdefault("slow", manager.apply_config(slow).code)
    )
    first.start()
    wait_until(lambda: ("slow", 1) in loader.calls)
    second = threading.Thread(
        target=lambda: results.setdefault("fast", manager.apply_config(fast).code)
    )
    second.start()

    time.sleep(0.03)
    assert ("fast", 1) not in loader.calls  # the second reload waits for the first
    gate.set()
    first.join(WAIT_S)
    second.join(WAIT_S)

    assert results == {"slow": Code.OK, "fast": Code.OK}
    assert manager.model_names() == ["fast"]
    wait_until(lambda: states(manager, "slow") == {1: S.END})


# ------------------------------------------------------------------------ labels


LABELS = (
    "model_version_policy { all {} } "
    'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'
)


def test_labels_route_to_their_versions(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    manager = make_manager()
    base = make_versions(tmp_path / "a", 1, 2)
    unlabelled = manager.apply_config(
        config_list(model_entry("a", base, "model_version_policy { all {} }"))
    )
    assert unlabelled.code is Code.OK

    report = manager.apply_config(config_list(model_entry("a", base, LABELS)))

    assert report.code is Code.OK
    assert served_version(manager, "a", label="stable") == 1
    assert served_version(manager, "a", label="canary") == 2
    with pytest.raises(ServingError, match=r"^Unrecognized servable version label: beta$"):
        served_version(manager, "a", label="beta")


def test_label_on_unavailable_version_is_refused_and_rolled_back(
    tmp_path: Path, make_manager: Callable[..., ModelManager], loader: FakeLoader
) -> None:
    manager = make_manager()
    base = make_versions(tmp_path / "a", 1)
    manager.apply_config(config_list(model_entry("a", base)))
    loader.fail(tmp_path / "a" / "2")
    make_versions(tmp_path / "a", 2)
    labels = 'model_version_policy { all {} } version_labels { key: "canary" value: 2 }'

    report = manager.apply_config(config_list(model_entry("a", base, labels)))

    # Judged before version 2 is even staged: labels name versions AVAILABLE now.
    assert (report.code, report.message) == (
        Code.FAILED_PRECONDITION,
        "Request to assign label to version 2 of model a, which is not currently available "
        "for inference",
    )
    assert states(manager, "a") == {1: S.AVAILABLE}
    (tmp_path / "a" / "2").rmdir()
    missing = (
        'model_version_policy { latest { num_versions: 1 } } version_labels { key: "old" value: 9 }'
    )
    report = manager.apply_config(config_list(model_entry("a", base, missing)))
    assert report.code is Code.FAILED_PRECONDITION
    assert report.message == (
        "Request to assign label to version 9 of model a, which is not currently available "
        "for inference"
    )
    assert served_version(manager, "a") == 1
    with pytest.raises(ServingError, match="Unrecognized servable version label: old"):
        served_version(manager, "a", label="old")


def test_allow_labels_for_unavailable_models_accepts_a_new_label(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    manager = make_manager(allow_version_labels_for_unavailable_models=True)
    base = make_versions(tmp_path / "a", 1)
    labels = 'version_labels { key: "next" value: 2 }'

    report = manager.apply_config(config_list(model_entry("a", base, labels)))

    assert report.code is Code.OK
    with pytest.raises(ServingError) as raised:
        served_version(manager, "a", label="next")
    assert raised.value.code is Code.NOT_FOUND
    assert raised.value.message.startswith("Servable not found for request: Specific(a, 2)")


def test_labels_in_a_first_config_are_refused_unless_allowed_for_unavailable_models(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    """At startup nothing is loaded yet, so (as in TF Serving) no label can be assigned."""
    base = make_versions(tmp_path / "a", 1, 2)
    first = config_list(model_entry("a", base, LABELS))

    refused = make_manager().apply_config(first)
    allowed = make_manager(allow_version_labels_for_unavailable_models=True)

    assert (refused.code, refused.message) == (
        Code.FAILED_PRECONDITION,
        "Request to assign label to version 2 of model a, which is not currently available "
        "for inference",
    )
    assert allowed.apply_config(first).code is Code.OK
    assert served_version(allowed, "a", label="canary") == 2


def test_labels_refused_when_server_disallows_them(
    tmp_path: Path, make_manager: Callable[..., ModelManager]
) -> None:
    manager = make_manager(allow_version_labels=False)
    base = make_versions(tmp_path / "a", 1)

    report = manager.apply_config(
        config_list(model_entry("a", base, 'version_labels { key: "x" value: 1 }'))
    )

    assert (report.code, report.message) == (
        Code.FAILED_PRECONDITION,
        "Model version labels are not currently allowed by the server.",
    )
