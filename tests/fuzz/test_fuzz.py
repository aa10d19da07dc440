"""The fuzz targets: the committed corpus replays clean, and a short atheris pass finds nothing.

atheris runs in its own process (run.py): importing it here would instrument the data plane's
modules for the whole test session.

`make fuzz` runs each target for longer (FUZZ_SECONDS); docs/fuzzing.md has the figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import CORPUS_ROOT, TARGETS
from tests.support.processes import REPO_ROOT

SHORT_PASS_SECONDS = int(os.environ.get("FUZZ_TEST_SECONDS", "20"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_committed_corpus_raises_only_documented_errors(name: str) -> None:
    target = TARGETS[name]
    inputs = sorted((CORPUS_ROOT / name).iterdir())
    assert inputs, f"no corpus for {name}"
    answered = 0
    for path in inputs:
        try:
            target.run(path.read_bytes())
            answered += 1
        except target.expected:
            pass
    assert answered > 0  # the seeds reach past the first error check


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_short_fuzzing_pass_finds_no_crash(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.run",
            name,
            f"--seconds={SHORT_PASS_SECONDS}",
            f"--work={tmp_path / 'work'}",
            f"--artifacts={tmp_path / 'crashes'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SHORT_PASS_SECONDS + 180,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done " in result.stderr
    assert not list((tmp_path / "crashes").iterdir())
