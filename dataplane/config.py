"""Reading and validating ModelServerConfig, with TensorFlow Serving's rules and wording.

Validation here is static: it needs only the new config and the one in force. Whether a
label points at a version that is available now is decided by the reload plan against the
manager's state, before anything of the new config loads (as TF Serving does).
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Iterable, Sequence

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2 as msc_pb2

from dataplane.errors import Code
from dataplane.options import ServerOptions

log = logging.getLogger(__name__)

ModelServerConfig = msc_pb2.ModelServerConfig
ModelConfig = msc_pb2.ModelConfig

TENSORFLOW_PLATFORM = "tensorflow"
SUPPORTED_PLATFORMS = frozenset({TENSORFLOW_PLATFORM})
# How TensorFlow's file system maps errno to a status code (posix_file_system.cc).
_OS_ERROR_CODES = {
    errno.ENOENT: Code.NOT_FOUND,
    errno.ENOTDIR: Code.NOT_FOUND,
    errno.EACCES: Code.PERMISSION_DENIED,
    errno.EISDIR: Code.FAILED_PRECONDITION,
}


class ConfigError(Exception):
    """A config that must not be applied; the message says what to fix.

    `code` is the status TensorFlow Serving returns for the same problem, so a
    HandleReloadConfigRequest caller sees the code it would see upstream.
    """

    def __init__(self, message: str, code: Code = Code.INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def read_config_file(path: str) -> ModelServerConfig:
    """Parse a ModelServerConfig in protobuf text format (what --model_config_file holds).

    Errors read as TF Serving's ParseProtoTextFile reports them: the parser's own line
    ("Error parsing text-format ...", logged) and then INVALID_ARGUMENT "Invalid protobuf
    file: '<path>'"; a file that cannot be read is TensorFlow's "<path>; <reason>".
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        code = _OS_ERROR_CODES.get(exc.errno or 0, Code.UNKNOWN)
        raise ConfigError(f"{path}; {exc.strerror}", code) from None
    except UnicodeDecodeError:
        raise _unparsable(path, "not UTF-8 text") from None
    try:
        return text_format.Parse(text, ModelServerConfig())
    except text_format.ParseError as exc:
        raise _unparsable(path, re.sub(r"^(\d+):(\d+) : ", r"\1:\2: ", str(exc))) from None


def _unparsable(path: str, detail: str) -> ConfigError:
    """Log the parser's complaint as protobuf's C++ parser does; the error names the file."""
    log.error("Error parsing text-format tensorflow.serving.ModelServerConfig: %s", detail)
    return ConfigError(f"Invalid protobuf file: '{path}'")


