"""`datawall ARGS` invoked in this process for the synth tests: the result, its JSON, or its one-line error."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from datawall.cli import app


def run(*args: str):
    """click's Result of `datawall ARGS` (a DatawallError is in .exception)."""
    return CliRunner().invoke(app, list(args))


def run_json(*args: str) -> dict:
    """The JSON object `datawall ARGS --json` prints (asserting it succeeded)."""
    result = run(*args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def one_line_error(result, *words: str) -> str:
    """The error of a failed command, asserted to be one line without a traceback holding every word."""
    assert result.exit_code != 0
    text = str(result.exception) if result.exception is not None else result.output
    assert "Traceback" not in result.output and "\n" not in text.strip(), text
    for w in words:
        assert w in text, text
    return text
