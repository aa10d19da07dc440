"""Run one fuzz target under atheris (libFuzzer): `python -m tests.fuzz.run TARGET`.

New inputs go to `--work` (default var/fuzz/corpus/TARGET); the committed corpus
(tests/fuzz/corpus/TARGET) is read as seeds and never written. A crash is written to
`--artifacts` with the traceback on stderr, and the exit code is non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import atheris

REPO_ROOT = Path(__file__).resolve().parents[2]
# Long enough for JSON numbers past Python's 4300-digit int limit, and for HTTP heads.
MAX_LEN = 16384

with atheris.instrument_imports(include=["dataplane"]):
    from tests.fuzz.targets import CORPUS_ROOT, TARGETS, Target


def one_input(target: Target) -> object:
    """The documented errors are answers; anything else propagates and is a crash."""

    def test_one_input(data: bytes) -> None:
        with contextlib.suppress(target.expected):
            target.run(data)

    return test_one_input


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run")
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=300, help="total fuzzing time")
    parser.add_argument("--work", type=Path, help="where new corpus inputs go")
    parser.add_argument("--artifacts", type=Path, default=REPO_ROOT / "var" / "fuzz" / "crashes")
    args = parser.parse_args(argv)
    work = args.work or REPO_ROOT / "var" / "fuzz" / "corpus" / args.target
    seeds = CORPUS_ROOT / args.target
    for directory in (work, seeds, args.artifacts):
        directory.mkdir(parents=True, exist_ok=True)
    libfuzzer_argv = [
        sys.argv[0],
        f"-max_total_time={args.seconds}",
        f"-max_len={MAX_LEN}",
        "-rss_limit_mb=4096",
        "-timeout=10",
        f"-artifact_prefix={args.artifacts}/{args.target}-",
        "-print_final_stats=1",
        str(work),
        str(seeds),
    ]
    atheris.Setup(libfuzzer_argv, one_input(TARGETS[args.target]))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
