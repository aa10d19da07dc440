"""Reading and validating ModelServerConfig, with TensorFlow Serving's messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from dataplane.config import (
    ConfigError,
    ModelServerConfig,
    check_confined,
    initial_config,
    read_config_file,
    validate,
)
from dataplane.errors import Code
from dataplane.options import ServerOptions

GOOD = """
model_config_list {
  config {
    name: "half_plus_two"
    base_path: "/models/half_plus_two"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config { name: "mlp" base_path: "/models/mlp" }
}
"""


def parse(text: str) -> ModelServerConfig:
    return text_format.Parse(text, ModelServerConfig())


def one_model(fields: str) -> ModelServerConfig:
    return parse(f"model_config_list {{ config {{ {fields} }} }}")


def error_of(config: ModelServerConfig, previous: ModelServerConfig | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        validate(config, previous)
    return raised.value


def test_read_config_file_parses_text_proto(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(GOOD)

    config = read_config_file(str(path))

    first, second = config.model_config_list.config
    assert (first.name, first.base_path) == ("half_plus_two", "/models/half_plus_two")
    assert list(first.model_version_policy.specific.versions) == [1, 2]
    assert dict(first.version_labels) == {"stable": 1, "canary": 2}
    assert (second.name, second.model_platform) == ("mlp", "")
    validate(config, None)


def test_read_config_file_reports_parse_errors_as_tf_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { nmae: 'x' } }")

    with pytest.raises(ConfigError) as raised:
        read_config_file(str(path))

    assert (raised.value.code, raised.value.message) == (
        Code.INVALID_ARGUMENT,
        f"Invalid protobuf file: '{path}'",
    )
    assert caplog.messages == [
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:30: Message type "
        '"tensorflow.serving.ModelConfig" has no field named "nmae".'
    ]


def test_read_config_file_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        read_config_file(str(tmp_path / "nope.config"))

    assert (raised.value.code, raised.value.message) == (
        Code.NOT_FOUND,
        f"{tmp_path}/nope.config; No such file or directory",
    )


def test_initial_config_prefers_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(GOOD)

    options = ServerOptions(model_config_file=str(path), model_base_path="/ignored")

    assert initial_config(options) == parse(GOOD)


def test_initial_config_from_model_name_and_base_path() -> None:
    config = initial_config(ServerOptions(model_name="m", model_base_path="/models/m"))

    assert config == parse(
        'model_config_list { config { name: "m" base_path: "/models/m" model_platform: '
        '"tensorflow" model_version_policy { latest { num_versions: 1 } } } }'
    )


def test_initial_config_none_without_flags() -> None:
    assert initial_config(ServerOptions()) is None


def test_duplicate_model_names() -> None:
    config = parse(
        "model_config_list { config { name: 'a' base_path: '/a' } "
        "config { name: 'a' base_path: '/b' } }"
    )

    assert error_of(config).message == "Illegal to list model a multiple times in config list"


def test_relative_base_path() -> None:
    error = error_of(one_model("name: 'a' base_path: 'models/a'"))

    assert error.message == (
        "Expected model a to have an absolute path or URI; got base_path()=models/a"
    )
    assert error.code is Code.INVALID_ARGUMENT


def test_remote_base_path_is_refused() -> None:
    assert error_of(one_model("name: 'a' base_path: 'gs://bucket/a'")).message == (
        "Model a has base_path gs://bucket/a: only local file-system paths are supported by "
        "this server"
    )


def test_missing_name() -> None:
    assert error_of(one_model("base_path: '/a'")).message == (
        "Model config #0 (base_path '/a') has no name"
    )


def test_changing_a_models_platform() -> None:
    previous = one_model("name: 'a' base_path: '/a'")

    error = error_of(one_model("name: 'a' base_path: '/a' model_platform: 'pytorch'"), previous)

    assert error.message == (
        "Illegal to change a model's platform. For model a platform was tensorflow and new "
        "platform requested is pytorch"
    )


def test_unsupported_platform() -> None:
    error = error_of(one_model("name: 'a' base_path: '/a' model_platform: 'onnx'"))

    assert error.message == "Model a requests unsupported platform onnx"


def test_model_type_and_platform_together() -> None:
    error = error_of(
        one_model("name: 'a' base_path: '/a' model_type: TENSORFLOW model_platform: 'tensorflow'")
    )

    assert error.message == (
        "Illegal setting both ModelServerConfig::model_type (deprecated) and "
        "ModelServerConfig::model_platform, model name is a"
    )


def test_deprecated_model_type_tensorflow_is_accepted() -> None:
    validate(one_model("name: 'a' base_path: '/a' model_type: TENSORFLOW"), None)


def test_custom_model_config_is_refused() -> None:
    config = parse("custom_model_config { type_url: 'x' }")

    assert error_of(config).message == (
        "custom_model_config is not supported by this server; use model_config_list"
    )


def test_empty_specific_policy() -> None:
    error = error_of(one_model("name: 'a' base_path: '/a' model_version_policy { specific {} }"))

    assert error.message == "Model a: model_version_policy specific lists no versions"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            "model_type: OTHER",
            "ModelServerConfig::model_type choice 2 not supported.",
        ),
        (
            "model_version_policy { specific { versions: 1 versions: -2 versions: -3 } }",
            "Model a: version numbers must be >= 0, got [-2, -3]",
        ),
        (
            "version_labels { key: '' value: 1 }",
            "Model a has a version label with an empty name",
        ),
    ],
    ids=["model-type-other", "negative-versions", "empty-label"],
)
def test_configs_no_version_could_serve_are_invalid_argument(fields: str, message: str) -> None:
    error = error_of(one_model(f"name: 'a' base_path: '/a' {fields}"))

    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)


def test_label_on_a_version_the_specific_policy_never_serves() -> None:
    error = error_of(
        one_model(
            "name: 'a' base_path: '/a' model_version_policy { specific { versions: 1 } } "
            "version_labels { key: 'canary' value: 2 }"
        )
    )

    assert error.message == (
        "Request to assign label to version 2 of model a, which is not currently available "
        "for inference"
    )
    assert error.code is Code.FAILED_PRECONDITION


def test_empty_config_is_valid() -> None:
    validate(ModelServerConfig(), parse(GOOD))


# ------------------------------------------------------------------ --model_base_path_prefixes


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """`models` (the allowed prefix, holding a model and a link out) and `outside`."""
    models, outside = tmp_path / "models", tmp_path / "outside"
    (models / "a").mkdir(parents=True)
    (outside / "b").mkdir(parents=True)
    (models / "escape").symlink_to(outside / "b")
    (tmp_path / "models-2").mkdir()
    return models, outside


def confined_error(base_path: Path | str, prefixes: list[str]) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        check_confined(one_model(f'name: "m" base_path: "{base_path}"'), prefixes)
    return raised.value


def test_a_base_path_under_a_prefix_is_allowed(roots: tuple[Path, Path], tmp_path: Path) -> None:
    models, _ = roots
    check_confined(one_model(f'name: "m" base_path: "{models / "a"}"'), [str(models)])
    check_confined(one_model(f'name: "m" base_path: "{models}"'), [str(models)])
    check_confined(one_model(f'name: "m" base_path: "{models}/a/../a"'), [f"{models}/"])
    # a prefix that is itself a link counts by where it leads
    (tmp_path / "link-to-models").symlink_to(models)
    check_confined(
        one_model(f'name: "m" base_path: "{models / "a"}"'), [f"{tmp_path}/link-to-models"]
    )


@pytest.mark.parametrize(
    "escape",
    ["../outside/b", "escape", "a/../../outside/b", "../models-2", "/etc"],
    ids=["dotdot", "symlink", "inner-dotdot", "sibling-with-same-start", "elsewhere"],
)
def test_a_base_path_outside_every_prefix_is_refused(
    roots: tuple[Path, Path], tmp_path: Path, escape: str
) -> None:
    models, _ = roots
    base_path = escape if escape.startswith("/") else f"{models}/{escape}"
    prefixes = [str(models), str(tmp_path / "data")]
    error = confined_error(base_path, prefixes)
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message.startswith(f"Model m has base_path {base_path} (resolved: ")
    assert error.message.endswith(
        f"outside the allowed prefixes {models},{tmp_path / 'data'} (--model_base_path_prefixes)"
    )


def test_without_prefixes_any_path_is_allowed() -> None:
    check_confined(one_model('name: "m" base_path: "/etc"'), [])


def test_the_prefixes_flag_is_a_comma_list() -> None:
    options = ServerOptions(model_base_path_prefixes=" /models, /data ,,")
    assert options.base_path_prefixes == ("/models", "/data")
    assert ServerOptions().base_path_prefixes == ()
