"""Reading and validating ModelServerConfig, with TensorFlow Serving's messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from dataplane.config import (
    ConfigError,
    ModelServerConfig,
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
