"""Validation, rendering, fingerprints, diffs and label stepping stones (pure functions)."""

from __future__ import annotations

import hashlib

import pytest
from tensorflow_serving.config.model_server_config_pb2 import ModelConfig

from controlplane import revisions as rv


def model(name: str = "m", versions=(1, 2), labels=None, policy=None) -> ModelConfig:
    body = {
        "name": name,
        "base_path": f"/models/{name}",
        "model_platform": "tensorflow",
        "model_version_policy": policy or {"specific": {"versions": list(versions)}},
        "version_labels": labels or {},
    }
    return rv.parse_model_config(body)


def test_parse_accepts_the_documented_shape_and_defaults_platform():
    config = rv.parse_model_config(
        {
            "name": "m",
            "base_path": "/models/m",
            "model_version_policy": {"specific": {"versions": [1, 2]}},
            "version_labels": {"stable": 1},
            "revision": 7,
        }
    )
    assert config.name == "m"
    assert config.model_platform == "tensorflow"
    assert list(config.model_version_policy.specific.versions) == [1, 2]
    assert dict(config.version_labels) == {"stable": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"base_path": "/m"}, "name"),
        ({"name": "bad name", "base_path": "/m"}, "name"),
        ({"name": "m"}, "base_path"),
        ({"name": "m", "base_path": "relative/path"}, "base_path"),
        ({"name": "m", "base_path": "/m", "model_platform": "pytorch"}, "model_platform"),
        ({"name": "m", "base_path": "/m", "colour": "red"}, "colour"),
        ({"name": "m", "base_path": "/m", "logging_config": {}}, "logging_config"),
        ({"name": 5, "base_path": "/m"}, "name"),
        (
            {"name": "m", "base_path": "/m", "model_version_policy": {"latest": {}}},
            "model_version_policy.latest.num_versions",
        ),
        (
            {"name": "m", "base_path": "/m", "model_version_policy": {"specific": {}}},
            "model_version_policy.specific.versions",
        ),
        (
            {
                "name": "m",
                "base_path": "/m",
                "model_version_policy": {"specific": {"versions": [1, 1]}},
            },
            "model_version_policy.specific.versions",
        ),
        (
            {"name": "m", "base_path": "/m", "model_version_policy": {"latest": {}, "all": {}}},
            "model_version_policy",
        ),
        (
            {
                "name": "m",
                "base_path": "/m",
                "model_version_policy": {"specific": {"versions": [1]}},
                "version_labels": {"stable": 2},
            },
            "version_labels.stable",
        ),
        ({"name": "m", "base_path": "/m", "version_labels": {"1abc": 1}}, "version_labels.1abc"),
        ({"name": "m", "base_path": "/m", "version_labels": {"x": "one"}}, "version_labels"),
        ({"name": "m", "base_path": "/m", "version_labels": {"x": 0}}, "version_labels.x"),
    ],
)
def test_parse_rejects_bad_input_naming_the_field(body, field):
    with pytest.raises(rv.ValidationError) as caught:
        rv.parse_model_config(body)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_parse_refuses_rename_through_put():
    with pytest.raises(rv.ValidationError) as caught:
        rv.parse_model_config({"name": "other", "base_path": "/m"}, url_name="m")
    assert caught.value.field == "name"
    assert rv.parse_model_config({"base_path": "/m"}, url_name="m").name == "m"


def test_model_to_json_uses_numbers_for_int64_fields():
    body = rv.model_to_json(model(labels={"stable": 2, "canary": 1}), revision=4)
    assert body == {
        "name": "m",
        "base_path": "/models/m",
        "model_platform": "tensorflow",
        "model_version_policy": {"specific": {"versions": [1, 2]}},
        "version_labels": {"canary": 1, "stable": 2},
        "revision": 4,
    }
    latest = rv.model_to_json(model(policy={"latest": {"num_versions": 2}}), 1)
    assert latest["model_version_policy"] == {"latest": {"num_versions": 2}}
    assert rv.model_to_json(model(policy={"all": {}}), 1)["model_version_policy"] == {"all": {}}


def test_render_is_order_independent_and_round_trips_through_text():
    a, b = model("a"), model("b", labels={"stable": 1})
    first, second = rv.render([b, a]), rv.render([a, b])
    assert rv.to_text(first) == rv.to_text(second)
    assert [m.name for m in first.model_config_list.config] == ["a", "b"]
    assert rv.from_text(rv.to_text(first)) == first
    expected = hashlib.sha256(first.SerializeToString(deterministic=True)).hexdigest()
    assert rv.fingerprint(first) == rv.fingerprint(second) == expected
    assert rv.fingerprint(rv.render([a])) != expected


def test_with_label_refuses_a_version_the_specific_policy_does_not_list():
    pinned = model(versions=[1, 3], labels={"stable": 1})
    with pytest.raises(rv.ValidationError) as refused:
        rv.with_label(pinned, "stable", 2)
    assert str(refused.value) == (
        "version_labels.stable: version 2 is not served by model_version_policy specific "
        "{versions: [1, 3]}"
    )
    assert dict(pinned.version_labels) == {"stable": 1}
    moved = rv.with_label(pinned, "stable", 3)
    assert list(moved.model_version_policy.specific.versions) == [1, 3]
    assert dict(moved.version_labels) == {"stable": 3}
    latest = rv.with_label(model(policy={"latest": {"num_versions": 2}}), "canary", 9)
    assert latest.model_version_policy.latest.num_versions == 2
    assert dict(latest.version_labels) == {"canary": 9}


def test_diff_lists_models_and_a_unified_text_diff():
    old = rv.render([model("a"), model("b")])
    new = rv.render([model("b", labels={"stable": 2}), model("c")])
    diff = rv.diff(old, new, "revision 1", "revision 2")
    assert (diff.added, diff.removed, diff.changed) == (["c"], ["a"], ["b"])
    assert diff.unified.startswith("--- revision 1\n+++ revision 2\n")
    assert '+      key: "stable"\n' in diff.unified


def test_no_stepping_stone_when_label_versions_are_available():
    target = rv.render([model(labels={"stable": 2})])
    assert rv.intermediate_config(target, None, {"m": {1, 2}}) is None
    assert rv.intermediate_config(rv.render([model()]), None, {}) is None


def test_stepping_stone_keeps_the_old_label_until_the_new_version_is_available():
    previous = rv.render([model(versions=[1], labels={"stable": 1})])
    target = rv.render([model(versions=[2], labels={"stable": 2})])
    stone = rv.intermediate_config(target, previous, {"m": {1}})
    stepped = rv.models_by_name(stone)["m"]
    assert sorted(stepped.model_version_policy.specific.versions) == [1, 2]
    assert dict(stepped.version_labels) == {"stable": 1}


def test_stepping_stone_drops_labels_on_an_empty_plane():
    target = rv.render([model(labels={"stable": 1}), model("n", labels={})])
    stone = rv.intermediate_config(target, target, {})
    assert {m.name: dict(m.version_labels) for m in stone.model_config_list.config} == {
        "m": {},
        "n": {},
    }
    assert rv.label_versions(target) == {"m": {1}}