def single_model_config(name: str, base_path: str) -> ModelServerConfig:
    """The config --model_name/--model_base_path stand for: one model, latest version."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = TENSORFLOW_PLATFORM
    model.model_version_policy.latest.num_versions = 1
    return config


def initial_config(options: ServerOptions) -> ModelServerConfig | None:
    """The config to serve at start: the file wins over the flags; None serves no model."""
    if options.model_config_file:
        return read_config_file(options.model_config_file)
    if options.model_base_path:
        return single_model_config(options.model_name, options.model_base_path)
    return None


def platform_of(model: ModelConfig) -> str:
    """The model's platform; an unset platform means TensorFlow.

    TensorFlow Serving insists on one of model_platform / the deprecated model_type; we
    accept neither as TensorFlow (the only platform either server runs) so config files
    written by hand keep working, and reject both, as upstream does.
    """
    if model.model_type != msc_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise ConfigError(
                "Illegal setting both ModelServerConfig::model_type (deprecated) "
                f"and ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_type != msc_pb2.TENSORFLOW:
            raise ConfigError(
                f"ModelServerConfig::model_type choice {model.model_type} not supported."
            )
        return TENSORFLOW_PLATFORM
    return model.model_platform or TENSORFLOW_PLATFORM


def models_by_name(config: ModelServerConfig | None) -> dict[str, ModelConfig]:
    """The models a config lists, by name (none for no config or an empty one)."""
    if config is None:
        return {}
    return {model.name: model for model in config.model_config_list.config}


def validate(config: ModelServerConfig, previous: ModelServerConfig | None) -> None:
    """Raise ConfigError if `config` may not replace `previous` (None: nothing served yet)."""
    kind = config.WhichOneof("config")
    if kind == "custom_model_config":
        raise ConfigError(
            "custom_model_config is not supported by this server; use model_config_list"
        )
    if kind is None:
        return  # TensorFlow Serving takes no action for an empty config; neither do we.
    models = list(config.model_config_list.config)
    _check_names(models)
    for model in models:
        _check_base_path(model)
    if previous is not None and previous.WhichOneof("config") == "model_config_list":
        _check_platforms_unchanged(previous.model_config_list.config, models)
    for model in models:
        _check_platform_supported(model)
        _check_version_policy(model)
        _check_labels(model)


def _check_names(models: Iterable[ModelConfig]) -> None:
    seen: set[str] = set()
    for index, model in enumerate(models):
        if not model.name:
            raise ConfigError(f"Model config #{index} (base_path {model.base_path!r}) has no name")
        if model.name in seen:
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)


def _check_base_path(model: ModelConfig) -> None:
    path = model.base_path
    if "://" in path:
        raise ConfigError(
            f"Model {model.name} has base_path {path}: only local file-system paths are "
            "supported by this server"
        )
    if not os.path.isabs(path):
        raise ConfigError(
            f"Expected model {model.name} to have an absolute path or URI; got base_path()={path}"
        )


def check_confined(config: ModelServerConfig, prefixes: Sequence[str]) -> None:
    """Raise ConfigError if a model's base_path lies outside every prefix (none: no limit).

    Both sides are resolved first (`..`, symlinks), so neither `/models/../etc` nor a link
    under /models pointing elsewhere gets out. What the path holds may still change later;
    whoever can write under a prefix decides what is served there (docs/security.md).
    """
    if not prefixes:
        return
    roots = [os.path.realpath(prefix) for prefix in prefixes]
    for model in config.model_config_list.config:
        resolved = os.path.realpath(model.base_path)
        if not any(os.path.commonpath((root, resolved)) == root for root in roots):
            raise ConfigError(
                f"Model {model.name} has base_path {model.base_path} (resolved: {resolved}), "
                f"outside the allowed prefixes {','.join(prefixes)} (--model_base_path_prefixes)"
            )


def _check_platforms_unchanged(old: Iterable[ModelConfig], new: Iterable[ModelConfig]) -> None:
    old_platforms = {model.name: platform_of(model) for model in old}
    for model in new:
        before = old_platforms.get(model.name)
        after = platform_of(model)
        if before is not None and before != after:
            raise ConfigError(
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{before} and new platform requested is {after}"
            )


def _check_platform_supported(model: ModelConfig) -> None:
    platform = platform_of(model)
    if platform not in SUPPORTED_PLATFORMS:
        raise ConfigError(f"Model {model.name} requests unsupported platform {platform}")


def _check_version_policy(model: ModelConfig) -> None:
    policy = model.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific":
        versions = list(policy.specific.versions)
        if not versions:
            raise ConfigError(
                f"Model {model.name}: model_version_policy specific lists no versions"
            )
        negative = [v for v in versions if v < 0]
        if negative:
            raise ConfigError(f"Model {model.name}: version numbers must be >= 0, got {negative}")


def unavailable_label(model: str, version: int) -> str:
    """TF Serving's message for a label it will not assign (server_core.cc)."""
    return (
        f"Request to assign label to version {version} of model {model}, which is not "
        "currently available for inference"
    )


def _check_labels(model: ModelConfig) -> None:
    """Labels the policy can never satisfy are caught here, before anything loads."""
    policy = model.model_version_policy
    specific = (
        set(policy.specific.versions) if policy.WhichOneof("policy_choice") == "specific" else None
    )
    for label, version in sorted(model.version_labels.items()):
        if not label:
            raise ConfigError(f"Model {model.name} has a version label with an empty name")
        if specific is not None and version not in specific:
            # TF Serving words it as any label on a version it does not serve.
            raise ConfigError(unavailable_label(model.name, version), Code.FAILED_PRECONDITION)
