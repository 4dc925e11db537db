"""The installed package: one namespace, no stray top-level modules, a CLI with help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from onnxedge.runtime.cli import COMMANDS, cli
from onnxedge.runtime.version import __version__


def _run(code: str, cwd: Path) -> str:
    # A neutral cwd, so the repo's folders are not importable by accident.
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_folders_import_as_one_namespace_and_not_bare(tmp_path: Path) -> None:
    out = _run(
        "import importlib.util as u\n"
        "print([u.find_spec(n) is None for n in ('models', 'export', 'runtime')])\n"
        "import onnxedge.models, onnxedge.export, onnxedge.runtime\n"
        "print('ok')",
        tmp_path,
    )
    assert out.splitlines() == ["[True, True, True]", "ok"]


def test_version_option() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"onnxedge, version {__version__}"


def test_short_help_flag_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["-h"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"onnxedge {name} " in result.output


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.output
