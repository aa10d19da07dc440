"""Validation, rendering, fingerprints, diffs and label stepping stones (pure functions)."""

from __future__ import annotations

import hashlib

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
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
        ({"name": "m", "base_path": "/m", "model_type": "TENSORFLOW"}, "model_type"),
        (
            {"name": "m", "base_path": "/m", "logging_config": {}},
            "logging_config.log_collector_config.filename_prefix",
        ),
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


LOG_ROOT = "/srv/logs"


def logged(logging: dict, roots=(LOG_ROOT,)) -> ModelConfig:
    body = {"name": "m", "base_path": "/models/m", "logging_config": logging}
    return rv.parse_model_config(body, log_roots=roots)


def test_logging_config_renders_into_text_a_stock_tf_serving_parses():
    config = logged(
        {
            "sampling_config": {"sampling_rate": 0.01},
            "log_collector_config": {"type": "tfrecord", "filename_prefix": f"{LOG_ROOT}/m"},
        }
    )
    text = rv.to_text(rv.render([config]))
    # TF Serving reads --model_config_file with the strict text parser into this very proto
    # (tensorflow_serving/config/model_server_config.proto from tensorflow-serving-api).
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (model,) = parsed.model_config_list.config
    assert model.logging_config.sampling_config.sampling_rate == 0.01
    assert model.logging_config.log_collector_config.type == "tfrecord"
    assert model.logging_config.log_collector_config.filename_prefix == f"{LOG_ROOT}/m"
    assert rv.fingerprint(parsed) == rv.fingerprint(rv.render([config]))


def test_a_changed_sampling_rate_is_a_changed_model_in_the_diff():
    collector = {"filename_prefix": f"{LOG_ROOT}/m"}
    old = rv.render(
        [logged({"sampling_config": {"sampling_rate": 0.5}, "log_collector_config": collector})]
    )
    new = rv.render(
        [logged({"sampling_config": {"sampling_rate": 1}, "log_collector_config": collector})]
    )
    change = rv.diff(old, new, "a", "b")
    assert (change.added, change.removed, change.changed) == ([], [], ["m"])
    assert "-        sampling_rate: 0.5\n+        sampling_rate: 1.0\n" in change.unified


def test_without_log_roots_no_model_may_log_but_others_still_parse():
    with pytest.raises(rv.ValidationError) as err:
        logged({"log_collector_config": {"filename_prefix": f"{LOG_ROOT}/m"}}, roots=())
    assert err.value.field == "logging_config"
    assert "MODELPLANE_REQUEST_LOG_ROOTS" in str(err.value)
    assert rv.parse_model_config({"name": "m", "base_path": "/m"}, log_roots=()).name == "m"


@pytest.mark.parametrize(
    ("prefix", "allowed"),
    [
        (f"{LOG_ROOT}/m", True),
        (f"{LOG_ROOT}/a/b/m", True),
        (LOG_ROOT, False),
        (f"{LOG_ROOT}x/m", False),
        ("/tmp/m", False),
        (f"{LOG_ROOT}/./m", False),
        (f"{LOG_ROOT}//m", False),
        (f"{LOG_ROOT}/m/", False),
        ("/" + "a" * 1100, False),
    ],
)
def test_log_prefixes_must_be_plain_paths_under_a_root(prefix: str, allowed: bool):
    logging = {"log_collector_config": {"filename_prefix": prefix}}
    if allowed:
        config = logged(logging)
        assert config.logging_config.log_collector_config.filename_prefix == prefix
        assert rv.model_to_json(config, 3)["logging_config"] == {
            "sampling_config": {"sampling_rate": 0.0},
            "log_collector_config": {"type": "", "filename_prefix": prefix},
        }
    else:
        with pytest.raises(rv.ValidationError) as err:
            logged(logging)
        assert err.value.field == "logging_config.log_collector_config.filename_prefix"


@pytest.mark.parametrize(
    ("field", "value"),
    [("per_task_sampling_configs", [{"dc": "x", "sampling_rate": 1}]), ("attributes", 1)],
)
def test_sampling_fields_the_data_plane_ignores_are_refused(field: str, value: object):
    with pytest.raises(rv.ValidationError) as err:
        logged(
            {
                "sampling_config": {field: value},
                "log_collector_config": {"filename_prefix": f"{LOG_ROOT}/m"},
            }
        )
    assert err.value.field == f"logging_config.sampling_config.{field}"
