"""docs/operations.md's reference tables list exactly what the code accepts, with its defaults."""

from __future__ import annotations

import re
from dataclasses import fields
from functools import cache
from pathlib import Path

from controlplane.config import Settings, variables
from dataplane.options import ServerOptions
from scripts import run_stack

REPO = Path(__file__).resolve().parents[2]
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]+$")


@cache
def table_rows() -> tuple[tuple[str, ...], ...]:
    """Every Markdown table row of the doc as its cells, backticks stripped."""
    lines = (REPO / "docs" / "operations.md").read_text().splitlines()
    return tuple(
        tuple(cell.strip().strip("`") for cell in line.strip().strip("|").split("|"))
        for line in lines
        if line.startswith("|") and not line.startswith("|---")
    )


def documented_default(value: object) -> str:
    """How the flag table writes a default: booleans in lower case, the empty string as ""."""
    if isinstance(value, bool):
        return str(value).lower()
    return '""' if value == "" else str(value)


def test_flag_table_lists_every_dataplane_flag_with_its_default() -> None:
    documented = {row[0]: row[1] for row in table_rows() if row[0].startswith("--")}
    expected = {f"--{f.name}": documented_default(f.default) for f in fields(ServerOptions)}
    assert documented == expected


def test_env_table_lists_every_variable_the_controlplane_reads() -> None:
    documented = {row[0] for row in table_rows() if len(row) == 3 and ENV_NAME.match(row[0])}
    assert documented == variables(Settings)


def test_run_stack_table_matches_its_flags_and_defaults() -> None:
    defaults = run_stack.parse_options([], {})
    rows = {row[1]: row[2] for row in table_rows() if len(row) == 4 and row[1].startswith("--")}
    assert rows == {
        "--controlplane-port": str(defaults.controlplane_port),
        "--grpc-port": str(defaults.grpc_port),
        "--rest-port": str(defaults.rest_port),
        "--var-dir": defaults.var_dir.name,
        "--database-url": "sqlite:///<var>/controlplane.db",
        "--ready-timeout": f"{defaults.ready_timeout_s:.0f}",
    }
    assert defaults.database_url == f"sqlite:///{defaults.var_dir}/controlplane.db"
