"""ModelConfig validation, ModelServerConfig rendering, fingerprints, diffs, stepping stones.

Everything here is pure (protos in, protos out) so the rules are unit-tested without a database
or a data plane.
"""

from __future__ import annotations

import difflib
import hashlib
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, text_format
from tensorflow_serving.config.model_server_config_pb2 import (
    ModelConfig,
    ModelConfigList,
    ModelServerConfig,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
SUPPORTED_PLATFORMS = ("tensorflow",)
# ModelConfig fields the control plane manages; the rest are rejected rather than dropped.
UNSUPPORTED_FIELDS = {"model_type", "modelType"}
MAX_VERSION = 2**31 - 1
# log_collector_config types the data plane writes; "" is TF Serving's default (tfrecord).
LOG_COLLECTOR_TYPES = ("", "tfrecord", "jsonl")
MAX_LOG_PREFIX = 1024
LOG_RATE_FIELD = "logging_config.sampling_config.sampling_rate"
LOG_TYPE_FIELD = "logging_config.log_collector_config.type"
LOG_PREFIX_FIELD = "logging_config.log_collector_config.filename_prefix"


class ValidationError(ValueError):
    """Bad input; `field` names the offending field for the 400 body."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# -- parsing and validation -------------------------------------------------------------------


def parse_model_config(
    body: Any, *, url_name: str | None = None, log_roots: Sequence[str] = ()
) -> ModelConfig:
    """Parse a protobuf-JSON ModelConfig body (minus our `revision` key) and validate it.

    `url_name` is the name in the URL for PUT; the body may omit the name or repeat it, but
    renaming through PUT is refused (delete and create instead). `log_roots` are the
    directories a `logging_config` may write under (see `check_log_roots`).
    """
    if not isinstance(body, Mapping):
        raise ValidationError("body", "must be a JSON object")
    fields = {k: v for k, v in body.items() if k not in ("revision", "message")}
    for key in fields:
        if key in UNSUPPORTED_FIELDS:
            raise ValidationError(key, "is not supported by the control plane")
    if url_name is not None and fields.setdefault("name", url_name) != url_name:
        raise ValidationError("name", f"must equal the name in the URL ({url_name!r})")
    fields.setdefault("model_platform", "tensorflow")
    config = ModelConfig()
    try:
        json_format.ParseDict(fields, config)
    except json_format.ParseError as err:
        raise ValidationError(_parse_error_field(str(err)), str(err)) from None
    validate_model_config(config)
    check_log_roots(config, log_roots)
    return config


def _parse_error_field(message: str) -> str:
    """Pull the field name out of a json_format message, which always quotes it one way."""
    for pattern in (r'no field named "([^"]+)"', r"Failed to parse (\w+) field"):
        match = re.search(pattern, message)
        if match:
            return match.group(1)
    return "body"


def validate_model_config(config: ModelConfig) -> None:
    """Our rules on top of the proto's: what upstream would reject later, we reject now."""
    if not NAME_RE.match(config.name):
        raise ValidationError(
            "name", "is required: 1-128 characters, letters, digits, '_', '.', '-'"
        )
    if not config.base_path.strip():
        raise ValidationError("base_path", "is required")
    if not (config.base_path.startswith("/") or "://" in config.base_path):
        raise ValidationError("base_path", "must be an absolute path or a URI")
    if config.model_platform not in SUPPORTED_PLATFORMS:
        raise ValidationError("model_platform", f"must be one of {list(SUPPORTED_PLATFORMS)}")
    _validate_policy(config)
    _validate_labels(config)
    _validate_logging(config)


def _validate_policy(config: ModelConfig) -> None:
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "latest" and policy.latest.num_versions < 1:
        raise ValidationError("model_version_policy.latest.num_versions", "must be >= 1")
    if choice == "specific":
        versions = list(policy.specific.versions)
        if not versions:
            raise ValidationError("model_version_policy.specific.versions", "must not be empty")
        if len(set(versions)) != len(versions):
            raise ValidationError("model_version_policy.specific.versions", "has duplicates")
        _check_versions("model_version_policy.specific.versions", versions)


def _validate_labels(config: ModelConfig) -> None:
    served = specific_versions(config)
    for label, version in config.version_labels.items():
        field = f"version_labels.{label}"
        if not LABEL_RE.match(label):
            raise ValidationError(field, "label must start with a letter and be 1-64 characters")
        _check_versions(field, [version])
        if served is not None and version not in served:
            raise ValidationError(
                field,
                f"version {version} is not served by model_version_policy specific "
                f"{{versions: {sorted(served)}}}",
            )


def _validate_logging(config: ModelConfig) -> None:
    """What the data plane's request logger needs (dataplane/request_log.py), checked up front.

    The prefix must be a plain absolute path: the data plane creates its directory and writes
    `<prefix>.<time>.<pid>.<sequence>.<type>` files there, so `..`, repeated slashes and
    control characters are refused to keep what `check_log_roots` compares equal to where
    files land.
    """
    if not config.HasField("logging_config"):
        return
    logging = config.logging_config
    rate = logging.sampling_config.sampling_rate
    if not 0.0 <= rate <= 1.0:
        raise ValidationError(LOG_RATE_FIELD, f"must be between 0 and 1, got {rate}")
    # Google-internal knobs the data plane has no use for: refused rather than dropped.
    for unused in ("per_task_sampling_configs", "attributes"):
        if getattr(logging.sampling_config, unused):
            raise ValidationError(f"logging_config.sampling_config.{unused}", "is not supported")
    collector = logging.log_collector_config
    if collector.type not in LOG_COLLECTOR_TYPES:
        raise ValidationError(
            LOG_TYPE_FIELD, f"must be one of {list(LOG_COLLECTOR_TYPES)}, got {collector.type!r}"
        )
    _validate_log_prefix(collector.filename_prefix)


def _validate_log_prefix(prefix: str) -> None:
    if not prefix:
        raise ValidationError(LOG_PREFIX_FIELD, "is required")
    if len(prefix) > MAX_LOG_PREFIX:
        raise ValidationError(LOG_PREFIX_FIELD, f"must be at most {MAX_LOG_PREFIX} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in prefix):
        raise ValidationError(LOG_PREFIX_FIELD, "must not contain control characters")
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValidationError(
            LOG_PREFIX_FIELD, "must be an absolute path to a file name prefix, e.g. /logs/m"
        )
    if posixpath.normpath(prefix) != prefix:
        raise ValidationError(LOG_PREFIX_FIELD, "must be a normalized path (no '..', '.', '//')")


def check_log_roots(config: ModelConfig, roots: Sequence[str]) -> None:
    """Refuse a logging_config whose files would land outside the operator's `roots`.

    A control-plane writer chooses where every data plane writes files, as the data plane's
    user; the operator bounds that to the directories of MODELPLANE_REQUEST_LOG_ROOTS, and
    with none set no model may log (docs/security.md). Only input is checked: a rollback to
    a revision made under other roots restores it as it was.
    """
    if not config.HasField("logging_config"):
        return
    prefix = config.logging_config.log_collector_config.filename_prefix
    if not roots:
        raise ValidationError(
            "logging_config",
            "request logging is disabled: the control plane has no MODELPLANE_REQUEST_LOG_ROOTS",
        )
    if not any(prefix.startswith(root.rstrip("/") + "/") for root in roots):
        raise ValidationError(LOG_PREFIX_FIELD, f"must be under one of {list(roots)}")


def _check_versions(field: str, versions: Iterable[int]) -> None:
    for version in versions:
        if not 1 <= version <= MAX_VERSION:
            raise ValidationError(field, f"version {version} must be between 1 and {MAX_VERSION}")


def specific_versions(config: ModelConfig) -> set[int] | None:
    """The versions a `specific` policy pins, or None when the policy decides from disk."""
    policy = config.model_version_policy
    if policy.WhichOneof("policy_choice") != "specific":
        return None
    return set(policy.specific.versions)


def with_label(config: ModelConfig, label: str, version: int) -> ModelConfig:
    """Copy of `config` with `label` on `version`.

    A `specific` policy that does not list the version is refused (a ValidationError naming
    the policy), as the data plane and TF Serving refuse it: the label could never resolve.
    Serving the version is a change to the policy, made on purpose, not as a side effect.
    """
    updated = ModelConfig()
    updated.CopyFrom(config)
    updated.version_labels[label] = version
    validate_model_config(updated)
    return updated


# -- rendering --------------------------------------------------------------------------------


def render(models: Iterable[ModelConfig]) -> ModelServerConfig:
    """The whole ModelServerConfig, models sorted by name so equal sets render identically."""
    configs = sorted(models, key=lambda m: m.name)
    return ModelServerConfig(model_config_list=ModelConfigList(config=configs))


def to_text(config: ModelServerConfig) -> str:
    return text_format.MessageToString(config)


def from_text(text: str) -> ModelServerConfig:
    return text_format.Parse(text, ModelServerConfig())


def fingerprint(config: ModelServerConfig) -> str:
    """The same digest the data plane's GetInfo reports for the config in force."""
    return hashlib.sha256(config.SerializeToString(deterministic=True)).hexdigest()


def models_by_name(config: ModelServerConfig) -> dict[str, ModelConfig]:
    return {m.name: m for m in config.model_config_list.config}


def model_to_json(config: ModelConfig, revision: int) -> dict[str, Any]:
    """The API shape: ModelConfig fields by proto name, integers as numbers, plus `revision`.

    Hand-written rather than MessageToDict because proto3 JSON renders int64 as strings, and
    clients expect `"version_labels": {"stable": 1}`.
    """
    body: dict[str, Any] = {
        "name": config.name,
        "base_path": config.base_path,
        "model_platform": config.model_platform,
    }
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "latest":
        body["model_version_policy"] = {"latest": {"num_versions": policy.latest.num_versions}}
    elif choice == "all":
        body["model_version_policy"] = {"all": {}}
    elif choice == "specific":
        body["model_version_policy"] = {"specific": {"versions": list(policy.specific.versions)}}
    body["version_labels"] = dict(sorted(config.version_labels.items()))
    if config.HasField("logging_config"):
        logging = config.logging_config
        body["logging_config"] = {
            "sampling_config": {"sampling_rate": logging.sampling_config.sampling_rate},
            "log_collector_config": {
                "type": logging.log_collector_config.type,
                "filename_prefix": logging.log_collector_config.filename_prefix,
            },
        }
    body["revision"] = revision
    return body


# -- diff -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigDiff:
    added: list[str]
    removed: list[str]
    changed: list[str]
    unified: str

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unified": self.unified,
        }


def diff(
    old: ModelServerConfig, new: ModelServerConfig, old_name: str, new_name: str
) -> ConfigDiff:
    """Which models were added, removed or changed, and a unified diff of the text format."""
    before, after = models_by_name(old), models_by_name(new)
    unified = difflib.unified_diff(
        to_text(old).splitlines(keepends=True),
        to_text(new).splitlines(keepends=True),
        fromfile=old_name,
        tofile=new_name,
    )
    return ConfigDiff(
        added=sorted(after.keys() - before.keys()),
        removed=sorted(before.keys() - after.keys()),
        changed=sorted(n for n in before.keys() & after.keys() if before[n] != after[n]),
        unified="".join(unified),
    )


# -- label stepping stone ---------------------------------------------------------------------


def intermediate_config(
    target: ModelServerConfig,
    previous: ModelServerConfig | None,
    available: Mapping[str, set[int]],
) -> ModelServerConfig | None:
    """The config to push first when a label in `target` names a version not yet AVAILABLE.

    Upstream refuses a label on a version that is not loaded, so the stepping stone serves
    every target version, keeps each such label where it was (`previous`) if that version is
    AVAILABLE (pinning it so it stays loaded), and otherwise leaves the label out. Returns None
    when `target` can be pushed as is. `available` maps model name to its AVAILABLE versions.
    """
    before = models_by_name(previous) if previous is not None else {}
    models: list[ModelConfig] = []
    changed = False
    for model in target.model_config_list.config:
        stepped = _step_model(model, before.get(model.name), available.get(model.name, set()))
        changed = changed or stepped != model
        models.append(stepped)
    return render(models) if changed else None


def _step_model(
    model: ModelConfig, previous: ModelConfig | None, available: set[int]
) -> ModelConfig:
    stepped = ModelConfig()
    stepped.CopyFrom(model)
    pinned = specific_versions(stepped)
    for label, version in model.version_labels.items():
        if version in available:
            continue
        old = previous.version_labels.get(label) if previous is not None else None
        if old is not None and old in available:
            stepped.version_labels[label] = old
            if pinned is not None and old not in pinned:
                stepped.model_version_policy.specific.versions.append(old)
                pinned.add(old)
        else:
            del stepped.version_labels[label]
    return stepped


def label_versions(config: ModelServerConfig) -> dict[str, set[int]]:
    """Model name -> versions its labels point at: what must be AVAILABLE before labels go out."""
    return {
        m.name: set(m.version_labels.values())
        for m in config.model_config_list.config
        if m.version_labels
    }
