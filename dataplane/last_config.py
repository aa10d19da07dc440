"""--last_config_file: the config a reload last applied, kept on disk for the next start.

A data plane whose config comes only from its control plane starts empty: between opening
its ports and the control plane's next push it answers NOT_FOUND, and a balancer without
health checks (nginx in compose.yaml) sends it traffic in that window. With this file the
restarted plane loads what it last served before it opens its ports, as TF Serving does with
--model_config_file, and the control plane's next push brings it to the head. The file is
written atomically (a crash leaves the old one), and trouble with it never stops serving: an
unreadable or unusable file means an empty start, as without the flag.
"""

from __future__ import annotations

import logging
import os
import tempfile

from google.protobuf import text_format

from dataplane.config import ConfigError, ModelServerConfig, read_config_file

log = logging.getLogger(__name__)


def load(path: str) -> ModelServerConfig | None:
    """The config saved at `path`; None (start empty) when there is none or it is unusable."""
    if not os.path.exists(path):
        return None
    try:
        return read_config_file(path)
    except ConfigError as exc:
        log.warning("--last_config_file %s not used, starting empty: %s", path, exc.message)
        return None


def save(path: str, config: ModelServerConfig) -> None:
    """Replace `path` with `config` in text format; a failure is logged, never raised (the
    reload it records has already succeeded)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".last_config.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text_format.MessageToString(config))
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:
        log.warning("cannot write --last_config_file %s: %s", path, exc.strerror)
