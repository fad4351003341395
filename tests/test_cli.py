"""The top-level command: --version / -V, and the help that says where progress goes."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

import datawall
from datawall.cli import app

DATAWALL = Path(sys.executable).parent / "datawall"


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_package_version_and_exits_0(flag):
    result = CliRunner().invoke(app, [flag])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"datawall {version('datawall')}\n"
    assert version("datawall") == datawall.__version__  # one version: the metadata and the module agree


def test_console_script_version():
    proc = subprocess.run([str(DATAWALL), "-V"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == f"datawall {datawall.__version__}\n" and proc.stderr == ""


def test_help_names_the_version_flag_and_the_progress_lines():
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "--version" in text and "-V" in text
    assert "DATAWALL_PROGRESS_INTERVAL" in text and "exactly one JSON object" in text
