"""The UI's pure shaping: form <-> ModelConfig, label choices, fleet summary, filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controlplane.revisions import ValidationError
from controlplane.ui.forms import ModelForm
from controlplane.ui.pages import FleetStatus, PlaneRow, VersionState, version_choices
from controlplane.ui.templating import detail_text, diff_lines, policy_text, tone, when


def plane(state: str, versions: dict[int, str] | None = None) -> PlaneRow:
    states = [VersionState(v, s) for v, s in sorted((versions or {}).items())]
    return PlaneRow(1, "h:1", "api", state, 3, None, None, {"m": states})


def test_form_round_trips_every_policy():
    for policy in (
        {"latest": {"num_versions": 3}},
        {"all": {}},
        {"specific": {"versions": [2, 5]}},
    ):
        model = {"name": "m", "base_path": "/p", "model_version_policy": policy}
        form = ModelForm.from_model(model)
        config = form.to_config({"stable": 5} if "specific" in policy else {})
        assert config.name == "m" and config.base_path == "/p"
        assert config.model_version_policy.WhichOneof("policy_choice") == next(iter(policy))
    assert ModelForm.from_model({"name": "m", "base_path": "/p"}).policy == "latest"


def test_form_reads_versions_with_commas_or_spaces():
    form = ModelForm.from_request({"name": " m ", "base_path": "/p ", "policy": "specific"})
    form.versions = "3, 1 2"
    assert list(form.to_config().model_version_policy.specific.versions) == [3, 1, 2]
    assert form.name == "m" and form.base_path == "/p"


def test_a_label_the_new_policy_drops_is_reported_beside_versions():
    form = ModelForm(name="m", base_path="/p", policy="specific", versions="1")
    with pytest.raises(ValidationError) as caught:
        form.to_config({"stable": 2})
    form.add_error(caught.value)
    assert form.errors == {
        "versions": "version_labels.stable: version 2 is not served by "
        "model_version_policy specific {versions: [1]}"
    }


def test_an_unknown_policy_is_an_error_beside_the_policy():
    form = ModelForm(name="m", base_path="/p", policy="newest")
    with pytest.raises(ValidationError) as caught:
        form.to_config()
    form.add_error(caught.value)
    assert form.errors == {"policy": "must be one of latest, all, specific"}


def test_label_choices_say_where_each_version_is_available():
    fleet = FleetStatus(
        3,
        [
            plane("in_sync", {1: "AVAILABLE", 2: "LOADING"}),
            plane("in_sync", {1: "AVAILABLE", 2: "AVAILABLE"}),
        ],
    )
    choices = [(c.version, c.text) for c in version_choices(fleet, [7])]
    assert choices == [
        (1, "1 — available on 2 of 2"),
        (2, "2 — available on 1 of 2"),
        (7, "7 — not reported by any data plane"),
    ]


@pytest.mark.parametrize(
    ("states", "overall"),
    [
        (["in_sync", "in_sync"], "in_sync"),
        (["in_sync", "pending"], "pending"),
        (["pending", "error"], "error"),
        (["error", "unreachable", "in_sync"], "unreachable"),
        ([], "in_sync"),
    ],
)
def test_the_fleet_summary_is_its_most_serious_state(states: list[str], overall: str):
    fleet = FleetStatus(3, [plane(s) for s in states])
    assert fleet.overall == overall
    assert fleet.in_sync == states.count("in_sync")


def test_filters_render_times_policies_states_and_diffs():
    assert when(None) == "never"
    assert when("2025-11-22T01:02:03.456Z") == "2025-11-22 01:02:03 UTC"
    assert when(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2025-01-02 03:04:05 UTC"
    assert policy_text(None) == "latest 1 (default)"
    assert policy_text({"latest": {"num_versions": 2}}) == "latest 2"
    assert policy_text({"all": {}}) == "all versions"
    assert policy_text({"specific": {"versions": [1, 3]}}) == "versions 1, 3"
    assert [tone(s) for s in ("in_sync", "LOADING", "unreachable", "END", "odd")] == [
        "ok",
        "busy",
        "bad",
        "idle",
        "idle",
    ]
    unified = "--- a\n+++ b\n@@ -1 +1 @@\n-value: 1\n+value: 2\n same"
    assert [kind for kind, _ in diff_lines(unified)] == [
        "file",
        "file",
        "hunk",
        "del",
        "add",
        "ctx",
    ]


def test_audit_details_read_as_one_line():
    assert detail_text({"message": "create model m"}) == "create model m"
    assert detail_text({"address": "10.0.0.1"}) == "address=10.0.0.1"
    assert detail_text({"seconds": 60, "address": "10.0.0.1"}) == "address=10.0.0.1, seconds=60"
    assert detail_text({"scope": "write", "expires_at": None}) == "scope=write"
    assert detail_text({}) == "" and detail_text(None) == ""
    assert tone("revoked") == "bad" and tone("active") == "ok" and tone("expired") == "idle"
